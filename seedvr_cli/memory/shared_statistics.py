"""GroupNorm statistics that every tile of a tiled VAE pass shares.

A tile normalises with its own statistics unless told otherwise, and two neighbouring tiles then
disagree about every layer's mean and variance: each tile's picture is off by its own smooth
amount, and the blend ramps show where one tile's amount meets the other's. Here a first pass over
the whole input at half its width and height (a quarter of the pixels) gathers each GroupNorm's
per-frame statistics, and every tile of the full pass then normalises with those: the tiles agree,
so a seam carries no more error than a tile's interior (``scripts/vae_tile_seams.py``,
docs/benchmarks.md). A half-size picture's statistics are not the full-size ones, so the whole
frame is off by one smooth amount instead of each tile by its own.

The half-size pass is itself tiled (with the same tiles, each on its own statistics) when it does
not fit one tile, so it never needs more memory than a tile; each norm's statistics are then
gathered from every tile's own share of the frame (the part no other tile is nearer to), which
together cover each pixel once.

Statistics are kept per norm and per frame (``[B, C, T, 1, 1]`` float32, as
``FrameGroupNorm.scale_shift`` gives them: a few kilobytes per norm for a window) and handed out by
frame position, so a pass may slice time differently from the one that gathered them (the VAE
sizes its temporal slices by a frame's bytes, which differ between the passes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..models.vae import FrameGroupNorm

ScaleShift = tuple[Tensor, Tensor]
# A tile's own share of the frame, per axis as fractions of the tile's extent: ((top, bottom), (left, right)).
Share = tuple[tuple[float, float], tuple[float, float]]
WHOLE: Share = ((0.0, 1.0), (0.0, 1.0))


@dataclass
class _Moments:
    """Sums over the pixels gathered for one norm: per (batch, channel) and frame."""

    # (first frame, sum, sum of squares, pixels per frame) of each call
    chunks: list[tuple[int, Tensor, Tensor, int]] = field(default_factory=list)

    def add(self, first_frame: int, part: Tensor) -> None:
        acc = torch.float64 if part.dtype == torch.float64 else torch.float32
        squares = torch.linalg.vector_norm(part, 2, (3, 4), dtype=acc).square_()
        self.chunks.append((first_frame, part.sum((3, 4), dtype=acc), squares, part.shape[3] * part.shape[4]))

    def means(self) -> tuple[Tensor, Tensor]:
        """Mean and mean square ``[B, C, T]`` over every pixel gathered."""
        _, first_sum, _, _ = self.chunks[0]
        frames = max(start + total.shape[2] for start, total, _, _ in self.chunks)
        total = first_sum.new_zeros((*first_sum.shape[:2], frames))
        squares = torch.zeros_like(total)
        pixels = first_sum.new_zeros(frames)
        for start, sums, square_sums, count in self.chunks:
            stop = start + sums.shape[2]
            total[:, :, start:stop] += sums
            squares[:, :, start:stop] += square_sums
            pixels[start:stop] += count
        return total / pixels, squares / pixels


class SharedStatistics:
    """Per-frame ``(scale, shift)`` of every ``FrameGroupNorm`` of a model, gathered in one pass
    (whole or in tiles) and replayed to the same norms in later passes, one per tile."""

    def __init__(self) -> None:
        self._gathered: dict[FrameGroupNorm, _Moments] = {}
        self._frames: dict[FrameGroupNorm, ScaleShift] = {}

    @contextmanager
    def gathering(self, model: nn.Module) -> Iterator[Callable[[Share], None]]:
        """Inside, every norm of ``model`` normalises with its input's own statistics as usual and
        gathers the sums over the current tile's share of the frame. The yielded
        ``tile_starts(share)`` is called as each tile's pass begins; without it the whole input
        is one tile."""
        current = {"share": WHOLE}
        cursor: dict[FrameGroupNorm, int] = {}

        def tile_starts(share: Share) -> None:
            current["share"] = share
            cursor.clear()

        def gather(norm: FrameGroupNorm, x: Tensor) -> ScaleShift:
            (top, bottom), (left, right) = current["share"]
            height, width = x.shape[3:]
            rows = slice(round(top * height), max(round(top * height) + 1, round(bottom * height)))
            cols = slice(round(left * width), max(round(left * width) + 1, round(right * width)))
            start = cursor.get(norm, 0)
            self._gathered.setdefault(norm, _Moments()).add(start, x[..., rows, cols])
            cursor[norm] = start + x.shape[2]
            return norm.scale_shift(x)

        with _statistics_from(model, gather):
            yield tile_starts
        self._frames = {norm: norm.scale_shift_of_moments(*moments.means()) for norm, moments in self._gathered.items()}
        self._gathered.clear()

    @contextmanager
    def replaying(self, model: nn.Module) -> Iterator[Callable[[], None]]:
        """Inside, every norm of ``model`` takes the gathered statistics of the frames it is given,
        in order; the yielded ``rewind()`` starts every norm at frame 0 again (call it before each
        tile's pass)."""
        frames = self._frames
        cursor: dict[FrameGroupNorm, int] = {}

        def replay(norm: FrameGroupNorm, x: Tensor) -> ScaleShift:
            if norm not in frames:
                raise RuntimeError("shared statistics: a GroupNorm ran that the gathering pass never ran")
            scale, shift = frames[norm]
            start, count = cursor.get(norm, 0), x.shape[2]
            if start + count > scale.shape[2] or x.shape[:2] != scale.shape[:2]:
                raise RuntimeError(f"shared statistics: frames {start}-{start + count} of {tuple(x.shape[:2])} asked, "
                                   f"{scale.shape[2]} frames of {tuple(scale.shape[:2])} gathered")
            cursor[norm] = start + count
            return scale[:, :, start : start + count], shift[:, :, start : start + count]

        with _statistics_from(model, replay):
            yield cursor.clear


@contextmanager
def _statistics_from(model: nn.Module, source: Callable[[FrameGroupNorm, Tensor], ScaleShift]) -> Iterator[None]:
    # A codec without these norms (the FlashVSR decoders, test stand-ins) has nothing to share.
    modules = model.modules() if isinstance(model, nn.Module) else ()
    norms = [module for module in modules if isinstance(module, FrameGroupNorm)]
    for norm in norms:
        norm.statistics = source
    try:
        yield
    finally:
        for norm in norms:
            norm.statistics = None


def half_size(x: Tensor) -> Tensor:
    """``x`` ``[B, C, T, H, W]`` at half its height and width (rounded up): every other row and
    column, in ``x``'s memory layout.

    Not the mean of each 2 x 2: averaging quarters the variance of whatever is fine-grained (grain,
    noise, fine texture), and the statistics of the smaller picture follow. On a noise-like latent
    (the real-size VAE with random weights) the tiles decoded with averaged statistics came out at
    14 dB PSNR from the untiled decode, against 35 dB for tiles on their own statistics; on the
    fixture VAE a subsample's statistics were nearer than the average's on the photo's latent as
    well as on noise (docs/benchmarks.md)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last_3d)
    return x[..., ::2, ::2].clone(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
