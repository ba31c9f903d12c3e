"""Temporal plan: which frames each window encodes, and how window outputs become output frames.

Timeline: the ``prepend`` mirrored frames come first, then the ``num_frames`` input frames
(``N = prepend + num_frames``). Window ``k`` covers ``[k*step, min(k*step + batch_size, N))`` of
that timeline, ``step = batch_size - overlap``, and is padded at its end to 4n+1 frames with the
reference padding function (docs/reference-behaviour.md R6, R7). A window's input is fully described by
``plan.window_input_frames(window)`` (input frame indices, padding included), and its noise by
its ``start``, so windows are independent units of work: any device, any order. The plan never
depends on the number of devices.

Output frame ``i`` is timeline frame ``prepend + i``; ``plan.contributions(i)`` lists
``(window, local frame, weight)`` so that assembly is a weighted sum (``blend.assemble``).
Overlapping windows are folded in window order exactly like numz writes them: the later window's
first ``overlap`` frames are blended into what is already there (``blend.fold_shares``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from seedvr_cli.errors import UsageError
from seedvr_cli.pipeline.blend import BLEND_MODES, blend_weights, fold_shares, summed_shares


def append_padding(length: int, count: int) -> list[int]:
    """Indices of ``count`` frames appended to a ``length``-frame clip (reference padding function).

    Fewer than ``length``: a mirror without repeating the last frame (t=6, 3 -> 4 3 2). Otherwise
    the reference's non-mirror sequence: frames ``length-1 .. 1`` then the last frame repeated
    (t=3, 4 -> 2 1 2 2; a reference quirk, kept so padded windows encode the same pixels as numz).
    """
    if count <= 0:
        return []
    if count < length:
        return [length - 2 - i for i in range(count)]
    return list(range(length - 1, 0, -1)) + [length - 1] * (count - length + 1)


def prepend_padding(length: int, count: int) -> list[int]:
    """Indices of ``count`` frames put before a ``length``-frame clip (``--prepend-frames``).

    ``count < length``: ``count, ..., 1`` (a mirror of the start). Otherwise the reference gives the
    last frame repeated, then ``length-1 .. 1`` (T=3, p=4 -> 2 2 2 1).
    """
    if count <= 0:
        return []
    if count < length:
        return list(range(count, 0, -1))
    return [length - 1] * (count - length + 1) + list(range(length - 1, 0, -1))


def padded_length(length: int) -> int:
    """Smallest 4n+1 >= ``length`` (the VAE maps 4n+1 frames to n+1 latents)."""
    return length if length % 4 == 1 else 4 * ((length - 1) // 4 + 1) + 1


@dataclass(frozen=True)
class Contribution:
    """Output frame share: ``weight * output_of(window)[local]``."""

    window: int
    local: int
    weight: float


@dataclass(frozen=True)
class Window:
    """One unit of work: timeline frames ``[start, stop)``, padded to ``len(source)`` = 4n+1."""

    index: int
    start: int
    stop: int
    # Timeline frame encoded at each padded position (real frames first, then padding).
    source: tuple[int, ...]
    # Timeline frames this window writes without blending (numz ``decode_batch_info`` slice).
    write_start: int

    @property
    def length(self) -> int:
        """Real (unpadded) frames; decoded output is trimmed to this many."""
        return self.stop - self.start

    @property
    def padded_length(self) -> int:
        return len(self.source)

    @property
    def latent_frames(self) -> int:
        return (self.padded_length - 1) // 4 + 1


@dataclass(frozen=True)
class TemporalPlan:
    """Windows over the timeline (prepended frames + input frames) and how they make the output.

    Built by :func:`plan_windows`; depends only on the clip length and the settings.
    """

    num_frames: int
    batch_size: int
    overlap: int
    prepend: int
    blend: str
    windows: tuple[Window, ...]
    # Each window's share of each of its real frames; derived from the fields above.
    _shares: tuple[np.ndarray, ...] = field(repr=False, compare=False)

    @property
    def timeline_length(self) -> int:
        return self.prepend + self.num_frames

    @property
    def step(self) -> int:
        return self.batch_size - self.overlap

    @cached_property
    def _prepended(self) -> tuple[int, ...]:
        return tuple(prepend_padding(self.num_frames, self.prepend))

    def input_index(self, timeline_index: int) -> int:
        """Input frame shown at a timeline position (prepended positions map to mirrored frames)."""
        if not 0 <= timeline_index < self.timeline_length:
            raise IndexError(f"timeline frame {timeline_index} outside [0, {self.timeline_length})")
        if timeline_index < self.prepend:
            return self._prepended[timeline_index]
        return timeline_index - self.prepend

    def window_input_frames(self, window: Window) -> list[int]:
        """Input frame indices to feed ``window``, padding included (length 4n+1)."""
        return [self.input_index(j) for j in window.source]

    def windows_covering(self, timeline_index: int) -> range:
        """Indices of the windows whose real frames include ``timeline_index``."""
        first = max(0, -(-(timeline_index - self.batch_size + 1) // self.step))
        last = min(len(self.windows) - 1, timeline_index // self.step)
        return range(first, last + 1)

    def window_shares(self, index: int) -> np.ndarray:
        """Window ``index``'s share of each of its real frames (float64, read-only)."""
        return self._shares[index]

    def chunk_shares(self, window_indices: Sequence[int], start: int, stop: int) -> np.ndarray:
        """Share of timeline frames ``[start, stop)`` held by these windows together (the sum of theirs)."""
        spans = [(w.start, w.stop) for w in self.windows]
        return summed_shares(spans, self._shares, window_indices, start, stop)

    def timeline_contributions(self, timeline_index: int) -> list[Contribution]:
        """Shares of the covering windows, folded in window order as numz writes them (zeros kept)."""
        contributions = []
        for k in self.windows_covering(timeline_index):
            local = timeline_index - self.windows[k].start
            contributions.append(Contribution(window=k, local=local, weight=float(self._shares[k][local])))
        return contributions

    def contributions(self, output_index: int) -> list[Contribution]:
        """How output frame ``output_index`` (prepended frames excluded) is made from window outputs."""
        if not 0 <= output_index < self.num_frames:
            raise IndexError(f"output frame {output_index} outside [0, {self.num_frames})")
        return self.timeline_contributions(self.prepend + output_index)

    def ready_output_frames(self, windows_done: int) -> range:
        """Output frames that are final once windows ``0 .. windows_done-1`` have finished."""
        if windows_done >= len(self.windows):
            return range(self.num_frames)
        if windows_done <= 0:
            return range(0)
        final_until = self.windows[windows_done].start  # later windows only touch frames from here on
        return range(max(0, min(self.num_frames, final_until - self.prepend)))


