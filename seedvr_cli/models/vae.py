"""The SeedVR2 causal 3-D video VAE (``video_vae_v3``), named like the published checkpoint.

Layout ``[B, C, T, H, W]`` throughout. Time is causal: every temporal convolution sees only the
current and earlier frames; the sequence start is padded with copies of its first frame, so the
first frame is coded like a still image. GroupNorm and attention work per frame, which is why a
clip can be processed in temporal slices (``CausalCache`` carries the frames each convolution
needs from the previous slice) with the same result as one pass.

Memory at 1080p: the carried frames are two input frames of every temporal convolution, about
14 GiB for the decoder and 8 GiB for the encoder, whatever the slice length. What a slice adds
on top is bounded by running the full-resolution layers a few frames at a time, depth first
(``run_depth_first``), so that no tensor spans more than ``slice_bytes``.

Time: ``T`` pixel frames <-> ``(T - 1) / 4 + 1`` latent frames; space: 8x.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from seedvr_kernels import fast_group_norm, kernels_setting
from torch import Tensor, nn

from .vae_config import VAEConfig
from .wide_attention import FUSED_HEAD_LIMIT, wide_head_attention

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

    Create one per clip and pass it to every slice in order. Each module starts the sequence on
    its first call (convs pad with copies of frame 0, temporal upsamplers drop the duplicated head
    frame) and continues it on later calls; tracking this per module lets the full-resolution
    layers run on fewer frames at a time than the layers before them.

    ``memory_format`` is the layout of the conv buffers (``torch.channels_last_3d`` lets cuDNN
    skip its NCDHW <-> NDHWC transposes). ``rings``: convs fed one frame at a time keep their
    whole input buffer as a ring (see ``ConvRing``) instead of copying the carried frames out of
    it and back into the next buffer.
    """

    def __init__(self, memory_format: torch.memory_format = torch.contiguous_format, rings: bool = True) -> None:
        self.frames: dict[nn.Module, Tensor] = {}
        self.rings: dict[nn.Module, ConvRing] | None = {} if rings else None
        self.started: set[nn.Module] = set()
        self.memory_format = memory_format

    def continues(self, module: nn.Module) -> bool:
        return module in self.started

    def carried_bytes(self) -> int:
        """Memory held between slices: carried frames and ring buffers."""
        held = [*self.frames.values(), *(ring.buffer for ring in (self.rings or {}).values())]
        return sum(t.numel() * t.element_size() for t in held)


