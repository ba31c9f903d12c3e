"""Chunks of work: a few temporal windows each, fixed by the video and the settings alone.

The pipeline's plan cuts the clip into overlapping temporal windows; ``plan_chunks`` groups
consecutive windows into chunks. Two neighbouring chunks share exactly the frames that their
boundary windows share. A chunk's share of a frame is the sum of its windows' shares in the
pipeline's own fold, so the chunk boundary adds no seam and no blend rule of its own. Nothing here
depends on how many workers there are: that is what makes 1 GPU, N GPUs, a resumed run and a shard
agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seedvr_cli.errors import UsageError


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work for a worker.

    ``read_start:read_stop`` are the input frames the worker decodes (the output range plus any
    context); ``out_start:out_stop`` the output frames it returns, exactly ``out_stop - out_start``
    of them. ``weights[i]`` is this chunk's share of output frame ``out_start + i`` in the final
    blend; the shares of all chunks covering a frame sum to 1. The first ``shared_head`` and the
    last ``shared_tail`` frames are also covered by the previous / next chunk: the worker returns
    those as weighted partial sums for the assembler to add up (``spill.ChunkFrames``). ``windows``
    are the pipeline's window objects in absolute frame positions (opaque here): the processor must
    derive noise and every other per-window choice from them and ``index``, never from the worker
    or run order.
    """

    index: int
    read_start: int
    read_stop: int
    out_start: int
    out_stop: int
    weights: tuple[float, ...]
    shared_head: int
    shared_tail: int
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


def shared_frames(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(head, tail)`` of each chunk span: its first frames the previous chunk also covers, its
    last ones the next chunk covers.

    With overlaps above half a chunk the two meet; the tail is then cut to what the head leaves
    (``head + tail <= frames``): every frame of such a chunk is shared either way.
    """
    shared = []
    for k, (start, stop) in enumerate(spans):
        head = spans[k - 1][1] - start if k > 0 else 0
        tail = stop - spans[k + 1][0] if k + 1 < len(spans) else 0
        shared.append((head, min(tail, stop - start - head)))
    return shared


def plan_chunks(
    windows: Sequence[Any],
    *,
    windows_per_chunk: int,
    shares: Callable[[range, int, int], Sequence[float]],
    context: int = 0,
) -> list[ChunkTask]:
    """Group consecutive temporal windows into overlapping chunks.

    ``windows``: the plan's windows in frame order, each a ``(start, stop)`` pair or an object with
    ``start``/``stop``; starts and stops must both increase and leave no gap.
    ``shares(window_indices, start, stop)`` gives the share of frames ``[start, stop)`` that those
    windows hold together in the pipeline's blend (``TemporalPlan.chunk_shares``). ``context``
    extra input frames are read on each side (clipped to the clip). An empty clip gives no chunks.
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

    groups = [range(i, min(i + windows_per_chunk, len(bounds))) for i in range(0, len(bounds), windows_per_chunk)]
    spans = [(bounds[g[0]][0], bounds[g[-1]][1]) for g in groups]
    tasks = []
    for k, (group, (out_start, out_stop), (head, tail)) in enumerate(zip(groups, spans, shared_frames(spans))):
        weights = tuple(float(w) for w in shares(group, out_start, out_stop))
        if len(weights) != out_stop - out_start:
            raise ValueError(f"shares of chunk {k}: {len(weights)} values for {out_stop - out_start} frames")
        tasks.append(ChunkTask(
            index=k,
            read_start=max(0, out_start - context),
            read_stop=min(total, out_stop + context),
            out_start=out_start,
            out_stop=out_stop,
            weights=weights,
            shared_head=head,
            shared_tail=tail,
            windows=tuple(windows[i] for i in group),
        ))
    return tasks


def total_frames(tasks: Sequence[ChunkTask]) -> int:
    return tasks[-1].out_stop if tasks else 0


def owned_frames(tasks: Sequence[ChunkTask], k: int) -> int:
    """Frames that chunk ``k`` is the first to cover: a partition of the clip used for progress."""
    stop = tasks[k + 1].out_start if k + 1 < len(tasks) else tasks[k].out_stop
    return stop - tasks[k].out_start


def validate_tasks(tasks: Sequence[ChunkTask]) -> None:
    """The assembler's assumptions: indices 0..n-1 in order; starts and stops increase with no gap;
    the shared frames are those the neighbours cover."""
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
    for task, (head, tail) in zip(tasks, shared_frames([(t.out_start, t.out_stop) for t in tasks])):
        if (task.shared_head, task.shared_tail) != (head, tail):
            raise ValueError(f"chunk {task.index}: {task.shared_head} head and {task.shared_tail} tail frames "
                             f"marked shared, but its neighbours cover {head} and {tail}")


def plan_digest(tasks: Sequence[ChunkTask]) -> str:
    """Hash of what the assembler relies on (ranges and weights), part of the resume key."""
    payload = [[t.read_start, t.read_stop, t.out_start, t.out_stop, list(t.weights)] for t in tasks]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def shard_indices(tasks: Sequence[ChunkTask], shard: int, count: int) -> list[int]:
    """Chunk indices of shard ``shard`` of ``count``: a contiguous block, sizes differing by at most one."""
    n = len(tasks)
    return list(range(shard * n // count, (shard + 1) * n // count))
