"""Tiles of the tiled DiT (``--dit-tiling on``): the whole FlashVSR pipeline run on overlapping
spatial tiles, feathered together.

The reference node cuts its tiles on the LR input (``tile_size`` and ``tile_overlap`` in input
pixels), runs each tile through its own preprocessing and pastes the result at ``x * scale``; a
tile whose upscaled side is not a multiple of 128 comes out cropped and lands misaligned, and its
ramps also fall to 0 on the image border (the outermost output pixels then get no weight). Here
the same tile grid is laid on the already upscaled, cropped LQ frame, in output pixels (size
``tile_size * scale`` floored to a multiple of 128, overlap ``tile_overlap * scale``), so every
tile is a valid model input and lines up; ramps are only put on sides shared with a neighbour.
The grid rule (stride = size - overlap, ceil((L - overlap) / stride) tiles, the last one moved
back to end at the border) and the ramp (``linspace(0, 1, overlap)``, minimum of the sides) are
the node's.
"""

from __future__ import annotations

import math

import torch

from seedvr_cli.pipeline.flashvsr.preprocess import SIZE_MULTIPLE


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start of each tile along a side of ``length`` (tiles of ``min(size, length)``)."""
    if size >= length:
        return [0]
    stride = size - overlap
    if stride <= 0:
        raise ValueError(f"tile {size} with overlap {overlap}")
    count = math.ceil((length - overlap) / stride)
    return [min(k * stride, length - size) for k in range(count)]


def output_tile(tile_size: int, tile_overlap: int, scale: int) -> tuple[int, int]:
    """Tile side and overlap in output pixels for LR ``tile_size``/``tile_overlap`` at ``scale``."""
    size = max(SIZE_MULTIPLE, tile_size * scale // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return size, min(tile_overlap * scale, size - 1)


def plan_tiles(height: int, width: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(top, left, tile_height, tile_width)`` of every tile of a ``height x width`` frame, rows first."""
    rows = [(top, min(size, height)) for top in tile_starts(height, size, overlap)]
    cols = [(left, min(size, width)) for left in tile_starts(width, size, overlap)]
    return [(top, left, th, tw) for top, th in rows for left, tw in cols]


def feather_mask(tile: tuple[int, int, int, int], frame: tuple[int, int], overlap: int) -> torch.Tensor:
    """Weight ``[th, tw]`` of one tile: 1 inside, ``linspace(0, 1, overlap)`` ramps on each side
    that is not on the frame's border."""
    top, left, th, tw = tile
    height, width = frame
    mask = torch.ones(th, tw)
    if overlap <= 0:
        return mask
    ramp_h = torch.linspace(0, 1, min(overlap, th))
    ramp_w = torch.linspace(0, 1, min(overlap, tw))
    if top > 0:
        mask[: len(ramp_h)] = torch.minimum(mask[: len(ramp_h)], ramp_h[:, None])
    if top + th < height:
        mask[th - len(ramp_h) :] = torch.minimum(mask[th - len(ramp_h) :], ramp_h.flip(0)[:, None])
    if left > 0:
        mask[:, : len(ramp_w)] = torch.minimum(mask[:, : len(ramp_w)], ramp_w[None, :])
    if left + tw < width:
        mask[:, tw - len(ramp_w) :] = torch.minimum(mask[:, tw - len(ramp_w) :], ramp_w.flip(0)[None, :])
    return mask