class ConvRing:
    """The input buffer of a causal conv that is fed one new frame per call, reused in place.

    The buffer holds exactly the ``kt`` frames one output frame needs; a new frame overwrites the
    oldest. The frames then sit in the buffer rotated against their time order, so the conv runs
    with its temporal taps rotated the same way: sum_k W[k] x[f - kt + 1 + k] is the same sum in
    another order. At 1080p this saves, per frame and conv, copying the carried frames out of
    the buffer and into the next one (four frame-sized reads and writes), for one frame more held
    between slices and none of the five-frame transient of the copying path.
    """

    def __init__(self, buffer: Tensor) -> None:
        self.buffer = buffer
        self.newest = buffer.shape[2] - 1  # slot of the latest frame
        self._weights: dict[int, Tensor] = {}

    def fits(self, shape: tuple[int, ...]) -> bool:
        batch, channels, frames, height, width = shape
        return frames == 1 and self.buffer.shape[:2] == (batch, channels) and self.buffer.shape[3:] == (height, width)

    def next_slot(self) -> int:
        return (self.newest + 1) % self.buffer.shape[2]

    def in_time_order(self, count: int) -> list[Tensor]:
        """The latest ``count`` frames, oldest first (each ``[B, C, 1, H, W]``)."""
        kernel_t = self.buffer.shape[2]
        slots = [(self.newest - age) % kernel_t for age in reversed(range(count))]
        return [self.buffer[:, :, slot : slot + 1] for slot in slots]

    def weight(self, weight: Tensor) -> Tensor:
        """``weight`` with its taps rotated to the buffer's current order (slot q holds tap
        ``(q - r) mod kt`` for ``r = newest + 1``), kept per rotation for the rest of the clip."""
        shift = (self.newest + 1) % self.buffer.shape[2]
        if shift not in self._weights:
            rotated = weight.roll(shift, dims=2) if shift else weight
            self._weights[shift] = rotated.contiguous(memory_format=self.buffer_layout())
        return self._weights[shift]

    def buffer_layout(self) -> torch.memory_format:
        last = self.buffer.is_contiguous(memory_format=torch.channels_last_3d) and not self.buffer.is_contiguous()
        return torch.channels_last_3d if last else torch.contiguous_format


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
        return kernel_t - stride_t if cache is not None and cache.continues(self) else kernel_t - 1

    def padded_input(
        self, shape: tuple[int, ...], like: Tensor, cache: CausalCache | None, pad_bottom_right: int = 0
    ) -> tuple[Tensor, Tensor]:
        """An empty buffer for an input of ``shape`` ``[B, C, T, H, W]`` with room for the time head
        (and ``pad_bottom_right`` zero rows/columns), and the view of it where the input goes.

        When continuing, the carried frames are moved into the head here and dropped from the
        cache, so they are not held twice while the caller fills the body. A conv with a ring
        for this shape hands out the ring's buffer instead, the body being its oldest slot."""
        ring = self._ring(cache)
        if ring is not None and ring.fits(shape) and not pad_bottom_right:
            slot = ring.next_slot()
            return ring.buffer, ring.buffer[:, :, slot : slot + 1]
        batch, channels, frames, height, width = shape
        head, extra = self.head_frames(cache), pad_bottom_right
        layout = cache.memory_format if cache is not None else torch.contiguous_format
        padded = torch.empty(
            (batch, channels, head + frames, height + extra, width + extra),
            dtype=like.dtype, device=like.device, memory_format=layout,
        )
        if extra:
            padded[..., height:, :] = 0
            padded[..., :height, width:] = 0
        if head and cache is not None and cache.continues(self):
            if ring is not None:  # leaving one-frame calls: the ring's latest frames are the head
                for index, frame in enumerate(ring.in_time_order(head)):
                    padded[:, :, index : index + 1] = frame
                del cache.rings[self]
            else:
                padded[:, :, :head] = cache.frames.pop(self)
        return padded, padded[:, :, head:, :height, :width]

    def forward_padded(self, padded: Tensor, cache: CausalCache | None = None) -> Tensor:
        """Fill the time head of a ``padded_input`` buffer at a sequence start, remember what the
        next slice needs, convolve."""
        ring = self._ring(cache)
        if ring is not None and padded is ring.buffer:
            ring.newest = ring.next_slot()
            return F.conv3d(padded, ring.weight(self.weight), self.bias, self.stride, self.padding)
        head = self.head_frames(cache)
        if head and not (cache is not None and cache.continues(self)):
            padded[:, :, :head] = padded[:, :, head : head + 1]
        if cache is not None:
            carried = self.kernel_size[0] - self.stride[0]
            if cache.rings is not None and self._ring_shaped(padded):
                cache.rings[self] = ConvRing(padded)  # kept whole: no copy of the carried frames
            elif carried > 0:
                # A copy, so the cache does not keep the whole padded input alive.
                cache.frames[self] = padded[:, :, padded.shape[2] - carried :].clone()
            cache.started.add(self)
        return F.conv3d(padded, self.weight, self.bias, self.stride, self.padding)

    def _ring(self, cache: CausalCache | None) -> ConvRing | None:
        return cache.rings.get(self) if cache is not None and cache.rings is not None else None

    def _ring_shaped(self, padded: Tensor) -> bool:
        """A buffer of exactly one output frame's input, of a conv whose strides are all 1 (so
        the buffer has no extra zero padding): what a ring can reuse."""
        kernel_t = self.kernel_size[0]
        return kernel_t > 1 and padded.shape[2] == kernel_t and tuple(self.stride) == (1, 1, 1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        if self.kernel_size[0] == 1:
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        padded, body = self.padded_input(x.shape, x, cache)
        body.copy_(x)
        return self.forward_padded(padded, cache)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken per frame (over channels-in-group x H x W).

    Works on ``[B, C, T, H, W]`` in either layout, without the per-frame rearranged copy and the
    separate output that ``nn.GroupNorm`` would need: statistics come from two reductions, then
    one fused ``x * scale + shift`` (computed in float32, rounded once) writes the result where
    the caller wants it. At 1080p each of those copies was gigabytes.

    On GPUs where ``seedvr_kernels`` has a kernel for it (see its ``dispatch``), norm (+ SiLU)
    runs as two Triton passes over the input instead; this PyTorch path stays the reference and
    the CPU path.

    ``kernel_rounds_norm``: the kernel rounds the norm to the output dtype before the SiLU, as
    this path does, so that both give the same values but where their statistics' last bits
    differ (in float16 one element in ~2000 against one in four when the kernel rounds only at
    the end; ``scripts/bench.py --kernel-rounding once`` measures the other choice).
    """

    kernel_rounds_norm: bool = True
    # Where the statistics come from when not from ``x`` itself: a tiled pass sets a callable
    # ``(norm, x) -> (scale, shift)`` here so that its tiles share one set of statistics
    # (``memory.shared_statistics``); None computes them from the input, as the reference does.
    statistics: Callable[[FrameGroupNorm, Tensor], tuple[Tensor, Tensor]] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            return super().forward(x)
        out = torch.empty_like(x)
        self.norm_into(x, out)
        return out

    def norm_into(self, x: Tensor, out: Tensor) -> None:
        """``out = norm(x)``, rounded once to ``out``'s dtype."""
        kernel = fast_group_norm(x.device) if self.statistics is None else None
        if kernel is not None:
            kernel(x, self.weight, self.bias, self.num_groups, self.eps, out=out, silu=False)
            return
        scale, shift = self.scale_shift(x) if self.statistics is None else self.statistics(self, x)
        torch.addcmul(shift, x, scale, out=out)

    def silu_into(self, x: Tensor, out: Tensor) -> None:
        """``out = silu(norm(x))`` without allocating a separate activation tensor."""
        kernel = fast_group_norm(x.device) if self.statistics is None else None
        if kernel is not None:
            kernel(x, self.weight, self.bias, self.num_groups, self.eps, out=out, silu=True,
                   round_norm=self.kernel_rounds_norm)
            return
        self.norm_into(x, out)
        F.silu(out, inplace=True)

    def scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per (frame, channel) ``scale`` and ``shift`` ``[B, C, T, 1, 1]`` with
        ``norm(x) = x * scale + shift``.

        Sums over each channel's H x W first (a reduction over the trailing or, channels-last,
        the leading axes: fast either way), accumulated in float32 like nn.GroupNorm's kernels;
        then per group, with the spread of the channel means added to the mean channel variance
        rather than taking E[x^2] - E[x]^2 over the whole group, which cancels more digits."""
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        pixels = x.shape[3] * x.shape[4]
        mean_c = x.sum((3, 4), dtype=acc) / pixels
        square_c = torch.linalg.vector_norm(x, 2, (3, 4), dtype=acc).square_() / pixels
        return self.scale_shift_of_moments(mean_c, square_c)

    def scale_shift_of_moments(self, mean_c: Tensor, square_c: Tensor) -> tuple[Tensor, Tensor]:
        """``scale_shift`` from each (frame, channel)'s mean and mean square ``[B, C, T]`` over the
        pixels (float32 or float64), wherever they were gathered."""
        batch, channels, frames = mean_c.shape
        groups = self.num_groups
        acc = mean_c.dtype
        per_group = (batch, groups, channels // groups, frames)
        mean_c, square_c = mean_c.view(per_group), square_c.view(per_group)
        var_c = square_c - mean_c.square()
        mean = mean_c.mean(2, keepdim=True)
        var = (var_c.mean(2, keepdim=True) + (mean_c - mean).square_().mean(2, keepdim=True)).clamp_(min=0)
        rstd = (var + self.eps).rsqrt_()
        weight, bias = self.weight.to(acc), self.bias.to(acc)
        scale = rstd * weight.view(1, groups, -1, 1)  # [B, G, C/G, T]
        shift = bias.view(1, groups, -1, 1) - mean * scale
        as_channels = (batch, channels, frames, 1, 1)
        return scale.reshape(as_channels), shift.reshape(as_channels)


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
        attended = rearrange(self._attend(q, k, v), "n heads l d -> n l (heads d)")
        out = self.to_out[0](attended)
        return x + rearrange(out, "(b t) (h w) c -> b c t h w", b=batch, t=frames, h=height, w=width)

    @staticmethod
    def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """SDPA, except for heads too wide for its fused kernels on CUDA (the published VAE's one
        head of 512), which go to cuBLAS a block of rows at a time unless SEEDVR_KERNELS=off."""
        if q.is_cuda and q.shape[-1] > FUSED_HEAD_LIMIT and kernels_setting() != "off":
            return wide_head_attention(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)


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

    In a sliced pass the frames the conv carries over are rebuilt from the last input frame(s)
    rather than kept: the input is 4x (8x temporal) smaller, which at 1080p saves ~2.6 GiB of
    cache across the decoder for a repeated 1x1x1 conv on one or two small frames per slice.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.time_ratio = 2 if temporal else 1
        # Pointwise and not causal in the reference; a plain Conv3d.
        self.upscale_conv = nn.Conv3d(channels, channels * 4 * self.time_ratio, kernel_size=1)
        self.conv = CausalConv3d(channels, channels, (3, 3, 3), spatial_padding=1)

    def _depth_to_space(self, x: Tensor, out: Tensor, drop_head: bool) -> None:
        """``upscale_conv(x)`` rearranged into ``out`` ``[B, C, frames', 2h, 2w]``: channel (row,
        col, time, c) of input frame f goes to frame f * ratio + time, pixel (2h + row, 2w + col)."""
        sub = self.upscale_conv(x)
        batch, _, frames, height, width = sub.shape
        channels, ratio = self.conv.in_channels, self.time_ratio
        source = sub.view(batch, 2, 2, ratio, channels, frames, height, width).permute(0, 4, 5, 3, 6, 1, 7, 2)
        if drop_head:
            out[:, :, 0].view(batch, channels, height, 2, width, 2).copy_(source[:, :, 0, 0])
            out[:, :, 1:].view(batch, channels, frames - 1, ratio, height, 2, width, 2).copy_(source[:, :, 1:])
        else:
            out.view(batch, channels, frames, ratio, height, 2, width, 2).copy_(source)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        batch, _, frames, height, width = x.shape
        ratio, conv = self.time_ratio, self.conv
        starting = cache is None or not cache.continues(self)
        drop_head = ratio > 1 and starting
        head = conv.kernel_size[0] - 1  # copies of frame 0 at a start, carried frames after: both 2
        layout = cache.memory_format if cache is not None else torch.contiguous_format
        padded = torch.empty((batch, conv.in_channels, head + frames * ratio - drop_head, 2 * height, 2 * width),
                             dtype=x.dtype, device=x.device, memory_format=layout)
        carried = None if starting else cache.frames.pop(self)
        if carried is not None:
            if carried.shape[-1] == width:
                self._depth_to_space(carried, padded[:, :, :head], drop_head=False)
            else:  # conv frames kept as they were (see _carry)
                padded[:, :, :head] = carried
        # Written straight into the conv's buffer: no separate upsampled tensor.
        self._depth_to_space(x, padded[:, :, head:], drop_head)
        if starting:
            padded[:, :, :head] = padded[:, :, head : head + 1]
        if cache is not None:
            cache.frames[self] = self._carry(x, carried, padded, head, drop_head, layout)
            cache.started.add(self)
        del carried
        return F.conv3d(padded, conv.weight, conv.bias, conv.stride, conv.padding)

    def _carry(self, x: Tensor, carried: Tensor | None, padded: Tensor, head: int, drop_head: bool,
               layout: torch.memory_format) -> Tensor:
        """What the next slice needs to rebuild the conv's last ``head`` input frames: the last
        ``head / ratio`` input frames. Two exceptions: a start of one temporal frame (the conv has
        seen copies of one kept sub-frame, no depth-to-space of any input) keeps the conv frames;
        a spatial slice of one frame takes the frame before it from ``carried``, or at a start
        from the copies of frame 0."""
        if drop_head and x.shape[2] == 1:
            return padded[:, :, -head:].clone(memory_format=layout)
        keep = head // self.time_ratio
        if x.shape[2] < keep:
            earlier = x[:, :, :1] if carried is None else carried[:, :, -1:]
            x = torch.cat([earlier.expand(-1, -1, keep - x.shape[2], -1, -1), x], dim=2)
        return x[:, :, -keep:].clone(memory_format=layout)


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


@dataclass(frozen=True)
class Stage:
    """One step of an encoder or decoder pass, in order: ``run(x, cache)``.

    ``growth`` is output bytes per input byte (channels, space, time), which sizes the slices;
    ``any_slicing`` says the stage gives the same result whatever the number of frames per call
    (stride-2 time downsamplers need an odd first slice and even ones after, so they do not).
    """

    run: Callable[[Tensor, CausalCache | None], Tensor]
    growth: float = 1.0
    any_slicing: bool = True


def _resnet_stages(resnets: nn.ModuleList) -> list[Stage]:
    return [Stage(r, r.conv1.out_channels / r.conv1.in_channels) for r in resnets]


def _mid_stages(mid: MidBlock3D) -> list[Stage]:
    attention = mid.attentions[0]
    return [Stage(mid.resnets[0]), Stage(lambda x, cache: attention(x)), Stage(mid.resnets[1])]


def run_depth_first(stages: Sequence[Stage], x: Tensor, cache: CausalCache, write: Callable[[Tensor], None],
                    slice_bytes: float) -> None:
    """Run ``stages`` on ``x`` and pass the result to ``write``, in temporal slices small enough
    that no stage's input or output exceeds ``slice_bytes`` (one frame at least).

    Depth first: a slice goes through every remaining stage before the next slice starts, so at
    1080p only a frame or two of each full-resolution tensor exists at a time. Every stage must
    allow any slicing; the cache makes the result equal one pass."""
    for index, stage in enumerate(stages):
        frames = x.shape[2]
        frame_bytes = x.numel() // max(frames, 1) * x.element_size() * max(1.0, stage.growth)
        step = max(1, int(slice_bytes // frame_bytes))
        if frames > step:
            rest = stages[index:]
            for begin in range(0, frames, step):
                run_depth_first(rest, x[:, :, begin : begin + step], cache, write, slice_bytes)
            return
        x = stage.run(x, cache)
    write(x)


class FrameWriter:
    """Collects the slices of a pass into one ``[B, C, frames, H, W]`` tensor allocated at the
    first slice (no list of pieces and ``cat``: that would hold the result twice)."""

    def __init__(self, frames: int, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.frames, self.memory_format = frames, memory_format
        self.out: Tensor | None = None
        self.written = 0

    def __call__(self, piece: Tensor) -> None:
        if self.out is None:
            batch, channels, _, height, width = piece.shape
            self.out = torch.empty((batch, channels, self.frames, height, width), dtype=piece.dtype,
                                   device=piece.device, memory_format=self.memory_format)
        count = piece.shape[2]
        self.out[:, :, self.written : self.written + count] = piece
        self.written += count

    def result(self) -> Tensor:
        if self.out is None or self.written != self.frames:
            raise RuntimeError(f"FrameWriter: {self.written} of {self.frames} frames written")
        return self.out


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

    def stages(self) -> list[Stage]:
        stages = [Stage(self.conv_in, self.conv_in.out_channels / self.conv_in.in_channels)]
        for block in self.down_blocks:
            stages += _resnet_stages(block.resnets)
            if block.downsamplers is not None:
                down = block.downsamplers[0]
                stages.append(Stage(down, 0.25, any_slicing=down.conv.stride[0] == 1))
        stages += _mid_stages(self.mid_block)
        stages.append(Stage(lambda x, cache: norm_silu_conv(self.conv_norm_out, self.conv_out, x, cache)))
        return stages

    def forward(self, x: Tensor, cache: CausalCache | None = None, slice_bytes: float | None = None) -> Tensor:
        """One slice (or the whole clip): with ``slice_bytes`` (and a cache) the layers before the
        first time downsampler run depth first on fewer frames at a time."""
        stages = self.stages()
        first = 0
        if slice_bytes is not None and cache is not None:
            first = next((i for i, stage in enumerate(stages) if not stage.any_slicing), len(stages))
            writer = FrameWriter(x.shape[2], cache.memory_format)
            run_depth_first(stages[:first], x, cache, writer, slice_bytes)
            x = writer.result()
        for stage in stages[first:]:
            x = stage.run(x, cache)
        return x


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

    def stages(self) -> list[Stage]:
        """Every stage allows any slicing: time only grows (each latent frame becomes a fixed
        number of frames), so the decoder can run depth first from its input on."""
        stages = [Stage(self.conv_in, self.conv_in.out_channels / self.conv_in.in_channels)]
        stages += _mid_stages(self.mid_block)
        for block in self.up_blocks:
            stages += _resnet_stages(block.resnets)
            if block.upsamplers is not None:
                up = block.upsamplers[0]
                stages.append(Stage(up, 4 * up.time_ratio))
        stages.append(Stage(lambda x, cache: norm_silu_conv(self.conv_norm_out, self.conv_out, x, cache)))
        return stages

    def latent_stage_count(self) -> int:
        """Stages up to the end of the mid block: what the decoder does at the latent resolution."""
        return 1 + len(_mid_stages(self.mid_block))

    def forward(self, z: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = z
        for stage in self.stages():
            x = stage.run(x, cache)
        return x


def temporal_slices(frames: int, first: int, step: int) -> Iterator[slice]:
    """``[0, first)``, then ``step`` frames at a time: the causal slicing of the reference."""
    yield slice(0, min(first, frames))
    for start in range(first, frames, step):
        yield slice(start, min(start + step, frames))


class VideoVAE(nn.Module):
    """Encoder and decoder of the SeedVR2 VAE; ``state_dict()`` keys equal the checkpoint's.

    ``encode``/``decode`` run in causal temporal slices by default (encode: frames 0..4, then 4
    at a time, one latent frame each; decode: latents 0..1, then one at a time), which bounds
    activation memory on long clips and equals a single pass up to float rounding. Inside a slice
    the large layers go depth first in pieces of at most ``slice_bytes`` per tensor.

    ``memory_format``: layout of the activations; ``None`` picks ``channels_last_3d`` on CUDA,
    where cuDNN's 3-D convolutions run NDHWC natively, and the standard layout elsewhere.

    Inference only: activations are written into preallocated buffers, which autograd refuses, so
    run it with parameters that need no gradient (the loader's models) or under ``torch.no_grad``.
    """

    # Per-tensor bound for the depth-first pieces (see run_depth_first). On an H200 at 1080p,
    # channels-last, 0.5 GiB (one frame at full resolution) was both the leanest and the fastest
    # setting tried: cuDNN's NDHWC kernels ran faster on 3-frame inputs than on 6 or 7.
    slice_bytes: float = 0.5 * 2**30
    memory_format: torch.memory_format | None = None
    # Convs fed one frame at a time reuse their input buffer as a ring (CausalCache, ConvRing):
    # faster, but a third cached frame per conv (+6.4 GiB at 1080p), so the caller opts in.
    conv_rings: bool = False

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self._weights_layout: torch.memory_format | None = None
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)

    def _check_frames(self, x: Tensor, what: str) -> None:
        factor = self.config.temporal_factor
        if x.ndim != 5:
            raise ValueError(f"VideoVAE.{what}: expected [B, C, T, H, W], got shape {tuple(x.shape)}")
        if what == "encode" and (x.shape[2] - 1) % factor:
            raise ValueError(f"VideoVAE.encode: {x.shape[2]} frames; the VAE needs {factor}n+1 frames")

    def _cache(self, x: Tensor) -> CausalCache:
        layout = self.memory_format
        if layout is None:
            layout = torch.channels_last_3d if x.device.type == "cuda" else torch.contiguous_format
        self._lay_out_weights(layout)
        return CausalCache(layout, rings=self.conv_rings)

    def _lay_out_weights(self, layout: torch.memory_format) -> None:
        """Store every conv weight in the activations' layout, once per layout change: a weight in
        the other layout is transposed by cuDNN on every call (per slice and per depth-first piece)."""
        if layout == self._weights_layout:
            return
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
        self._weights_layout = layout

    def encode_moments(self, x: Tensor, *, sliced: bool = True) -> Tensor:
        """Raw encoder output ``[B, 2 * latent, T', H/8, W/8]`` (mean | logvar), for ``x`` in
        [-1, 1] with ``T = 4n + 1`` frames. Tiled encoding blends these before splitting."""
        self._check_frames(x, "encode")
        if not sliced:
            return self.encoder(x).contiguous()
        factor = self.config.temporal_factor
        cache = self._cache(x)
        pieces = []
        for piece in temporal_slices(x.shape[2], factor + 1, factor):
            pieces.append(self.encoder(x[:, :, piece], cache, self.slice_bytes))
        return _join_frames(pieces)

    def encode(self, x: Tensor, *, sliced: bool = True) -> tuple[Tensor, Tensor]:
        """Posterior ``(mean, logvar)``, each ``[B, latent, (T - 1) / 4 + 1, H/8, W/8]``."""
        return split_moments(self.encode_moments(x, sliced=sliced))

    def decode(self, z: Tensor, *, sliced: bool = True) -> Tensor:
        """Pixels ``[B, 3, 4 (T' - 1) + 1, 8h, 8w]`` for an unscaled latent ``z``; not clamped."""
        self._check_frames(z, "decode")
        if not sliced:
            return self.decoder(z).contiguous()
        return self._decode_stages(z, self.decoder.stages(), self.config.pixel_frames(z.shape[2]))

    def decode_latent_stages(self, z: Tensor) -> Tensor:
        """The decoder's input layer and mid block, ``[B, C_mid, T', h, w]``, at the latent
        resolution (cheap: a tiled decode runs it on the whole latent, so the mid block's attention
        and statistics see whole frames); ``decode_pixel_stages`` finishes the decode."""
        self._check_frames(z, "decode")
        return self._decode_stages(z, self.decoder.stages()[: self.decoder.latent_stage_count()], z.shape[2])

    def decode_pixel_stages(self, hidden: Tensor) -> Tensor:
        """The rest of the decoder after ``decode_latent_stages``: pixels as ``decode`` gives them."""
        stages = self.decoder.stages()[self.decoder.latent_stage_count() :]
        return self._decode_stages(hidden, stages, self.config.pixel_frames(hidden.shape[2]))

    def _decode_stages(self, x: Tensor, stages: Sequence[Stage], frames_out: int) -> Tensor:
        cache = self._cache(x)
        writer = FrameWriter(frames_out)
        for piece in temporal_slices(x.shape[2], 2, 1):
            run_depth_first(stages, x[:, :, piece], cache, writer, self.slice_bytes)
        return writer.result()

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
