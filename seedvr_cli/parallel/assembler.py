"""Streaming assembly: blend finished chunks in frame order and feed the sink as soon as frames are final.

A frame is final once every chunk covering it is finished; chunks arrive in any order. Where
chunks overlap, each holds its pre-weighted float32 partial sum of the frame: the output is their
sum (in chunk order, so it never depends on timing) quantised once, with the same function the
workers quantise their own frames with. Elsewhere a chunk's frames pass through untouched. Only the
frames of one write batch are ever in memory, whatever the length of the clip.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from seedvr_cli.parallel.spill import SpillReader
from seedvr_cli.parallel.tasks import ChunkTask, validate_tasks
from seedvr_cli.parallel.timeline import Timeline
from seedvr_cli.pipeline.quantize import quantize

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


class FrameSink(Protocol):
    """Where assembled frames go (the media writer satisfies it).

    ``write`` receives uint8/uint16 numpy arrays ``[n, H, W, C]`` in frame order; ``close`` is
    called once after the last frame (finish the file), ``abort`` instead when the run fails
    (drop the partial file). The engine owns these calls.
    """

    def write(self, frames: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def quantize_partials(total: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Summed float32 partials ``[n, H, W, C]`` -> final uint8/uint16 frames."""
    return quantize(torch.from_numpy(total), _TORCH_DTYPES[np.dtype(dtype)]).numpy()


class Assembler:
    """Turns finished chunks (``add``) into sink writes (``pump``), in frame order.

    ``open_chunk(i)`` gives a reader of chunk ``i``'s frames; ``release(i)`` is called once chunk
    ``i`` is fully written (e.g. to delete its spill file when not resuming).
    """

    def __init__(
        self,
        tasks: Sequence[ChunkTask],
        open_chunk: Callable[[int], SpillReader],
        sink: FrameSink,
        *,
        release: Callable[[int], None] | None = None,
        batch_bytes: int = 64 << 20,
    ) -> None:
        validate_tasks(tasks)
        self.tasks = list(tasks)
        self.total = self.tasks[-1].out_stop if self.tasks else 0
        self._open_chunk = open_chunk
        self._release = release
        self.sink = sink
        self.batch_bytes = batch_bytes
        self._done: set[int] = set()
        self._frontier = 0  # lowest chunk not finished yet
        self._low = 0  # lowest chunk not fully written yet
        self._readers: dict[int, SpillReader] = {}
        self._frame_format: tuple[tuple[int, ...], np.dtype] | None = None
        self.frames_written = 0
        self.cancelled = False
        self.timeline = Timeline("parent")

    @property
    def next_chunk(self) -> int:
        """Lowest chunk whose frames are not all written (the in-flight window starts here)."""
        return self._low

    @property
    def complete(self) -> bool:
        return self.frames_written == self.total

    def add(self, index: int) -> None:
        self._done.add(index)
        while self._frontier < len(self.tasks) and self._frontier in self._done:
            self._frontier += 1

    def _reader(self, index: int) -> SpillReader:
        reader = self._readers.get(index)
        if reader is None:
            reader = self._open_chunk(index)
            task = self.tasks[index]
            if reader.frames != task.out_frames:
                raise ValueError(f"chunk {index} holds {reader.frames} frames, expected {task.out_frames}")
            if (reader.head, reader.tail) != (task.shared_head, task.shared_tail):
                raise ValueError(f"chunk {index} holds {reader.head} head and {reader.tail} tail partials, "
                                 f"expected {task.shared_head} and {task.shared_tail}")
            frame_format = (tuple(reader.shape[1:]), reader.dtype)
            if self._frame_format is None:
                self._frame_format = frame_format
            elif frame_format != self._frame_format:
                raise ValueError(f"chunk {index} has frames {frame_format}, earlier chunks {self._frame_format}")
            self._readers[index] = reader
        return reader

    def _frames(self, contributors: list[int], start: int, stop: int) -> np.ndarray:
        """Final frames ``[start, stop)``, all covered by exactly ``contributors``."""
        offsets = [self.tasks[k].out_start for k in contributors]
        if len(contributors) == 1:
            return self._reader(contributors[0]).read_body(start - offsets[0], stop - offsets[0])
        total = self._reader(contributors[0]).read_partials(start - offsets[0], stop - offsets[0])
        for k, offset in zip(contributors[1:], offsets[1:]):
            total += self._reader(k).read_partials(start - offset, stop - offset)
        return quantize_partials(total, self._reader(contributors[0]).dtype)

    def pump(self) -> int:
        """Write every frame that is final now; returns how many were written."""
        limit = self.tasks[self._frontier].out_start if self._frontier < len(self.tasks) else self.total
        written = 0
        while self.frames_written < limit and not self.cancelled:
            cursor = self.frames_written
            # Chunks covering the cursor: from the lowest unfinished one up to the last that started.
            contributors = [self._low]
            while contributors[-1] + 1 < len(self.tasks) and self.tasks[contributors[-1] + 1].out_start <= cursor:
                contributors.append(contributors[-1] + 1)
            after = contributors[-1] + 1
            segment_end = min(self.tasks[self._low].out_stop,
                              self.tasks[after].out_start if after < len(self.tasks) else self.total)
            first = self._reader(self._low)
            frame_bytes = first.frame_bytes if len(contributors) == 1 else first.partial_frame_bytes
            batch = max(1, self.batch_bytes // frame_bytes)
            stop = min(limit, segment_end, cursor + batch)
            with self.timeline.span("spill_read", self._low):
                frames = self._frames(contributors, cursor, stop)
            with self.timeline.span("write", self._low):
                self.sink.write(frames)
            self.frames_written = stop
            written += stop - cursor
            while self._low < len(self.tasks) and self.tasks[self._low].out_stop <= stop:
                self._readers.pop(self._low).close()
                if self._release is not None:
                    self._release(self._low)
                self._low += 1
        return written

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


class BackgroundAssembler:
    """Runs an ``Assembler`` on a thread so that slow encoding never stalls handing out chunks."""

    def __init__(self, assembler: Assembler, on_written: Callable[[int], None] | None = None) -> None:
        self.assembler = assembler
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._on_written = on_written
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="seedvr-assembler", daemon=True)
        self._thread.start()

    @property
    def next_chunk(self) -> int:
        return self.assembler.next_chunk

    @property
    def frames_written(self) -> int:
        return self.assembler.frames_written

    def add(self, index: int) -> None:
        self._queue.put(index)

    def _loop(self) -> None:
        while True:
            index = self._queue.get()
            if index is None:
                return
            if self.error is not None:
                continue
            try:
                self.assembler.add(index)
                if self.assembler.pump() and self._on_written is not None:
                    self._on_written(self.assembler.frames_written)
            except BaseException as exc:  # handed to the main thread, which fails the run
                self.error = exc

    def finish(self) -> None:
        """Wait until every added chunk is written; re-raise a failure of the writer thread."""
        self._queue.put(None)
        self._thread.join()
        self.assembler.close()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.assembler.cancelled = True
        self._queue.put(None)
        self._thread.join()
        self.assembler.close()
