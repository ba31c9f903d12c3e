"""The Wan2.1 VAE decoder (FlashVSR mode ``full``): latents ``[B, 16, T, h, w]`` -> frames
``[B, 3, 4T-3, 8h, 8w]`` in about [-1, 1].

The decoder runs one latent frame at a time. Its causal convolutions see the last two input frames
of their stream through a ``CausalCache`` the caller can hold (a fresh one per clip, or per tile):
that is the same as one causal convolution over the whole stream with two zero frames in front, at
the memory of a couple of frames. Module names are those of ``Wan2.1_VAE.pth`` (``conv2.*``,
``decoder.*``); the encoder half of that file is not built. Facts from
``shared/reference/flashvsr/WANVAE.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# The fixed per-channel statistics the Wan2.1 latents were normalised with.
LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)  # fmt: skip
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)  # fmt: skip

# Input frames a causal conv keeps for the next call: its kernel's reach into the past.
CACHED_FRAMES = 2
SPATIAL_FACTOR = 8


@dataclass(frozen=True)
class WanVAEConfig:
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Per encoder stage but the last: whether its downsampler also halves time. The decoder walks
    # it backwards (stages 0 and 1 double time, stage 2 only space).
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"WanVAEConfig: {len(self.dim_mult)} stages need {len(self.dim_mult) - 1} "
                             f"temporal_downsample flags, got {self.temporal_downsample}")
        if self.z_dim != len(LATENT_MEAN):
            raise ValueError(f"WanVAEConfig: the latent statistics are for z_dim {len(LATENT_MEAN)}, not {self.z_dim}")

    @property
    def decoder_dims(self) -> list[int]:
        return [self.dim * u for u in (self.dim_mult[-1], *self.dim_mult[::-1])]

    @property
    def encoder_dims(self) -> list[int]:
        return [self.dim * u for u in (1, *self.dim_mult)]

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        return self.temporal_downsample[::-1]


VARIANTS = {
    "wan2.1-vae": WanVAEConfig(),
    # The parity fixture's size.
    "tiny-wan2.1-vae": WanVAEConfig(dim=4),
}


@dataclass
class CausalCache:
    """The state of one decode between latent frames: each causal conv's last input frames, and
    which temporal upsamplers have passed the clip's first frame through undoubled."""

    frames: dict[nn.Module, torch.Tensor] = field(default_factory=dict)
    first_frame_done: set[nn.Module] = field(default_factory=set)


