"""Temporal segments: a clip cut into overlapping runs of frames, each streamed on its own.

Segment ``k`` covers frames ``[k*step, min(k*step + segment_frames, N))``, ``step =
segment_frames - overlap`` (the standalone CLI's ``--segment_overlap`` frames are shared); a last
segment that would add nothing beyond the overlap is not made. Each segment starts its streaming
state afresh (KV cache, LQ projector, decoder memory, noise from the seed), so it is an
independent unit of work: any device, any order. Shared frames are crossfaded with the pipeline's
one fold (``pipeline.blend``), where the standalone CLI cuts hard at the middle of each overlap.
The plan depends on the clip's length and the settings only, never on the number of devices
(the standalone CLI cuts one segment per GPU, so its pixels change with the GPU count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from seedvr_cli.pipeline.blend import blend_weights, fold_shares, summed_shares


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, stop)`` of the clip, streamed in one piece."""

    index: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SegmentPlan:
    """The segments of one clip and each one's share of its frames in the crossfade."""

    num_frames: int
    segment_frames: int
    overlap: int
    segments: tuple[Segment, ...]
    _shares: tuple[np.ndarray, ...] = field(repr=False, compare=False)
    # Nothing is put before the clip (the run code drops this many leading frames).
    prepend: int = 0

    @property
    def windows(self) -> tuple[Segment, ...]:
        """The segments under the name the chunk planner and the run code use for units of work."""
        return self.segments

    def segment_shares(self, index: int) -> np.ndarray:
        """Segment ``index``'s share of each of its frames (float64, read-only)."""
        return self._shares[index]

    def chunk_shares(self, indices: Sequence[int], start: int, stop: int) -> np.ndarray:
        spans = [(s.start, s.stop) for s in self.segments]
        return summed_shares(spans, self._shares, indices, start, stop)


def plan_segments(num_frames: int, *, segment_frames: int, overlap: int) -> SegmentPlan:
    if num_frames < 1:
        raise ValueError("a clip without frames")
    if segment_frames < 1 or not 0 <= overlap < segment_frames:
        raise ValueError(f"segments of {segment_frames} frames sharing {overlap}")
    step = segment_frames - overlap
    segments: list[Segment] = []
    for start in range(0, num_frames, step):
        stop = min(start + segment_frames, num_frames)
        if segments and stop - start <= overlap:
            break
        segments.append(Segment(len(segments), start, stop))
    spans = [(s.start, s.stop) for s in segments]
    shares = fold_shares(spans, lambda length: blend_weights(length, "crossfade").tolist())
    return SegmentPlan(num_frames, segment_frames, overlap, tuple(segments), tuple(shares))
