"""Chunks of work: a few temporal windows each, fixed by the video and the settings alone.

The pipeline's plan cuts the clip into overlapping temporal windows; ``plan_chunks`` groups
consecutive windows into chunks. Two neighbouring chunks share exactly the frames that their
boundary windows share, and those frames are blended by the assembler with the pipeline's own
window-overlap rule, so the chunk boundary adds no seam of its own. Nothing here depends on how
many workers there are: that is what makes 1 GPU, N GPUs, a resumed run and a shard agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seedvr_cli.errors import UsageError


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work for a worker.

    ``read_start:read_stop`` are the input frames the worker decodes (the output range plus any
    context); ``out_start:out_stop`` the output frames it returns, exactly ``out_stop - out_start``
    of them. ``weights[i]`` is this chunk's share of output frame ``out_start + i`` in the final
    blend; the shares of all chunks covering a frame sum to 1. ``windows`` are the pipeline's
    window objects in absolute frame positions (opaque here): the processor must derive noise and
    every other per-window choice from them and ``index``, never from the worker or run order.
    """

    index: int
    read_start: int
    read_stop: int
    out_start: int
    out_stop: int
    weights: tuple[float, ...]
    windows: tuple[Any, ...] = ()

    @property
    def out_frames(self) -> int:
        return self.out_stop - self.out_start

    @property
    def read_frames(self) -> int:
        return self.read_stop - self.read_start


def _bounds(window: Any) -> tuple[int, int]:
    if isinstance(window, tuple):
        return int(window[0]), int(window[1])
    return int(window.start), int(window.stop)


def linear_crossfade(length: int) -> np.ndarray:
    """Weights of the *earlier* side over an overlap of ``length`` frames: 1 -> 0 excluding the ends.

    A stand-in for the pipeline's own overlap rule (``plan_chunks(blend=...)``) used by tests.
    """
    return ((length - np.arange(length, dtype=np.float64)) / (length + 1)).astype(np.float32)


def plan_chunks(
    windows: Sequence[Any],
    *,
    windows_per_chunk: int = 4,
    blend: Callable[[int], Sequence[float]] = linear_crossfade,
    context: int = 0,
) -> list[ChunkTask]:
    """Group consecutive temporal windows into overlapping chunks.

    ``windows``: the plan's windows in frame order, each a ``(start, stop)`` pair or an object with
    ``start``/``stop``; starts and stops must both increase and leave no gap. ``blend(L)`` gives
    the weight of everything before a chunk for each of the ``L`` frames where the chunk overlaps
    its predecessor (the chunk itself gets ``1 - w``); pass the pipeline's window-overlap rule.
    Frames covered by more than two chunks (overlap above half a window) are folded in chunk
    order, as the pipeline folds windows. ``context`` extra input frames are read on each side
    (clipped to the clip). An empty clip gives no chunks.
    """
    if windows_per_chunk < 1:
        raise UsageError(f"chunk size must be at least one window, got {windows_per_chunk}")
    if not windows:
        return []
    bounds = [_bounds(w) for w in windows]
    if bounds[0][0] != 0:
        raise ValueError(f"the first window must start at frame 0, not {bounds[0][0]}")
    for (start, stop), (next_start, next_stop) in zip(bounds, bounds[1:]):
        if not (start < next_start <= stop < next_stop):
            raise ValueError(f"windows {start}:{stop} and {next_start}:{next_stop} do not advance contiguously")
    total = bounds[-1][1]

    groups = [list(range(i, min(i + windows_per_chunk, len(bounds)))) for i in range(0, len(bounds), windows_per_chunk)]
    spans = [(bounds[g[0]][0], bounds[g[-1]][1]) for g in groups]
    weights = _fold_weights(spans, blend)
    return [
        ChunkTask(
            index=k,
            read_start=max(0, out_start - context),
            read_stop=min(total, out_stop + context),
            out_start=out_start,
            out_stop=out_stop,
            weights=tuple(float(w) for w in weights[k]),
            windows=tuple(windows[i] for i in group),
        )
        for k, (group, (out_start, out_stop)) in enumerate(zip(groups, spans))
    ]


def _fold_weights(spans: Sequence[tuple[int, int]], blend: Callable[[int], Sequence[float]]) -> list[np.ndarray]:
    """Each chunk's share of each of its frames.

    Chunk ``j`` enters over ``L_j = stop_{j-1} - start_j`` frames: at its local frame ``i < L_j``
    everything accumulated so far is scaled by ``e = blend(L_j)[i]`` and the chunk adds ``1 - e``.
    """
    weights = [np.ones(stop - start, dtype=np.float64) for start, stop in spans]
    for j in range(1, len(spans)):
        start, _ = spans[j]
        entering = spans[j - 1][1] - start
        earlier = np.clip(np.asarray(blend(entering), dtype=np.float64), 0.0, 1.0)
        if earlier.shape != (entering,):
            raise ValueError(f"blend({entering}) gave {earlier.shape[0] if earlier.ndim else 0} weights")
        for i in range(entering):
            frame = start + i
            for k in range(j - 1, -1, -1):  # every earlier chunk still covering this frame
                if spans[k][1] <= frame:
                    break
                weights[k][frame - spans[k][0]] *= earlier[i]
            weights[j][i] = 1.0 - earlier[i]
    return [w.astype(np.float32) for w in weights]


def total_frames(tasks: Sequence[ChunkTask]) -> int:
    return tasks[-1].out_stop if tasks else 0


def owned_frames(tasks: Sequence[ChunkTask], k: int) -> int:
    """Frames that chunk ``k`` is the first to cover: a partition of the clip used for progress."""
    stop = tasks[k + 1].out_start if k + 1 < len(tasks) else tasks[k].out_stop
    return stop - tasks[k].out_start


def validate_tasks(tasks: Sequence[ChunkTask]) -> None:
    """The assembler's assumptions: indices 0..n-1 in order; starts and stops increase with no gap."""
    for k, task in enumerate(tasks):
        if task.index != k:
            raise ValueError(f"chunk {task.index} is at position {k}; chunks must be numbered in order")
        if len(task.weights) != task.out_frames or task.out_frames <= 0:
            raise ValueError(f"chunk {k}: {len(task.weights)} weights for {task.out_frames} output frames")
    if tasks and tasks[0].out_start != 0:
        raise ValueError("the first chunk must start at output frame 0")
    for a, b in zip(tasks, tasks[1:]):
        if not (a.out_start < b.out_start <= a.out_stop < b.out_stop):
            raise ValueError(f"chunks {a.index} and {b.index} do not advance contiguously")


def plan_digest(tasks: Sequence[ChunkTask]) -> str:
    """Hash of what the assembler relies on (ranges and weights), part of the resume key."""
    payload = [[t.read_start, t.read_stop, t.out_start, t.out_stop, list(t.weights)] for t in tasks]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def shard_indices(tasks: Sequence[ChunkTask], shard: int, count: int) -> list[int]:
    """Chunk indices of shard ``shard`` of ``count``: a contiguous block, sizes differing by at most one."""
    n = len(tasks)
    return list(range(shard * n // count, (shard + 1) * n // count))