class CausalConv3d(nn.Conv3d):
    """Conv3d zero-padded on both sides in space and only in front in time (2 x the nominal time
    padding); with a cache, the frames of earlier calls take the place of that front padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0, **kwargs)
        pad_t, pad_h, pad_w = (padding,) * 3 if isinstance(padding, int) else padding
        self.space_padding = (pad_w, pad_w, pad_h, pad_h)
        self.front_padding = 2 * pad_t

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        front = self.front_padding
        if cache is not None and front:
            past = cache.frames.get(self)
            keep = x[:, :, -CACHED_FRAMES:]
            if keep.shape[2] < CACHED_FRAMES and past is not None:
                keep = torch.cat([past[:, :, -1:], keep], dim=2)
            # A copy: a view would keep this call's whole activation alive until the next frame.
            cache.frames[self] = keep.clone()
            if past is not None:
                x = torch.cat([past, x], dim=2)
                front -= past.shape[2]
        return super().forward(F.pad(x, (*self.space_padding, front, 0)))


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and a per-channel gain."""

    def __init__(self, channels: int, *, images: bool) -> None:
        super().__init__()
        self.scale = channels**0.5
        # 4-D inputs (per-frame images) or 5-D videos.
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1) if images else torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Index 5 is the reference's Dropout(0): kept as a placeholder so the conv stays at index 6.
        self.residual = nn.Sequential(
            RMSNorm(in_channels, images=False), nn.SiLU(), CausalConv3d(in_channels, out_channels, 3, padding=1),
            RMSNorm(out_channels, images=False), nn.SiLU(), nn.Identity(),
            CausalConv3d(out_channels, out_channels, 3, padding=1),
        )  # fmt: skip
        self.shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        shortcut = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (never across frames)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(channels, images=True)
        self.to_qkv = nn.Conv2d(channels, channels * 3, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        images = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = self.to_qkv(self.norm(images)).reshape(batch * frames, 1, channels * 3, height * width)
        # Channel-last and contiguous before the split: the layout SDPA gets decides its bf16
        # rounding, and this is the reference's.
        q, k, v = qkv.permute(0, 1, 3, 2).contiguous().chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.squeeze(1).permute(0, 2, 1).reshape(batch * frames, channels, height, width)
        out = rearrange(self.proj(attended), "(b t) c h w -> b c t h w", t=frames)
        return out + x


class Upsample2x(nn.Module):
    """Nearest x2 in space, computed in float32 (as the reference, for bfloat16 inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").type_as(x)


class Upsampler(nn.Module):
    """x2 in space with half the channels; with ``temporal``, x2 in time first, except for the
    clip's first frame, which passes through alone."""

    def __init__(self, channels: int, *, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(channels, channels // 2, 3, padding=1))
        self.time_conv = CausalConv3d(channels, channels * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.time_conv is not None:
            x = self._double_time(x, cache)
        frames = x.shape[2]
        images = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(images, "(b t) c h w -> b c t h w", t=frames)

    def _double_time(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self not in cache.first_frame_done:
            # The first frame is also left out of the time conv's context: its cache starts empty.
            cache.first_frame_done.add(self)
            return x
        batch, channels, frames, height, width = x.shape
        pairs = self.time_conv(x, cache).reshape(batch, 2, channels, frames, height, width)
        # Output channels [0, C) are the earlier sub-frame, [C, 2C) the later one.
        return torch.stack([pairs[:, 0], pairs[:, 1]], dim=3).reshape(batch, channels, frames * 2, height, width)


class Decoder(nn.Module):
    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        dims = config.decoder_dims
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))  # fmt: skip
        layers: list[nn.Module] = []
        last_stage = len(config.dim_mult) - 1
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            # Every upsampler halves the channels, so the stages after one start at half width.
            if stage > 0:
                in_dim //= 2
            for _ in range(config.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage != last_stage:
                layers.append(Upsampler(out_dim, temporal=config.temporal_upsample[stage]))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1], images=False), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.middle, *self.upsamples, *self.head):
            x = layer(x, cache) if isinstance(layer, (CausalConv3d, ResidualBlock, Upsampler)) else layer(x)
        return x


class WanVAEDecoder(nn.Module):
    """``conv2`` (the latent-side 1x1x1 conv) and the decoder of the Wan2.1 VAE."""

    def __init__(self, config: WanVAEConfig = WanVAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder(config)

    @staticmethod
    def denormalize(z: torch.Tensor) -> torch.Tensor:
        """Undo the latent normalisation; divided by 1/std in the latent's dtype as the reference
        does, so bfloat16 rounds the same way."""
        mean = torch.tensor(LATENT_MEAN, device=z.device).to(z.dtype).view(1, -1, 1, 1, 1)
        inv_std = (1.0 / torch.tensor(LATENT_STD, device=z.device)).to(z.dtype).view(1, -1, 1, 1, 1)
        return z / inv_std + mean

    def iter_decode(self, z: torch.Tensor, cache: CausalCache) -> Iterator[torch.Tensor]:
        """Decode ``[B, 16, T, h, w]`` one latent frame at a time, continuing ``cache``; yields
        ``[B, 3, n, 8h, 8w]`` per latent frame (n = 1 for a clip's first latent, else 4). Not clamped."""
        x = self.conv2(self.denormalize(z))
        for t in range(x.shape[2]):
            yield self.decoder(x[:, :, t : t + 1], cache)

    def decode(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """The frames of ``iter_decode`` joined in time; without a cache, a whole clip (4T-3 frames)."""
        chunks = list(self.iter_decode(z, CausalCache() if cache is None else cache))
        return torch.cat(chunks, dim=2)
