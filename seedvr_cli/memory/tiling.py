"""Spatial tiling around the video VAE: encode/decode overlapping tiles and blend them.

Lays out and blends tiles as the community port's tiled VAE does (docs/reference-behaviour.md R22):

* tiles are laid out on the latent grid (tile ``size // 8``, overlap ``overlap // 8`` latents,
  stride = tile - overlap; a tile that lies entirely inside the previous overlap is skipped);
* every tile is encoded/decoded with the VAE's normal causal temporal slicing;
* tiles are blended with separable raised-cosine ramps on interior edges only and divided by the
  accumulated weight. Encode blends the 32-channel moments (logvar included) before splitting;
  decode ramps are ``overlap`` *pixels* long even when the real overlap is ``8 * (overlap // 8)``.

Blending accumulates in float32 whatever the VAE's dtype (the reference accumulates in the VAE
dtype); the result is returned in the VAE's dtype. The VAE itself knows nothing about tiles.

One departure, on by default (``whole_mid``): a tiled decode runs its input layer and mid block
(a self-attention over each whole frame, and GroupNorm statistics) once on the whole latent, where
they cost little memory (their output is ~0.3 GiB for a 33-frame window at 1080p), and only the
up blocks in tiles. The tiles then differ from the untiled decode only through their
high-resolution GroupNorm statistics and their cut edges: on the shared photo with the fixture VAE
this halves the tiled-vs-untiled error (``scripts/vae_tile_seams.py``). ``whole_mid=False`` is the
reference's tiling, for parity. Encode keeps the reference's tiling: its error is the down blocks'
statistics, which the same split did not reduce, and blending 512-channel features instead of the
32-channel moments would hold ~2.4 GiB more at a 2160p window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.vae import VideoVAE, split_moments
from .shared_statistics import Share, SharedStatistics, half_size


@dataclass(frozen=True)
class TileSpan:
    """One tile's extent along one axis, in latent units, with its blend weights."""

    start: int
    stop: int
    leading_fade: bool  # not at the start of the axis
    trailing_fade: bool  # not at the end of the axis


def tile_spans(latent_size: int, tile: int, overlap: int) -> list[TileSpan]:
    """Tiles along one latent axis of ``latent_size``: ``tile`` latents with ``overlap`` shared."""
    stride = max(1, tile - overlap)
    spans = []
    for start in range(0, latent_size, stride):
        stop = min(start + tile, latent_size)
        # Covered completely by the previous tile's overlap.
        if start > 0 and stop - start <= overlap:
            continue
        spans.append(TileSpan(start, stop, start > 0, stop < latent_size))
    return spans


def raised_cosine(length: int) -> Tensor:
    """``0.5 - 0.5 cos(pi * i / (length - 1))``, rising from 0 to 1 (a single ``[0]`` for length 1)."""
    ramp = torch.linspace(0, 1, steps=length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(ramp * math.pi)).to(torch.float32)


def edge_weights(extent: int, ramp_length: int, leading: bool, trailing: bool) -> Tensor:
    """Per-row weights of a tile: 1, with a rising ramp on a leading interior edge and a falling
    ramp on a trailing one, both cut to ``min(ramp_length, extent - 1)``. Where the two would
    overlap the trailing ramp wins (as in the reference)."""
    weights = torch.ones(extent, dtype=torch.float32)
    fade = max(0, min(ramp_length, extent - 1))
    if fade > 0:
        ramp = raised_cosine(ramp_length)[:fade]
        if leading:
            weights[:fade] = ramp
        if trailing:
            weights[extent - fade :] = 1 - ramp
    return weights


