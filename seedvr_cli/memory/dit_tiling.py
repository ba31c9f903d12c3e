"""Spatial tiling around the DiT: run the velocity model on overlapping tiles of the latent and
blend the tiles' velocities with linear ramps, for outputs whose latent does not fit at once.

    dit = TiledDiT(model, tile_size=2592, tile_overlap=480)
    velocity = dit(vid, txt, vid_shape, txt_shape, timestep)   # called exactly like the model

A tile is a spatial crop of the token grid with every frame of the window, so the DiT's activation
memory follows the tile, not the frame. The model is only called, never changed: a BlockSwap
runner installed in it keeps working, and the tiler goes wherever the DiT goes
(``pipeline.window.VelocityModel``). The input tokens hold the window's one noise tensor, so a
tile reads its slice of the same noise: tiling changes pictures only through what each tile's
attention cannot see.

How tiles are laid out (all on the token grid, one token = 2x2 latents = 16x16 output pixels):

* The DiT attends within windows whose size depends only on the grid's aspect ratio
  (``models.attention.window_sizes``: ~400 tokens shaped like the frame, 15 x 27 for 16:9). A tile
  is ``k x k`` of the frame's windows, so it has the frame's aspect ratio and the model cuts it
  into windows of exactly the frame's size (where rounding gives such a tile other windows, as
  for some 4:3 sizes, a few tokens longer one that gets the frame's; in rare shapes, about 0.2 %
  of frame sizes and tile counts, none near does and the tiles keep their own windows). ``k`` is
  the largest count whose tile's longer side fits ``tile_size`` pixels (at least 1). Tiles start
  on the frame's window boundaries, so both the regular and the shifted partition inside a tile
  are the frame's own (with the seam test's tiny 3B on a 240 x 160 photo latent, a last tile
  placed flush with the frame's edge instead, off the window grid, had 4x the mean error: 0.060
  against 0.014).
* Neighbouring tiles share at least ``tile_overlap`` pixels rounded up to whole windows per axis
  (at most ``k - 1``): the fewest tiles that allows are spread evenly over the window grid, so
  the spare room goes into wider overlaps. The last tile ends within a window past the frame's
  edge (the frame's last, partial window); it is filled out with a mirror image of the frame,
  whose velocities are thrown away: every tile has the same shape, hence the same windows. A
  frame that fits one tile is run whole, unchanged.
* In the overlaps each tile's velocity is weighted by a linear ramp: 0 within a quarter of the
  overlap from its cut edge, rising to 1 across the middle half, so two neighbours' weights sum
  to one and each tile's least reliable rows (next to its cut) are left out; the sum is divided
  by the weights anyway, for the corners and any three-way overlap. Accumulation is in float32.

What differs from the untiled call: the shifted windows that straddle a tile's cut edge see only
their half inside the tile, and that gap widens by about half a window with every further block;
and the text tokens, which take the mean of their attention over all windows, average over the
tile's windows instead of the frame's, a small change everywhere. The mirror fill adds tokens to
the frame's last, partial windows, which then differ more than the seams do (on the seam test);
a model seam that let the caller fix the window size would make the fill unnecessary.

What it costs: compute in proportion to the tokens run, i.e. every overlap and mirror fill is
computed twice or more. With the defaults a 3840x2160 output (9 x 9 windows of 15 x 27 tokens)
runs 2 x 2 tiles of 6 x 6 windows, 144 windows' work instead of 81 (+78 % DiT compute), each tile
45 % of the frame's tokens. Memory: one tile's activations, plus a float32 accumulator of the
window's velocities (16 channels per latent, small beside the activations).

Why these defaults: 2592 px tiles are 6 x 6 windows of a 16:9 frame, the smallest tile that still
covers a 3840x2160 output in 2 x 2 tiles with two windows of overlap. 480 px of overlap is two
windows for 16:9, 4:3 and square frames. On the seam test (``tests/test_dit_tiling.py``, tiny
fixture DiTs, 4 blocks) a one-window overlap left the seam bands at 3.6x the tile interiors' mean
error (the interiors away from the frame's partial windows; photo latent of 240 x 160), while two
windows bring them to 0.65x (3B) and 0.51x (7B) of the interiors (0.83x / 0.80x away from the
partial windows; latent of 300 x 200). A tile's error starts at its cut edge and spreads about
half a window per block, so the real models (32 and 36 blocks) may want more; one window
(``--dit-tile-size 2160 --dit-tile-overlap 192``: 2 x 2 tiles of 5 x 5 windows at 4K) costs +23 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.attention import window_sizes
from ..models.dit_config import DiTConfig
from ..models.vae_config import vae_config

# Output pixels per latent of the published VAE (the DiT's tokens are patches of latents).
PIXELS_PER_LATENT = vae_config("vae").spatial_factor
DEFAULT_TILE_SIZE = 2592
DEFAULT_TILE_OVERLAP = 480
# Blend ramps: a tile's weight is 0 up to a quarter of the overlap from its cut edge and rises
# linearly to 1 across the middle half, so two neighbours' weights sum to one. Each tile is least
# right near its own cut edge; a ramp over the whole overlap let both tiles' worst rows in (tiny
# 3B, photo latent of 240 x 160 with one-window overlaps: seam error 1.57x the interiors', against
# 1.22x with the middle half).
RAMP_OFFSET = 0.25
RAMP_WIDTH = 0.5


@dataclass(frozen=True)
class TileAxis:
    """The tiles along one axis of the token grid: where each starts, and the shared length."""

    extent: int  # tokens of the frame along this axis
    length: int  # tokens of every tile (may run past ``extent``: mirror fill)
    starts: tuple[int, ...]

    @property
    def overlap(self) -> int:
        """Tokens shared by the closest pair of neighbouring tiles (0 for a single tile)."""
        spans = self.spans()
        return min((a[1] - b[0] for a, b in zip(spans, spans[1:])), default=0)

    def spans(self) -> list[tuple[int, int]]:
        """Each tile's part inside the frame, ``[start, stop)`` in tokens."""
        return [(s, min(s + self.length, self.extent)) for s in self.starts]


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one sample's token grid ``(t, h, w)``; ``None`` from :func:`plan_tiles` means whole."""

    grid: tuple[int, int, int]
    window: tuple[int, int]  # the frame's window size in tokens along (h, w)
    rows: TileAxis
    cols: TileAxis

    @property
    def tile_tokens(self) -> int:
        """Tokens of one tile: what the DiT's activation memory scales with."""
        return self.grid[0] * self.rows.length * self.cols.length

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)