def plan_windows(
    num_frames: int,
    *,
    batch_size: int,
    overlap: int = 0,
    prepend: int = 0,
    uniform: bool = False,
    blend: str = "crossfade",
    reference: bool = False,
) -> TemporalPlan:
    """Temporal windows for ``num_frames`` input frames.

    ``reference=True`` accepts numz's settings as numz does (any batch size, padded to 4n+1
    inside each window; an overlap >= batch size silently becomes 0) for parity. Otherwise the
    settings must already be valid (``config.ProcessSettings`` checks them and says how to fix
    them); this only guards the contract. ``uniform`` pads a short last window up to
    ``batch_size`` first.
    """
    if num_frames < 1:
        raise UsageError("the input has no frames")
    if blend not in BLEND_MODES or prepend < 0 or overlap < 0:
        raise ValueError(f"blend {blend!r}, prepend {prepend}, overlap {overlap}: need a known blend and counts >= 0")
    if reference:
        if batch_size < 1:
            raise ValueError(f"windows of {batch_size} frames")
        if overlap >= batch_size:
            overlap = 0
    elif batch_size < 1 or batch_size % 4 != 1 or overlap >= batch_size:
        raise ValueError(f"windows of {batch_size} frames overlapping by {overlap}: need 4n+1 frames and a smaller overlap")

    total = prepend + num_frames
    step = batch_size - overlap
    windows: list[Window] = []
    for start in range(0, total, step):
        stop = min(start + batch_size, total)
        if windows and stop - start <= overlap:
            break
        local = list(range(stop - start))
        if uniform and len(local) < batch_size:
            local += append_padding(len(local), batch_size - len(local))
        local += [local[i] for i in append_padding(len(local), padded_length(len(local)) - len(local))]
        write_start = start + (overlap if windows else 0)
        windows.append(Window(len(windows), start, stop, tuple(start + i for i in local), write_start))

    shares = fold_shares([(w.start, w.stop) for w in windows], lambda length: blend_weights(length, blend).tolist())
    return TemporalPlan(num_frames, batch_size, overlap, prepend, blend, tuple(windows), tuple(shares))
