"""Spatially tiled decode around FlashVSR's Wan2.1 VAE decoder, laid out and blended as the
reference's ``WanVideoVAE.tiled_decode`` (``shared/reference/flashvsr/WANVAE.md`` section 5).

Tiles are ``tile_size`` latents with a start every ``tile_stride`` latents; a start whose previous
tile already reaches the end of the axis is skipped, and tiles at the far border are cut short.
Each tile is decoded on its own (fresh causal cache, all frames) and weighted by linear ramps
``(i + 1) / b`` of ``b = 8 * (size - stride)`` pixels on its sides that are not on the image border
(the 2-D weight is the smaller of the row and column ramps); the sum is divided by the summed
weight and clamped to [-1, 1].

Unlike the reference, which sums in the latent dtype (bfloat16 in its pipelines), the sums are
kept in float32 and the result returned in the latent dtype: bfloat16 sums of ramps round the blend
weights, an error of the reference we do not copy (identical in float32).
"""

from __future__ import annotations

import torch

from ..models.flashvsr.wan_vae import SPATIAL_FACTOR, WanVAEDecoder

# The reference pipeline's defaults, in latents (480 x 832 pixels per tile, half overlapping).
DEFAULT_TILE_SIZE = (60, 104)
DEFAULT_TILE_STRIDE = (30, 52)


def tile_starts(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(start, stop) of each tile along an axis of ``length`` latents."""
    spans = []
    for start in range(0, length, stride):
        if start - stride >= 0 and start - stride + size >= length:
            continue
        spans.append((start, min(start + size, length)))
    return spans


def ramp(length: int, border: int, *, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Blend weights along one axis of a decoded tile: 1, with linear ramps at the faded ends."""
    weights = torch.ones(length)
    if border == 0:  # tiles that do not overlap
        return weights
    steps = (torch.arange(border) + 1) / border
    if fade_in:
        weights[:border] = steps[:length]
    if fade_out:
        weights[-border:] = steps.flip(0)[-length:]
    return weights


def tiled_decode(decoder: WanVAEDecoder, z: torch.Tensor,
                 tile_size: tuple[int, int] = DEFAULT_TILE_SIZE,
                 tile_stride: tuple[int, int] = DEFAULT_TILE_STRIDE) -> torch.Tensor:  # fmt: skip
    """Decode ``z [1, 16, T, H, W]`` tile by tile; tiles run on the decoder's device and are summed
    on ``z``'s device (keep ``z`` on the CPU to hold only one tile on the GPU). Returns
    ``[1, 3, 4T-3, 8H, 8W]`` in [-1, 1]."""
    if z.shape[0] != 1:
        raise ValueError(f"tiled_decode takes one clip at a time, got a batch of {z.shape[0]}")
    _, _, frames, height, width = z.shape
    (size_h, size_w), (stride_h, stride_w) = tile_size, tile_stride
    if not (0 < stride_h <= size_h and 0 < stride_w <= size_w):
        raise ValueError(f"tile stride {tile_stride} must be positive and at most the tile size {tile_size}")
    border_h, border_w = SPATIAL_FACTOR * (size_h - stride_h), SPATIAL_FACTOR * (size_w - stride_w)
    out_shape = (1, 3, 4 * frames - 3, height * SPATIAL_FACTOR, width * SPATIAL_FACTOR)
    values = torch.zeros(out_shape, dtype=torch.float32, device=z.device)
    weight = torch.zeros((1, 1, *out_shape[2:]), dtype=torch.float32, device=z.device)
    device = next(decoder.parameters()).device
    for top, bottom in tile_starts(height, size_h, stride_h):
        for left, right in tile_starts(width, size_w, stride_w):
            tile = decoder.decode(z[:, :, :, top:bottom, left:right].to(device)).to(z.device, torch.float32)
            rows = ramp(tile.shape[3], border_h, fade_in=top > 0, fade_out=bottom < height)
            cols = ramp(tile.shape[4], border_w, fade_in=left > 0, fade_out=right < width)
            mask = torch.minimum(rows[:, None], cols[None, :]).to(z.device)
            y, x = top * SPATIAL_FACTOR, left * SPATIAL_FACTOR
            region = (..., slice(y, y + tile.shape[3]), slice(x, x + tile.shape[4]))
            values[region] += tile * mask
            weight[region] += mask
    return (values / weight).clamp_(-1, 1).to(z.dtype)
