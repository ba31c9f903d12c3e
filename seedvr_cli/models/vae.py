"""The SeedVR2 causal 3-D video VAE (``video_vae_v3``), named like the published checkpoint.

Layout ``[B, C, T, H, W]`` throughout. Time is causal: every temporal convolution sees only the
current and earlier frames; the sequence start is padded with copies of its first frame, so the
first frame is coded like a still image. GroupNorm and attention work per frame, which is why a
clip can be processed in temporal slices (``CausalCache`` carries the frames each convolution
needs from the previous slice) with the same result as one pass.

Time: ``T`` pixel frames <-> ``(T - 1) / 4 + 1`` latent frames; space: 8x.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .vae_config import VAEConfig

# Bounds the reference posterior puts on the log-variance.
LOGVAR_RANGE = (-30.0, 20.0)

# Old diffusers attention names (<= 0.21 checkpoints) -> the names the published files use.
_OLD_ATTENTION_NAMES = {
    "query": "to_q",
    "key": "to_k",
    "value": "to_v",
    "proj_attn": "to_out.0",
}


def normalize_vae_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename old diffusers mid-block attention keys (``...attentions.0.query.weight``) to the
    current ones (``...attentions.0.to_q.weight``); every other key passes unchanged."""
    renamed: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if len(parts) >= 4 and parts[-4] == "attentions" and parts[-2] in _OLD_ATTENTION_NAMES:
            key = ".".join([*parts[:-2], _OLD_ATTENTION_NAMES[parts[-2]], parts[-1]])
        renamed[key] = tensor
    return renamed


class CausalCache:
    """State of one temporally sliced pass: the input frames each causal conv carries over.

    Create one per clip, pass it to every slice in order. For the first slice ``continuing`` is
    False (convs pad with copies of frame 0, temporal upsamplers drop the duplicated head frame);
    ``advance()`` after each slice switches to continuing with the cached frames.
    """

    def __init__(self) -> None:
        self.frames: dict[nn.Module, Tensor] = {}
        self.continuing = False

    def advance(self) -> None:
        self.continuing = True


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time at the front only: ``kt - 1`` copies of the first frame, or, when
    continuing a sliced sequence, the last ``kt - st`` frames of the previous slice's padded input.
    Spatial padding is ordinary zero padding.

    Callers that produce the input anyway (norm + SiLU, depth-to-space) can write it straight into
    the padded buffer (``padded_input`` then ``forward_padded``): at 1080p every full-size
    temporary saved is gigabytes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        spatial_padding: int = 0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=(0, spatial_padding, spatial_padding)
        )

    def head_frames(self, cache: CausalCache | None) -> int:
        """Frames put in front of the input: ``kt - 1`` copies of frame 0 at the start of a
        sequence, the ``kt - st`` carried frames when continuing one."""
        kernel_t, stride_t = self.kernel_size[0], self.stride[0]
        return kernel_t - stride_t if cache is not None and cache.continuing else kernel_t - 1

    def padded_input(
        self, shape: tuple[int, ...], like: Tensor, cache: CausalCache | None, pad_bottom_right: int = 0
    ) -> tuple[Tensor, Tensor]:
        """An empty buffer for an input of ``shape`` ``[B, C, T, H, W]`` with room for the time head
        (and ``pad_bottom_right`` zero rows/columns), and the view of it where the input goes."""
        batch, channels, frames, height, width = shape
        head, extra = self.head_frames(cache), pad_bottom_right
        padded = like.new_empty((batch, channels, head + frames, height + extra, width + extra))
        if extra:
            padded[..., height:, :] = 0
            padded[..., :height, width:] = 0
        return padded, padded[:, :, head:, :height, :width]

    def forward_padded(self, padded: Tensor, cache: CausalCache | None = None) -> Tensor:
        """Fill the time head of a ``padded_input`` buffer, remember what the next slice needs, convolve."""
        head = self.head_frames(cache)
        if head:
            if cache is not None and cache.continuing:
                padded[:, :, :head] = cache.frames[self]
            else:
                padded[:, :, :head] = padded[:, :, head : head + 1]
        carried = self.kernel_size[0] - self.stride[0]
        if cache is not None and carried > 0:
            # A copy, so the cache does not keep the whole padded input alive.
            cache.frames[self] = padded[:, :, padded.shape[2] - carried :].clone()
        return F.conv3d(padded, self.weight, self.bias, self.stride, self.padding)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        if self.kernel_size[0] == 1:
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        padded, body = self.padded_input(x.shape, x, cache)
        body.copy_(x)
        return self.forward_padded(padded, cache)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken per frame (over channels-in-group x H x W)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            return super().forward(x)
        batch, _, frames = x.shape[:3]
        if frames == 1:
            return super().forward(x.squeeze(2)).unsqueeze(2)
        per_frame = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(super().forward(per_frame), "(b t) c h w -> b c t h w", b=batch)

    def silu_into(self, x: Tensor, out: Tensor) -> None:
        """``out = silu(norm(x))`` without allocating a separate activation tensor.

        All frames go through one GroupNorm call: PyTorch's kernel gives one thread block per
        (frame, group) row, so a frame-by-frame loop ran ~4x slower on an H200 at 1080p."""
        out.copy_(F.silu(self(x), inplace=True))


