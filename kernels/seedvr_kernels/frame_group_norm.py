"""Per-frame GroupNorm (+ SiLU) over ``[B, C, T, H, W]`` activations: Triton kernels, their
launcher and a plain PyTorch reference.

Statistics are taken per frame over (channels-in-group x H x W), as the video VAE does. The
input is read twice, the minimum when a frame (hundreds of MB at 1080p) cannot stay on chip:

1. ``_frame_stats``: each program sums a run of pixels of one frame, all channels at once (in
   the VAE's channels-last layout a pixel's channels are contiguous, so a [pixels x channels]
   tile is one coalesced read). Sums are of ``x - pilot`` (the run's first pixel) in float32,
   so a large mean does not cancel the variance's digits; per run and channel it stores the
   mean and the sum of squared deviations.
2. A few small PyTorch ops merge the runs per group (Chan's parallel variance) into a float32
   ``scale`` and ``shift`` per (frame, channel).
3. ``_apply``: ``y = x * scale + shift``, optionally ``y * sigmoid(y)``, rounded once to the
   output's dtype, written through the output's own strides (e.g. the body of a conv's padded
   input buffer). ``round_norm`` rounds ``y`` to the output dtype before the SiLU as well, as the
   PyTorch path does (norm into the output, then SiLU in place): a way to tell how much of the
   fast-vs-plain picture difference is that rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton on this platform: only the reference exists
    triton = None
    tl = None

# Elements of one [pixels x channels] tile; with 8 warps each thread holds 16-32 of them.
_STATS_TILE = 8192
_APPLY_TILE = 8192
# Enough programs to fill a large GPU several times over (an H200 has 132 multiprocessors).
_STATS_PROGRAMS = 1024


def group_norm_silu_reference(x: Tensor, weight: Tensor, bias: Tensor, num_groups: int, eps: float,
                              silu: bool = True, round_norm: bool = False) -> Tensor:
    """What the kernels compute, in plain PyTorch: ``nn.GroupNorm`` per frame in float32 (float64
    for float64 input), then SiLU, rounded once to ``x.dtype`` (with ``round_norm`` also before
    the SiLU)."""
    batch, channels, frames, height, width = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    per_frame = x.to(acc).permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    y = F.group_norm(per_frame, num_groups, weight.to(acc), bias.to(acc), eps)
    if round_norm:
        y = y.to(x.dtype).to(acc)
    if silu:
        y = F.silu(y)
    return y.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4).to(x.dtype)


if triton is not None:

    @triton.jit
    def _frame_stats(x_ptr, mean_ptr, m2_ptr, channels, frames, width, pixels, pixels_per_program,
                     sx_b, sx_c, sx_t, sx_h, sx_w,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        run = tl.program_id(0)
        frame = tl.program_id(1)
        runs = tl.num_programs(0)
        b = (frame // frames).to(tl.int64)
        t = (frame % frames).to(tl.int64)
        base = x_ptr + b * sx_b + t * sx_t
        c = tl.arange(0, BLOCK_C)
        c_ok = c < channels
        c_off = c.to(tl.int64) * sx_c
        start = run * pixels_per_program
        end = tl.minimum(start + pixels_per_program, pixels)
        first = (start // width).to(tl.int64) * sx_h + (start % width).to(tl.int64) * sx_w
        pilot = tl.load(base + first + c_off, mask=c_ok, other=0.0).to(tl.float32)
        total = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        squares = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        for offset in range(0, pixels_per_program, BLOCK_P):
            p = start + offset + tl.arange(0, BLOCK_P)
            p_ok = p < end
            p_off = (p // width).to(tl.int64) * sx_h + (p % width).to(tl.int64) * sx_w
            ok = p_ok[:, None] & c_ok[None, :]
            v = tl.load(base + p_off[:, None] + c_off[None, :], mask=ok, other=0.0).to(tl.float32)
            d = tl.where(ok, v - pilot[None, :], 0.0)
            total += d
            squares += d * d
        count = (end - start).to(tl.float32)
        s = tl.sum(total, 0)
        q = tl.sum(squares, 0)
        slot = (frame.to(tl.int64) * runs + run) * channels + c
        tl.store(mean_ptr + slot, pilot + s / count, mask=c_ok)
        tl.store(m2_ptr + slot, tl.maximum(q - s * s / count, 0.0), mask=c_ok)

    @triton.jit
    def _apply(x_ptr, out_ptr, scale_ptr, shift_ptr, channels, frames, width, pixels,
               sx_b, sx_c, sx_t, sx_h, sx_w, so_b, so_c, so_t, so_h, so_w,
               SILU: tl.constexpr, ROUND_NORM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        tile = tl.program_id(0)
        frame = tl.program_id(1)
        b = (frame // frames).to(tl.int64)
        t = (frame % frames).to(tl.int64)
        c = tl.arange(0, BLOCK_C)
        c_ok = c < channels
        scale = tl.load(scale_ptr + frame * channels + c, mask=c_ok, other=0.0)
        shift = tl.load(shift_ptr + frame * channels + c, mask=c_ok, other=0.0)
        p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
        ok = (p < pixels)[:, None] & c_ok[None, :]
        h = (p // width).to(tl.int64)
        w = (p % width).to(tl.int64)
        c64 = c.to(tl.int64)
        x_off = b * sx_b + t * sx_t + (h * sx_h + w * sx_w)[:, None] + (c64 * sx_c)[None, :]
        y = tl.load(x_ptr + x_off, mask=ok, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
        if ROUND_NORM:
            y = y.to(out_ptr.dtype.element_ty).to(tl.float32)
        if SILU:
            y = y * tl.sigmoid(y)
        o_off = b * so_b + t * so_t + (h * so_h + w * so_w)[:, None] + (c64 * so_c)[None, :]
        tl.store(out_ptr + o_off, y.to(out_ptr.dtype.element_ty), mask=ok)


def _scale_shift(run_mean: Tensor, run_m2: Tensor, run_pixels: Tensor, pixels: int, weight: Tensor,
                 bias: Tensor, num_groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Merge per-run channel statistics ``[N, runs, C]`` into per-(frame, channel) ``scale`` and
    ``shift`` ``[N, C]`` (float32) with ``norm(x) = x * scale + shift``."""
    frames, runs, channels = run_mean.shape
    per_group = (frames, runs, num_groups, channels // num_groups)
    mean_rc, m2_rc = run_mean.view(per_group), run_m2.view(per_group)
    count = run_pixels.view(1, runs, 1, 1)
    group_count = pixels * (channels // num_groups)
    mean = (mean_rc * count).sum((1, 3), keepdim=True) / group_count  # [N, 1, G, 1]
    m2 = m2_rc.sum((1, 3), keepdim=True) + ((mean_rc - mean).square() * count).sum((1, 3), keepdim=True)
    rstd = (m2 / group_count + eps).rsqrt()
    scale = rstd.view(frames, num_groups, 1) * weight.to(rstd.dtype).view(num_groups, -1)
    shift = bias.to(rstd.dtype).view(num_groups, -1) - mean.view(frames, num_groups, 1) * scale
    return scale.reshape(frames, channels).contiguous(), shift.reshape(frames, channels).contiguous()


def group_norm_silu_triton(x: Tensor, weight: Tensor, bias: Tensor, num_groups: int, eps: float,
                           out: Tensor | None = None, silu: bool = True, round_norm: bool = False) -> Tensor:
    """``silu(group_norm(x))`` (or the norm alone) with statistics per frame, written to ``out``
    (any strides, e.g. a view into a padded buffer; a new tensor like ``x`` if None);
    ``round_norm``: the norm rounded to ``out``'s dtype before the SiLU too."""
    if triton is None:
        raise RuntimeError("group_norm_silu_triton: Triton is not installed")
    batch, channels, frames, height, width = x.shape
    if channels % num_groups:
        raise ValueError(f"group_norm_silu_triton: {channels} channels are not divisible by {num_groups} groups")
    if out is None:
        out = torch.empty_like(x)
    if out.shape != x.shape:
        raise ValueError(f"group_norm_silu_triton: out has shape {tuple(out.shape)}, x {tuple(x.shape)}")
    count, pixels = batch * frames, height * width
    if count == 0 or pixels == 0:
        return out
    block_c = triton.next_power_of_2(channels)

    stats_p = max(1, _STATS_TILE // block_c)
    runs_wanted = max(1, _STATS_PROGRAMS // count)
    pixels_per_program = triton.cdiv(triton.cdiv(pixels, runs_wanted), stats_p) * stats_p
    runs = triton.cdiv(pixels, pixels_per_program)
    run_mean = torch.empty((count, runs, channels), dtype=torch.float32, device=x.device)
    run_m2 = torch.empty_like(run_mean)
    _frame_stats[(runs, count)](x, run_mean, run_m2, channels, frames, width, pixels, pixels_per_program,
                                *x.stride(), BLOCK_P=stats_p, BLOCK_C=block_c, num_warps=8)
    run_pixels = torch.full((runs,), float(pixels_per_program), device=x.device)
    run_pixels[-1] = pixels - pixels_per_program * (runs - 1)
    scale, shift = _scale_shift(run_mean, run_m2, run_pixels, pixels, weight, bias, num_groups, eps)

    apply_p = max(1, _APPLY_TILE // block_c)
    _apply[(triton.cdiv(pixels, apply_p), count)](
        x, out, scale, shift, channels, frames, width, pixels, *x.stride(), *out.stride(),
        SILU=silu, ROUND_NORM=round_norm and silu, BLOCK_P=apply_p, BLOCK_C=block_c, num_warps=8,
    )
    return out
