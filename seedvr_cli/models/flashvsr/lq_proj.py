"""FlashVSR's LQ projector (``LQ_proj_in``): low-quality frames at output resolution -> DiT tokens.

Each 16x16 pixel patch becomes one token and every 4 frames one latent frame, through two causal
temporal convolutions of stride 2 (reference/flashvsr SPEC.md §2, GAPS-DIT-LQPROJ.md 4-5). The
projector streams clip by clip: clip 0 is the first frame alone (it only primes the state and gives
no tokens), every later clip is 4 new frames and gives one latent frame of tokens.

The two published versions share their weights' names and shapes and differ only in the temporal
context of each clip:

- v1.0 (``Buffer_LQ4x_Proj``) convolves every clip with its own last 2 frames in front, so nothing
  is carried from one clip to the next;
- v1.1 (``Causal_LQ4x_Proj``) puts the previous clip's last 2 inputs of each convolution in front
  (replicate padding before clip 0), a truly causal stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

VERSIONS = ("v1.0", "v1.1")
PATCH = 16
CONTEXT_FRAMES = 2  # frames of temporal context in front of each causal convolution


@dataclass(frozen=True)
class LQProjConfig:
    name: str
    in_channels: int = 3
    hidden1: int = 2048
    hidden2: int = 3072
    out_dim: int = 1536

    def __post_init__(self) -> None:
        if min(self.in_channels, self.hidden1, self.hidden2, self.out_dim) < 1:
            raise ValueError(f"LQ projector {self.name}: every size must be positive")


LQ_PROJ_VARIANTS = {
    "real": LQProjConfig("real"),
    # The parity fixtures' projector (shared/fixtures/flashvsr/tiny_lqproj_*).
    "tiny": LQProjConfig("tiny", hidden1=4, hidden2=8, out_dim=48),
}


def lq_proj_config(name: str) -> LQProjConfig:
    try:
        return LQ_PROJ_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown LQ projector variant {name!r}; known: {', '.join(LQ_PROJ_VARIANTS)}") from None


class ChannelRMSNorm(nn.Module):
    """L2 normalisation over channels times ``sqrt(C) * gamma`` (the Wan VAE's ``RMS_norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class CausalConv3d(nn.Conv3d):
    """A (4,3,3) convolution of temporal stride 2: spatial replicate padding of 1, and in front
    either the given context frames or, without them, 2 replicated copies of the first frame."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=(4, 3, 3), stride=(2, 1, 1))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        front = CONTEXT_FRAMES
        if context is not None:
            x = torch.cat([context, x], dim=2)
            front -= context.shape[2]
        x = F.pad(x, (1, 1, 1, 1, front, 0), mode="replicate")
        return super().forward(x)


@dataclass
class LQProjState:
    """What one stream carries between clips: the clip count and (v1.1) each convolution's last
    2 input frames of the previous clip."""

    clips_seen: int = 0
    conv1_context: Tensor | None = field(default=None, repr=False)
    conv2_context: Tensor | None = field(default=None, repr=False)


class LQProjector(nn.Module):
    """``LQ_proj_in`` of one version; names and shapes as in the published ``LQ_proj_in.ckpt``."""

    def __init__(self, config: LQProjConfig, version: str) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"unknown FlashVSR version {version!r}; known: {', '.join(VERSIONS)}")
        self.config = config
        self.version = version
        shuffled = config.in_channels * PATCH * PATCH
        self.conv1 = CausalConv3d(shuffled, config.hidden1)
        self.norm1 = ChannelRMSNorm(config.hidden1)
        self.conv2 = CausalConv3d(config.hidden1, config.hidden2)
        self.norm2 = ChannelRMSNorm(config.hidden2)
        self.linear_layers = nn.ModuleList([nn.Linear(config.hidden2, config.out_dim)])

    def stream(self, clip: Tensor, state: LQProjState) -> Tensor | None:
        """Tokens ``[B, (H/16)(W/16), out_dim]`` of one clip ``[B, C, f, H, W]`` (values in [-1, 1]),
        or None for clip 0 (``f`` = 1), which only primes ``state``; later clips have 4 frames."""
        first = state.clips_seen == 0
        expected = 1 if first else 4
        if clip.shape[2] != expected:
            raise ValueError(f"LQ projector clip {state.clips_seen} must have {expected} frame(s), got {clip.shape[2]}")
        if first:
            clip = clip.expand(-1, -1, 4, -1, -1)
        x = rearrange(clip, "b c f (h hh) (w ww) -> b (c hh ww) f h w", hh=PATCH, ww=PATCH)
        causal = self.version == "v1.1"
        # v1.0 puts the clip's own last frames in front of each convolution; v1.1 the previous clip's.
        conv1_context = state.conv1_context if causal else x[:, :, -CONTEXT_FRAMES:]
        state.conv1_context = x[:, :, -CONTEXT_FRAMES:]
        y = F.silu(self.norm1(self.conv1(x, conv1_context)))
        state.clips_seen += 1
        if first:
            state.conv2_context = y[:, :, -CONTEXT_FRAMES:]
            return None
        conv2_context = state.conv2_context if causal else y[:, :, -CONTEXT_FRAMES:]
        state.conv2_context = y[:, :, -CONTEXT_FRAMES:]
        z = F.silu(self.norm2(self.conv2(y, conv2_context)))
        return self.linear_layers[0](rearrange(z, "b c f h w -> b (f h w) c"))

    def forward(self, video: Tensor) -> Tensor:
        """Tokens of a whole clip ``[B, C, 4n+1, H, W]``: ``n`` latent frames, ``f``-major."""
        frames = video.shape[2]
        if frames % 4 != 1:
            raise ValueError(f"the LQ projector takes 4n+1 frames, got {frames}")
        state = LQProjState()
        self.stream(video[:, :, :1], state)
        return torch.cat([self.stream(video[:, :, i : i + 4], state) for i in range(1, frames, 4)], dim=1)