def _axis(extent: int, window: int, length: int, overlap_windows: int, windows_per_tile: int) -> TileAxis:
    """As few tiles as the overlap allows, spread evenly over the window grid: the last one ends
    within a window past the frame's edge, and the overlaps come out at least as asked."""
    last = max(0, math.ceil((extent - length) / window))  # the last tile's start, in windows
    stride = windows_per_tile - overlap_windows
    gaps = math.ceil(last / stride)
    starts = [round(i * last / gaps) * window for i in range(gaps + 1)] if gaps else [0]
    return TileAxis(extent, length, tuple(starts))


def plan_tiles(grid: tuple[int, int, int], config: DiTConfig, tile_size: int, tile_overlap: int) -> TilePlan | None:
    """Tiles for a token grid ``(t, h, w)`` (sizes in output pixels); None when it fits one tile."""
    t, h, w = grid
    _, win_h, win_w = window_sizes(grid, config.window)
    pixels_per_token = PIXELS_PER_LATENT * config.patch[1]
    windows_per_tile = max(1, tile_size // (pixels_per_token * max(win_h, win_w)))
    length_h, length_w = _tile_lengths(t, (win_h, win_w), windows_per_tile, config)
    if h <= length_h and w <= length_w:
        return None
    overlaps = [min(windows_per_tile - 1, math.ceil(tile_overlap / (pixels_per_token * win))) for win in (win_h, win_w)]
    rows = _axis(h, win_h, length_h, overlaps[0], windows_per_tile)
    cols = _axis(w, win_w, length_w, overlaps[1], windows_per_tile)
    return TilePlan(grid, (win_h, win_w), rows, cols)


def _tile_lengths(t: int, window: tuple[int, int], count: int, config: DiTConfig) -> tuple[int, int]:
    """``count`` windows along each axis, so the tile has the frame's window size; where rounding
    gives the tile other windows, the nearest longer tile that gets the frame's windows."""
    base_h, base_w = count * window[0], count * window[1]
    for extra in range(2 * max(window)):
        for extra_h in range(extra + 1):
            size = (base_h + extra_h, base_w + extra - extra_h)
            if window_sizes((t, *size), config.window)[1:] == window:
                return size
    return base_h, base_w


def _mirror(indices: Tensor, extent: int) -> Tensor:
    """Positions past the frame's end reflected back into it (any distance, period 2 * (extent - 1))."""
    if extent == 1:
        return torch.zeros_like(indices)
    period = 2 * (extent - 1)
    folded = indices % period
    return torch.where(folded < extent, folded, period - folded)


def ramp_weights(axis: TileAxis, index: int, patch: int) -> Tensor:
    """Blend weight of tile ``index`` along one axis, per latent inside the frame: 0 at its cut
    edges (those inside the frame), rising linearly to 1 across the middle half of the overlap."""
    spans = axis.spans()
    start, stop = (n * patch for n in spans[index])
    weights = torch.ones(stop - start, dtype=torch.float32)
    overlap = axis.overlap * patch
    if overlap == 0:
        return weights
    centres = torch.arange(stop - start, dtype=torch.float32) + 0.5
    distances = []
    if index > 0:
        distances.append(centres)
    if index + 1 < len(spans):
        distances.append((stop - start) - centres)
    for distance in distances:
        rise = ((distance - RAMP_OFFSET * overlap) / (RAMP_WIDTH * overlap)).clamp(0, 1)
        weights = torch.minimum(weights, rise)
    return weights


class TiledDiT:
    """A DiT called in spatial tiles, with the DiT's own call (see the module docstring).

    ``model`` is a ``NaDiT`` (BlockSwap installed or not) or anything with its call; ``config``
    defaults to ``model.config``. Sizes are output pixels.
    """

    def __init__(self, model, tile_size: int = DEFAULT_TILE_SIZE, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                 config: DiTConfig | None = None) -> None:
        if tile_size < 1 or not 0 <= tile_overlap < tile_size:
            raise ValueError(f"DiT tile size {tile_size} must be positive and the overlap {tile_overlap} "
                             "non-negative and smaller")
        self.model = model
        self.config = config if config is not None else model.config
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    def plan(self, latent_grid: tuple[int, int, int]) -> TilePlan | None:
        """Tiles of a sample with latent grid ``(T', H, W)``; None when it runs whole."""
        pt, ph, pw = self.config.patch
        t, h, w = latent_grid
        return plan_tiles((t // pt, h // ph, w // pw), self.config, self.tile_size, self.tile_overlap)

    def __call__(self, vid: Tensor, txt: Tensor, vid_shape: Tensor, txt_shape: Tensor, timestep: Tensor) -> Tensor:
        grids = [tuple(int(n) for n in row) for row in vid_shape.tolist()]
        txt_lens = [int(n) for n in txt_shape.reshape(len(grids), -1)[:, 0].tolist()]
        vids = vid.split([math.prod(g) for g in grids])
        txts = txt.split(txt_lens)
        outputs = [
            self._sample(v, t, vid_shape[i : i + 1], txt_shape[i : i + 1], timestep.reshape(-1)[i : i + 1])
            for i, (v, t) in enumerate(zip(vids, txts))
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _sample(self, vid: Tensor, txt: Tensor, vid_shape: Tensor, txt_shape: Tensor, timestep: Tensor) -> Tensor:
        latent_grid = tuple(int(n) for n in vid_shape[0].tolist())
        plan = self.plan(latent_grid)
        if plan is None:
            return self.model(vid, txt, vid_shape, txt_shape, timestep)
        frames, height, width = latent_grid
        _, ph, pw = self.config.patch
        tokens = vid.reshape(frames, height, width, vid.shape[-1])
        total = weight_sum = None
        for r, (row0, row1) in enumerate(plan.rows.spans()):
            for c, (col0, col1) in enumerate(plan.cols.spans()):
                rows = _mirror(torch.arange(row0 * ph, (row0 + plan.rows.length) * ph, device=vid.device), height)
                cols = _mirror(torch.arange(col0 * pw, (col0 + plan.cols.length) * pw, device=vid.device), width)
                crop = tokens.index_select(1, rows).index_select(2, cols)
                shape = torch.tensor([[frames, rows.numel(), cols.numel()]], dtype=vid_shape.dtype,
                                     device=vid_shape.device)
                velocity = self.model(crop.reshape(-1, crop.shape[-1]), txt, shape, txt_shape, timestep)
                velocity = velocity.reshape(frames, rows.numel(), cols.numel(), -1)
                inside_h, inside_w = (row1 - row0) * ph, (col1 - col0) * pw
                if total is None:
                    total = torch.zeros((frames, height, width, velocity.shape[-1]), dtype=torch.float32,
                                        device=vid.device)
                    weight_sum = torch.zeros((height, width), dtype=torch.float32, device=vid.device)
                weight = torch.outer(ramp_weights(plan.rows, r, ph), ramp_weights(plan.cols, c, pw)).to(vid.device)
                area = (slice(row0 * ph, row0 * ph + inside_h), slice(col0 * pw, col0 * pw + inside_w))
                total[:, area[0], area[1]] += velocity[:, :inside_h, :inside_w].float() * weight[..., None]
                weight_sum[area] += weight
        blended = total / weight_sum[None, ..., None]
        return blended.reshape(-1, blended.shape[-1]).to(velocity.dtype)