def norm_silu_conv(norm: FrameGroupNorm, conv: CausalConv3d, x: Tensor, cache: CausalCache | None) -> Tensor:
    """``conv(silu(norm(x)))`` with the activation written straight into the conv's padded input."""
    padded, body = conv.padded_input(x.shape, x, cache)
    norm.silu_into(x, body)
    return conv.forward_padded(padded, cache)


class ResnetBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: VAEConfig) -> None:
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        self.norm1 = FrameGroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, (3, 3, 3), spatial_padding=1)
        self.norm2 = FrameGroupNorm(groups, out_channels, eps=eps)
        self.conv2 = CausalConv3d(out_channels, out_channels, (3, 3, 3), spatial_padding=1)
        self.conv_shortcut = (
            CausalConv3d(in_channels, out_channels, (1, 1, 1)) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        h = norm_silu_conv(self.norm1, self.conv1, x, cache)
        padded, body = self.conv2.padded_input(h.shape, h, cache)
        self.norm2.silu_into(h, body)
        del h  # not needed past this point: one full-size tensor less during conv2
        h = self.conv2.forward_padded(padded, cache)
        # In place: h is this block's own fresh tensor (same sum as shortcut + h).
        return h.add_(x if self.conv_shortcut is None else self.conv_shortcut(x, cache))


class FrameAttention(nn.Module):
    """Self-attention over the H*W positions of each frame separately, with a residual."""

    def __init__(self, channels: int, config: VAEConfig) -> None:
        super().__init__()
        self.heads = channels // config.attention_head_dim
        self.group_norm = FrameGroupNorm(config.norm_num_groups, channels, eps=config.norm_eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        batch, _, frames, height, width = x.shape
        tokens = rearrange(self.group_norm(x), "b c t h w -> (b t) (h w) c")
        q, k, v = (
            rearrange(proj(tokens), "n l (heads d) -> n heads l d", heads=self.heads)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n heads l d -> n l (heads d)")
        out = self.to_out[0](attended)
        return x + rearrange(out, "(b t) (h w) c -> b c t h w", b=batch, t=frames, h=height, w=width)


class MidBlock3D(nn.Module):
    def __init__(self, channels: int, config: VAEConfig) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock3D(channels, channels, config) for _ in range(2)])
        self.attentions = nn.ModuleList([FrameAttention(channels, config)])

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class Downsample3D(nn.Module):
    """Stride-2 3x3 conv after zero-padding right and bottom; temporal ones also halve time
    (``2n + 1 -> n + 1`` frames thanks to the causal front padding)."""

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        kernel_t, stride_t = (3, 2) if temporal else (1, 1)
        self.conv = CausalConv3d(channels, channels, (kernel_t, 3, 3), stride=(stride_t, 2, 2))

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        padded, body = self.conv.padded_input(x.shape, x, cache, pad_bottom_right=1)
        body.copy_(x)
        return self.conv.forward_padded(padded, cache)


class Upsample3D(nn.Module):
    """1x1x1 conv to ``C * r`` channels, depth-to-space, then a causal 3x3x3 conv.

    Channels are read as (row, column, time, C) sub-positions, C fastest. Temporal upsampling turns
    latent frame 0 into two frames of which only the first is kept (frame 0 is a still image);
    a continuing slice keeps both.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.time_ratio = 2 if temporal else 1
        # Pointwise and not causal in the reference; a plain Conv3d.
        self.upscale_conv = nn.Conv3d(channels, channels * 4 * self.time_ratio, kernel_size=1)
        self.conv = CausalConv3d(channels, channels, (3, 3, 3), spatial_padding=1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        sub = self.upscale_conv(x)
        batch, _, frames, height, width = sub.shape
        channels, ratio = self.conv.in_channels, self.time_ratio
        drop_head = ratio > 1 and not (cache is not None and cache.continuing)
        out_frames = frames * ratio - (1 if drop_head else 0)
        padded, body = self.conv.padded_input((batch, channels, out_frames, 2 * height, 2 * width), sub, cache)
        # Depth-to-space written straight into the conv's buffer: channel (row, col, time, c) of
        # latent frame f goes to frame f * ratio + time, pixel (2h + row, 2w + col).
        source = sub.view(batch, 2, 2, ratio, channels, frames, height, width).permute(0, 4, 5, 3, 6, 1, 7, 2)
        if drop_head:
            body[:, :, 0].view(batch, channels, height, 2, width, 2).copy_(source[:, :, 0, 0])
            body[:, :, 1:].view(batch, channels, frames - 1, ratio, height, 2, width, 2).copy_(source[:, :, 1:])
        else:
            body.view(batch, channels, frames, ratio, height, 2, width, 2).copy_(source)
        del sub, source  # as large as the output; free it before the conv runs
        return self.conv.forward_padded(padded, cache)


class DownEncoderBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: VAEConfig, index: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, config)
                for i in range(config.layers_per_block)
            ]
        )
        has_downsampler = index < len(config.block_out_channels) - 1
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, temporal=index in config.temporal_down_blocks)])
            if has_downsampler
            else None
        )

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, cache)
        return x


class UpDecoderBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: VAEConfig, index: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, config)
                for i in range(config.layers_per_block + 1)
            ]
        )
        has_upsampler = index < len(config.block_out_channels) - 1
        self.upsamplers = (
            nn.ModuleList([Upsample3D(out_channels, temporal=index in config.temporal_up_blocks)])
            if has_upsampler
            else None
        )

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class Encoder3D(nn.Module):
    """Pixels ``[B, 3, T, H, W]`` -> moments ``[B, 2 * latent, T', H/8, W/8]`` (mean | logvar)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = config.block_out_channels
        self.conv_in = CausalConv3d(config.in_channels, widths[0], (3, 3, 3), spatial_padding=1)
        self.down_blocks = nn.ModuleList(
            [
                DownEncoderBlock3D(widths[max(i - 1, 0)], widths[i], config, i)
                for i in range(len(widths))
            ]
        )
        self.mid_block = MidBlock3D(widths[-1], config)
        self.conv_norm_out = FrameGroupNorm(config.norm_num_groups, widths[-1], eps=config.norm_eps)
        self.conv_out = CausalConv3d(widths[-1], 2 * config.latent_channels, (3, 3, 3), spatial_padding=1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return norm_silu_conv(self.conv_norm_out, self.conv_out, x, cache)


class Decoder3D(nn.Module):
    """Latent ``[B, latent, T', h, w]`` -> pixels ``[B, 3, 4 (T' - 1) + 1, 8h, 8w]`` (unclamped)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = tuple(reversed(config.block_out_channels))
        self.conv_in = CausalConv3d(config.latent_channels, widths[0], (3, 3, 3), spatial_padding=1)
        self.mid_block = MidBlock3D(widths[0], config)
        self.up_blocks = nn.ModuleList(
            [UpDecoderBlock3D(widths[max(i - 1, 0)], widths[i], config, i) for i in range(len(widths))]
        )
        self.conv_norm_out = FrameGroupNorm(config.norm_num_groups, widths[-1], eps=config.norm_eps)
        self.conv_out = CausalConv3d(widths[-1], config.out_channels, (3, 3, 3), spatial_padding=1)

    def forward(self, z: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = self.conv_in(z, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return norm_silu_conv(self.conv_norm_out, self.conv_out, x, cache)


def temporal_slices(frames: int, first: int, step: int) -> Iterator[slice]:
    """``[0, first)``, then ``step`` frames at a time: the causal slicing of the reference."""
    yield slice(0, min(first, frames))
    for start in range(first, frames, step):
        yield slice(start, min(start + step, frames))


class VideoVAE(nn.Module):
    """Encoder and decoder of the SeedVR2 VAE; ``state_dict()`` keys equal the checkpoint's.

    ``encode``/``decode`` run in causal temporal slices by default (encode: frames 0..4, then 4
    at a time, one latent frame each; decode: latents 0..1, then one at a time), which bounds
    activation memory on long clips and equals a single pass up to float rounding.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)

    def _check_frames(self, x: Tensor, what: str) -> None:
        factor = self.config.temporal_factor
        if x.ndim != 5:
            raise ValueError(f"VideoVAE.{what}: expected [B, C, T, H, W], got shape {tuple(x.shape)}")
        if what == "encode" and (x.shape[2] - 1) % factor:
            raise ValueError(f"VideoVAE.encode: {x.shape[2]} frames; the VAE needs {factor}n+1 frames")

    def encode_moments(self, x: Tensor, *, sliced: bool = True) -> Tensor:
        """Raw encoder output ``[B, 2 * latent, T', H/8, W/8]`` (mean | logvar), for ``x`` in
        [-1, 1] with ``T = 4n + 1`` frames. Tiled encoding blends these before splitting."""
        self._check_frames(x, "encode")
        if not sliced:
            return self.encoder(x).contiguous()
        factor = self.config.temporal_factor
        cache = CausalCache()
        pieces = []
        for piece in temporal_slices(x.shape[2], factor + 1, factor):
            pieces.append(self.encoder(x[:, :, piece], cache))
            cache.advance()
        return _join_frames(pieces)

    def encode(self, x: Tensor, *, sliced: bool = True) -> tuple[Tensor, Tensor]:
        """Posterior ``(mean, logvar)``, each ``[B, latent, (T - 1) / 4 + 1, H/8, W/8]``."""
        return split_moments(self.encode_moments(x, sliced=sliced))

    def decode(self, z: Tensor, *, sliced: bool = True) -> Tensor:
        """Pixels ``[B, 3, 4 (T' - 1) + 1, 8h, 8w]`` for an unscaled latent ``z``; not clamped."""
        self._check_frames(z, "decode")
        if not sliced:
            return self.decoder(z).contiguous()
        cache = CausalCache()
        pieces = []
        for piece in temporal_slices(z.shape[2], 2, 1):
            pieces.append(self.decoder(z[:, :, piece], cache))
            cache.advance()
        return _join_frames(pieces)

    def latent_from_mean(self, mean: Tensor) -> Tensor:
        """Pipeline latent ``[T', h, w, C]`` (channels-last, scaled by ``scaling_factor``) from a
        posterior mean ``[1, C, T', h, w]`` or ``[C, T', h, w]``."""
        return latent_from_mean(mean, self.config.scaling_factor)

    def decoder_input_from_latent(self, latent: Tensor) -> Tensor:
        """Inverse of ``latent_from_mean``: ``[T', h, w, C]`` -> unscaled ``[1, C, T', h, w]``
        ready for ``decode``."""
        return decoder_input_from_latent(latent, self.config.scaling_factor)


def _join_frames(pieces: list[Tensor]) -> Tensor:
    """Concatenate slices along time into one standard-layout tensor."""
    return pieces[0].contiguous() if len(pieces) == 1 else torch.cat(pieces, dim=2).contiguous()


def split_moments(moments: Tensor) -> tuple[Tensor, Tensor]:
    """Encoder moments -> ``(mean, logvar)`` with logvar clamped like the reference posterior."""
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(*LOGVAR_RANGE)


def latent_from_mean(mean: Tensor, scaling_factor: float) -> Tensor:
    """``[1, C, T', h, w]`` or ``[C, T', h, w]`` posterior mean -> scaled channels-last
    ``[T', h, w, C]``, the latent the DiT conditions on."""
    if mean.ndim == 5:
        if mean.shape[0] != 1:
            raise ValueError(f"latent_from_mean: expected batch 1, got shape {tuple(mean.shape)}")
        mean = mean[0]
    return mean.permute(1, 2, 3, 0) * scaling_factor


def decoder_input_from_latent(latent: Tensor, scaling_factor: float) -> Tensor:
    """Scaled channels-last ``[T', h, w, C]`` -> unscaled ``[1, C, T', h, w]`` for ``decode``."""
    if latent.ndim != 4:
        raise ValueError(f"decoder_input_from_latent: expected [T', h, w, C], got shape {tuple(latent.shape)}")
    return (latent / scaling_factor).permute(3, 0, 1, 2).unsqueeze(0)
