"""FlashVSR's TCDecoder (modes ``tiny`` and ``tiny-long``): a widened TAEHV decoder that turns DiT
latents plus the upscaled low-quality frames into RGB frames, one frame at a time.

Each latent frame becomes four output frames; nine MemBlocks see their own input at the previous
frame of their stream, so a clip can be decoded in pieces: the memory lives in a
``TCDecoderState`` the caller owns and passes from call to call (a fresh state = the reference's
``clean_mem()``). Frames are pushed depth-first through the layers, so the working memory is a few
frames whatever the clip length. Module indices are the published ``TCDecoder.ckpt`` names
(``decoder.<i>``); facts from ``shared/reference/flashvsr/TCDECODER.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

# PixelShuffle3d(4, 8, 8) of the 3-channel condition: 4 frames x 8 x 8 pixels per latent pixel.
COND_FRAMES = 4
COND_PATCH = 8
COND_CHANNELS = 3 * COND_FRAMES * COND_PATCH * COND_PATCH


@dataclass(frozen=True)
class TCDecoderConfig:
    """Widths of the four decoder stages and of the latent. The layer list, the x8 spatial and x4
    temporal upscale are fixed (the published decoder's); the condition adds 768 input channels."""

    channels: tuple[int, int, int, int] = (512, 256, 128, 128)
    latent_channels: int = 16

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or min(self.channels) < 1 or self.latent_channels < 1:
            raise ValueError(f"TCDecoderConfig: need four positive stage widths and a latent width, got "
                             f"{self.channels} / {self.latent_channels}")

    @property
    def in_channels(self) -> int:
        return COND_CHANNELS + self.latent_channels


VARIANTS = {
    "tcdecoder": TCDecoderConfig(),
    # The parity fixture's size.
    "tiny-tcdecoder": TCDecoderConfig(channels=(16, 8, 8, 8)),
}

# Two TGrows of stride 2: the first three frames of a fresh decode come from the zero memory before
# the clip and are dropped.
FRAMES_TO_TRIM = 3
FRAMES_PER_LATENT = 4


def _conv(n_in: int, n_out: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


def _identity_conv(channels: int) -> nn.Conv2d:
    """A 3x3 conv without bias that starts as the identity; the checkpoint may overwrite it."""
    layer = _conv(channels, channels, bias=False)
    with torch.no_grad():
        nn.init.dirac_(layer.weight)
    return layer


class Clamp(nn.Module):
    """Soft clamp to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block that also sees the previous frame's input: ``relu(conv(x ++ past) + x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(2 * channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(), _conv(channels, channels)
        )

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(torch.cat([x, past], dim=1)) + x)


class TGrow(nn.Module):
    """One frame in, ``stride`` frames out: a 1x1 conv whose output channel group j is frame j."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch, channels, height, width = x.shape
        grown = self.conv(x).view(batch, self.stride, channels, height, width)
        return [grown[:, j] for j in range(self.stride)]


def _stage(width: int, next_width: int, time_stride: int) -> list[nn.Module]:
    return [MemBlock(width), MemBlock(width), MemBlock(width), nn.Upsample(scale_factor=2),
            TGrow(width, time_stride), _conv(width, next_width, bias=False)]  # fmt: skip


@dataclass
class TCDecoderState:
    """What a decode carries from one call to the next: each MemBlock's input at the previous frame
    of its stream (by layer index), and how many leading frames are still to be dropped."""

    memory: dict[int, torch.Tensor] = field(default_factory=dict)
    frames_to_drop: int = FRAMES_TO_TRIM


class TCDecoder(nn.Module):
    def __init__(self, config: TCDecoderConfig = TCDecoderConfig()) -> None:
        super().__init__()
        self.config = config
        c0, c1, c2, c3 = config.channels
        # The IdentityConv+ReLU pairs at 3-4 and 24-25 are the reference's "deepening" of TAEHV.
        self.decoder = nn.Sequential(
            Clamp(), _conv(config.in_channels, c0), nn.ReLU(), _identity_conv(c0), nn.ReLU(),
            *_stage(c0, c1, 1), *_stage(c1, c2, 2), *_stage(c2, c3, 2),
            nn.ReLU(), _identity_conv(c3), nn.ReLU(), _conv(c3, 3),
        )  # fmt: skip

    @staticmethod
    def condition(cond: torch.Tensor, step: int) -> torch.Tensor:
        """The 768 condition channels of latent step ``step``: its four LQ frames of ``cond``
        (NCTHW ``[B, 3, F, 8h, 8w]``) pixel-shuffled to ``[B, 768, h, w]``.

        A frame count that is not a multiple of 4 is completed by repeating frame 0 in front, so
        that after the trim output frame j pairs with condition frame j."""
        short = -cond.shape[2] % COND_FRAMES
        frames = [max(0, COND_FRAMES * step + j - short) for j in range(COND_FRAMES)]
        return rearrange(cond[:, :, frames], "b c ff (h hh) (w ww) -> b (c ff hh ww) h w",
                         hh=COND_PATCH, ww=COND_PATCH)  # fmt: skip

    def network_input(self, latents: torch.Tensor, cond: torch.Tensor, step: int) -> torch.Tensor:
        """Condition channels first, then the latent: ``[B, 784, h, w]`` for latent step ``step``."""
        return torch.cat([self.condition(cond, step).to(latents.dtype), latents[:, step]], dim=1)

    def iter_frames(self, latents: torch.Tensor, cond: torch.Tensor, state: TCDecoderState) -> Iterator[torch.Tensor]:
        """Decode latents NTCHW ``[B, T, 16, h, w]`` with their LQ frames, continuing ``state``;
        yields output frames ``[B, 3, 8h, 8w]`` (nominally [0, 1], not clamped) as they are made.

        A fresh state's first call gives 4T-3 frames, later calls 4T. The condition is cut per
        latent step, so beside ``cond`` itself only a few frames are ever held."""
        steps = -(-cond.shape[2] // COND_FRAMES)
        if steps != latents.shape[1]:
            raise ValueError(f"TCDecoder: {cond.shape[2]} condition frames give {steps} latent steps, "
                             f"but there are {latents.shape[1]} latent frames")
        for t in range(steps):
            frames: list[torch.Tensor] = []
            self._push(0, self.network_input(latents, cond, t), state, frames.append)
            for frame in frames:
                if state.frames_to_drop:
                    state.frames_to_drop -= 1
                    continue
                yield frame

    def decode(self, latents: torch.Tensor, cond: torch.Tensor, state: TCDecoderState | None = None) -> torch.Tensor:
        """``iter_frames`` stacked to NTCHW; without a state, a one-shot decode of a whole clip."""
        frames = list(self.iter_frames(latents, cond, TCDecoderState() if state is None else state))
        return torch.stack(frames, dim=1)

    def _push(self, start: int, x: torch.Tensor, state: TCDecoderState, emit: Callable[[torch.Tensor], None]) -> None:
        """Run one frame from layer ``start`` to the end; a TGrow's sub-frames each go all the way
        down before the next one starts, so every MemBlock sees its stream in temporal order."""
        for index in range(start, len(self.decoder)):
            layer = self.decoder[index]
            if isinstance(layer, MemBlock):
                past = state.memory.get(index)
                state.memory[index] = x
                x = layer(x, torch.zeros_like(x) if past is None else past)
            elif isinstance(layer, TGrow):
                for sub_frame in layer(x):
                    self._push(index + 1, sub_frame, state, emit)
                return
            else:
                x = layer(x)
        emit(x)
