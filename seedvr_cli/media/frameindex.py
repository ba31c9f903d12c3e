"""The presentation timestamp of every frame of a video stream, found by demuxing without decoding.

Frame ``i`` of a video is the ``i``-th frame a full decode from the start returns, which is the frame
with the ``i``-th smallest presentation timestamp. Knowing every timestamp (and which frames are
keyframes) lets a reader seek to a keyframe and decode forward to any index exactly, lets workers
agree on frame numbers without talking, and lets writers keep variable frame rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class FrameIndex:
    """Sorted per-frame timestamps of one video stream, in ``time_base`` units.

    ``end_pts`` is where the last frame stops showing, so ``end_pts - pts[0]`` is the stream duration.
    The index is small (two int64 arrays) and picklable: the main process builds it once and hands
    it to every worker's reader so nobody scans the file twice.
    """

    pts: np.ndarray
    keyframe_pts: np.ndarray
    time_base: Fraction
    end_pts: int

    def __len__(self) -> int:
        return int(self.pts.shape[0])

    @property
    def durations(self) -> np.ndarray:
        """How long each frame shows, in ``time_base`` units."""
        return np.diff(np.append(self.pts, self.end_pts))

    @property
    def duration_seconds(self) -> float:
        if len(self) == 0:
            return 0.0
        return float((self.end_pts - int(self.pts[0])) * self.time_base)

    @property
    def is_vfr(self) -> bool:
        return steps_vary(np.diff(self.pts), self.time_base)

    def average_rate(self) -> Fraction | None:
        if len(self) < 2:
            return None
        span = (int(self.pts[-1]) - int(self.pts[0])) * self.time_base
        return Fraction(len(self) - 1) / span if span > 0 else None

    def index_of(self, pts: int | None) -> int | None:
        """Frame number of a decoded frame's timestamp, or None when it is not in the index."""
        if pts is None:
            return None
        position = int(np.searchsorted(self.pts, pts))
        if position < len(self) and int(self.pts[position]) == pts:
            return position
        return None

    def keyframe_at_or_before(self, pts: int) -> int | None:
        position = int(np.searchsorted(self.keyframe_pts, pts, side="right")) - 1
        return int(self.keyframe_pts[position]) if position >= 0 else None

    def keyframe_before(self, pts: int) -> int | None:
        """The keyframe strictly before ``pts``: where to retry when a seek lands too late."""
        position = int(np.searchsorted(self.keyframe_pts, pts, side="left")) - 1
        return int(self.keyframe_pts[position]) if position >= 0 else None


def steps_vary(steps: np.ndarray, time_base: Fraction) -> bool:
    """True when frame steps differ by more than rounding: a tick, or a millisecond (as in
    Matroska's 1/1000 time base, where 29.97 fps is stored as steps of 33 and 34)."""
    if steps.size == 0:
        return False
    tolerance = max(1, int(Fraction(1, 1000) / time_base))
    return int(steps.max() - steps.min()) > tolerance


def scan_frame_index(container, stream) -> FrameIndex | None:
    """Demux (not decode) ``stream`` from the start and index its frames.

    Returns None when the stream cannot be indexed by timestamps (packets without pts, as in raw
    elementary streams, or duplicate timestamps); callers then count frames by decoding.
    Packets the demuxer marks as discarded (cut by an edit list) or empty produce no frame.
    """
    pts_values: list[int] = []
    keyframes: list[int] = []
    durations: dict[int, int] = {}
    for packet in container.demux(stream):
        if packet.size == 0 or packet.is_discard or packet.is_corrupt:
            continue
        if packet.pts is None:
            return None
        pts_values.append(packet.pts)
        if packet.duration:
            durations[packet.pts] = packet.duration
        if packet.is_keyframe:
            keyframes.append(packet.pts)
    pts = np.array(sorted(pts_values), dtype=np.int64)
    if pts.size and np.any(np.diff(pts) == 0):
        return None
    if not pts.size:
        return FrameIndex(pts, np.array([], dtype=np.int64), Fraction(stream.time_base), 0)
    last = int(pts[-1])
    last_duration = durations.get(last)
    if not last_duration:
        steps = np.diff(pts)
        last_duration = int(np.median(steps)) if steps.size else _nominal_duration(stream)
    keyframe_pts = np.array(sorted(keyframes), dtype=np.int64)
    if not keyframe_pts.size or keyframe_pts[0] > pts[0]:
        # Some demuxers flag no keyframes; the first frame is always a safe place to start.
        keyframe_pts = np.insert(keyframe_pts, 0, pts[0])
    return FrameIndex(pts, keyframe_pts, Fraction(stream.time_base), last + int(last_duration))


def _nominal_duration(stream) -> int:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        return 1
    return max(1, round(1 / (Fraction(rate) * Fraction(stream.time_base))))


def constant_rate_index(count: int, fps: Fraction) -> FrameIndex:
    """Timestamps for frames without any of their own (images, sequences, raw streams)."""
    time_base = 1 / fps
    pts = np.arange(count, dtype=np.int64)
    return FrameIndex(pts, pts.copy(), time_base, count)