def _latent_grid(tile_size: tuple[int, int], tile_overlap: tuple[int, int], factor: int):
    tile = tuple(max(1, size // factor) for size in tile_size)
    overlap = tuple(max(0, min(o // factor, t - 1)) for o, t in zip(tile_overlap, tile))
    return tile, overlap


def _check_tiling(tile_size: tuple[int, int], tile_overlap: tuple[int, int]) -> None:
    if any(size < 1 for size in tile_size) or any(o < 0 for o in tile_overlap):
        raise ValueError(f"tile size {tile_size} must be positive and overlap {tile_overlap} non-negative")
    if any(o >= size for o, size in zip(tile_overlap, tile_size)):
        raise ValueError(f"tile overlap {tile_overlap} must be smaller than the tile size {tile_size}")


def tiled_encode(
    vae: VideoVAE,
    x: Tensor,
    tile_size: tuple[int, int] = (1024, 1024),
    tile_overlap: tuple[int, int] = (128, 128),
    shared_statistics: bool = True,
    _gather: Callable[[Share], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """``vae.encode`` of ``x`` ``[B, 3, T, H, W]`` in spatial tiles (sizes in pixels): returns the
    posterior ``(mean, logvar)``. A frame that fits one tile is encoded whole.
    ``shared_statistics``: every tile normalises with the statistics of one pass over ``x`` at
    half size (``memory.shared_statistics``); otherwise each with its own, as the reference does.
    ``_gather``: that half-size pass's ``SharedStatistics.gathering`` hook."""
    _check_tiling(tile_size, tile_overlap)
    height, width = x.shape[-2:]
    if height <= tile_size[0] and width <= tile_size[1]:
        return vae.encode(x)
    factor = vae.config.spatial_factor
    (tile_h, tile_w), (overlap_h, overlap_w) = _latent_grid(tile_size, tile_overlap, factor)
    latent_h, latent_w = -(-height // factor), -(-width // factor)
    statistics = None
    if shared_statistics:
        statistics = _gathered(vae, lambda gather: tiled_encode(vae, half_size(x), tile_size, tile_overlap,
                                                                False, gather))

    total = count = None
    rows, cols = tile_spans(latent_h, tile_h, overlap_h), tile_spans(latent_w, tile_w, overlap_w)
    with _each_tile(vae, statistics, _gather) as tile_starts:
        for row, row_share in zip(rows, _shares(rows)):
            for col, col_share in zip(cols, _shares(cols)):
                tile_starts((row_share, col_share))
                crop = x[..., row.start * factor : min(row.stop * factor, height),
                         col.start * factor : min(col.stop * factor, width)]
                moments = vae.encode_moments(crop)
                if total is None:
                    shape = (*moments.shape[:3], latent_h, latent_w)
                    total = torch.zeros(shape, dtype=torch.float32, device=x.device)
                    count = torch.zeros((latent_h, latent_w), dtype=torch.float32, device=x.device)
                # An odd-sized crop can come out a latent row short of its grid extent.
                extent_h = min(row.stop - row.start, moments.shape[3])
                extent_w = min(col.stop - col.start, moments.shape[4])
                weight = torch.outer(
                    edge_weights(extent_h, overlap_h, row.leading_fade, row.trailing_fade),
                    edge_weights(extent_w, overlap_w, col.leading_fade, col.trailing_fade),
                ).to(x.device)
                area = (slice(row.start, row.start + extent_h), slice(col.start, col.start + extent_w))
                total[..., area[0], area[1]] += moments[..., :extent_h, :extent_w].float() * weight
                count[area] += weight
    moments = (total / count.clamp(min=1e-6)).to(x.dtype)
    return split_moments(moments)


def tiled_decode(
    vae: VideoVAE,
    z: Tensor,
    tile_size: tuple[int, int] = (1024, 1024),
    tile_overlap: tuple[int, int] = (128, 128),
    whole_mid: bool = True,
    shared_statistics: bool = True,
    _gather: Callable[[Share], None] | None = None,
) -> Tensor:
    """``vae.decode`` of ``z`` ``[B, C, T', h, w]`` in spatial tiles (sizes in output pixels).
    ``whole_mid``: the input layer and mid block run on the whole latent, the up blocks in tiles
    (otherwise every tile is decoded from its latent crop, as the reference does).
    ``shared_statistics``: the tiles normalise with the statistics of one pass at half size (as
    ``tiled_encode``); the reference's tiling is ``whole_mid=False, shared_statistics=False``."""
    _check_tiling(tile_size, tile_overlap)
    factor = vae.config.spatial_factor
    (tile_h, tile_w), (overlap_h, overlap_w) = _latent_grid(tile_size, tile_overlap, factor)
    latent_h, latent_w = z.shape[-2:]
    if latent_h <= tile_h and latent_w <= tile_w:
        return vae.decode(z)
    source, code = (vae.decode_latent_stages(z), vae.decode_pixel_stages) if whole_mid else (z, vae.decode)
    statistics = None
    if shared_statistics:
        # The half-size latent through the whole decoder (its pixels are not kept): the mid block's
        # output taken down to half size instead (averaged) gave statistics 7x further off.
        statistics = _gathered(vae, lambda gather: tiled_decode(vae, half_size(z), tile_size, tile_overlap,
                                                                whole_mid, False, gather))

    total = count = None
    rows, cols = tile_spans(latent_h, tile_h, overlap_h), tile_spans(latent_w, tile_w, overlap_w)
    with _each_tile(vae, statistics, _gather) as tile_starts:
        for row, row_share in zip(rows, _shares(rows)):
            for col, col_share in zip(cols, _shares(cols)):
                tile_starts((row_share, col_share))
                pixels = code(source[..., row.start : row.stop, col.start : col.stop])
                if total is None:
                    shape = (*pixels.shape[:3], latent_h * factor, latent_w * factor)
                    total = torch.zeros(shape, dtype=torch.float32, device=z.device)
                    count = torch.zeros(shape[-2:], dtype=torch.float32, device=z.device)
                extent_h, extent_w = pixels.shape[-2:]
                # Ramps follow the pixel overlap, not the latent-rounded one (reference behaviour).
                weight = torch.outer(
                    edge_weights(extent_h, tile_overlap[0], row.leading_fade, row.trailing_fade),
                    edge_weights(extent_w, tile_overlap[1], col.leading_fade, col.trailing_fade),
                ).to(z.device)
                top, left = row.start * factor, col.start * factor
                area = (slice(top, top + extent_h), slice(left, left + extent_w))
                total[..., area[0], area[1]] += pixels.float() * weight
                count[area] += weight
    # In place: at 2160p the window's float32 sum is ~3 GiB, a second one would be as much.
    return total.div_(count.clamp(min=1e-6)).to(z.dtype)


def _shares(spans: list[TileSpan]) -> list[tuple[float, float]]:
    """Each tile's own share of its axis (up to the middle of each overlap), as fractions of the
    tile's extent: the shares cover the axis once."""
    shares = []
    for index, span in enumerate(spans):
        low = span.start if index == 0 else (span.start + spans[index - 1].stop) / 2
        high = span.stop if index == len(spans) - 1 else (spans[index + 1].start + span.stop) / 2
        extent = span.stop - span.start
        shares.append(((low - span.start) / extent, (high - span.start) / extent))
    return shares


def _gathered(vae: VideoVAE, run: Callable[[Callable[[Share], None]], object]) -> SharedStatistics:
    """The statistics of the pass ``run(tile_starts)`` makes (its result is not kept)."""
    statistics = SharedStatistics()
    with statistics.gathering(vae) as tile_starts:
        run(tile_starts)
    return statistics


@contextmanager
def _each_tile(vae: VideoVAE, statistics: SharedStatistics | None,
               gather: Callable[[Share], None] | None) -> Iterator[Callable[[Share], None]]:
    """Yields what to call with each tile's share as its pass starts: with shared statistics, the
    replay back to frame 0; in a gathering pass, the gatherer; otherwise nothing."""
    if statistics is not None:
        with statistics.replaying(vae) as rewind:
            yield lambda share: rewind()
    else:
        yield gather or (lambda share: None)


@dataclass(frozen=True)
class TiledVAE:
    """A ``VideoVAE`` coded in spatial tiles, with the VAE's own ``encode``/``decode`` calls, so
    that it goes wherever the VAE goes (``pipeline.window.LatentCodec``) and the pipeline never
    knows about tiles. ``encode_tiles``/``decode_tiles`` switch each direction separately."""

    vae: VideoVAE
    tile_size: tuple[int, int] = (1024, 1024)
    tile_overlap: tuple[int, int] = (128, 128)
    encode_tiles: bool = True
    decode_tiles: bool = True
    whole_mid: bool = True  # decode: the mid block on the whole frame (see the module's docstring)
    shared_statistics: bool = True  # the tiles share a half-size pass's GroupNorm statistics

    def __post_init__(self) -> None:
        _check_tiling(self.tile_size, self.tile_overlap)

    @property
    def config(self):
        return self.vae.config

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.encode_tiles:
            return self.vae.encode(x)
        return tiled_encode(self.vae, x, self.tile_size, self.tile_overlap, self.shared_statistics)

    def decode(self, z: Tensor) -> Tensor:
        if not self.decode_tiles:
            return self.vae.decode(z)
        return tiled_decode(self.vae, z, self.tile_size, self.tile_overlap, self.whole_mid, self.shared_statistics)
