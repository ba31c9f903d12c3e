"""Finished chunks on disk: written atomically by workers, read back frame ranges at a time.

Chunks travel from worker to parent through the job's work directory rather than a pipe: the
parent never holds more than the frames it is blending, and the same files are the resume journal's
payload. A spill file is three ``.npy`` arrays back to back (``ChunkFrames``): the float32 partial
sums of the frames shared with the previous chunk, the final integer frames only this chunk covers,
and the partial sums of the frames shared with the next chunk. All three are always written, empty
or not, so the body's dtype is always known. Reading uses plain seeks instead of a memory map, so
pages of finished chunks never count toward (or linger in) the parent's resident memory.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seedvr_cli.arrays import as_numpy
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.system import process_alive

_OUTPUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_PARTIAL_DTYPE = np.dtype(np.float32)
# Render-farm shards on several machines share a work directory: temporary files name their host,
# so that each machine only ever judges (and removes) the leftovers of its own processes.
_HOST = socket.gethostname().replace("/", "_") or "host"


def spill_name(index: int) -> str:
    """File name of chunk ``index`` inside a work directory (workers and the journal agree on it)."""
    return f"chunk-{index:06d}.npy"


@dataclass(frozen=True)
class ChunkFrames:
    """A finished chunk: ``head``, ``body`` and ``tail`` frames ``[n, H, W, C]``, in frame order.

    ``body`` holds the frames only this chunk covers, final (uint8/uint16). ``head`` and ``tail``
    hold the frames the previous / next chunk also covers (``task.shared_head/shared_tail``) as
    float32 partial sums in [0, 1] units, already weighted by this chunk's shares and not
    renormalised: the assembler adds up the partials of every chunk covering a frame and quantises
    once, so an overlap is rounded a single time.
    """

    head: np.ndarray
    body: np.ndarray
    tail: np.ndarray

    @classmethod
    def whole(cls, body: np.ndarray) -> ChunkFrames:
        """A chunk that shares no frame with another: all body."""
        empty = np.zeros((0, *body.shape[1:]), dtype=_PARTIAL_DTYPE)
        return cls(empty, body, empty)

    @property
    def frames(self) -> int:
        return self.head.shape[0] + self.body.shape[0] + self.tail.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.frames, *self.body.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.body.dtype


def as_frames(output: Any, task: ChunkTask) -> ChunkFrames:
    """A processor's output for ``task`` as checked, C-contiguous numpy ``ChunkFrames`` (torch accepted).

    A plain uint8/uint16 ``[n, H, W, C]`` array stands for a chunk's final frames, which is only
    right when it shares none with its neighbours.
    """
    if isinstance(output, ChunkFrames):
        chunk = ChunkFrames(as_numpy(output.head), as_numpy(output.body), as_numpy(output.tail))
    else:
        if task.shared_head or task.shared_tail:
            raise ValueError(f"chunk {task.index} shares {task.shared_head} + {task.shared_tail} frames with its "
                             "neighbours: return ChunkFrames with their weighted partial sums, not final frames")
        chunk = ChunkFrames.whole(as_numpy(output))
    for name, part, dtypes in (("head", chunk.head, (_PARTIAL_DTYPE,)), ("body", chunk.body, _OUTPUT_DTYPES),
                               ("tail", chunk.tail, (_PARTIAL_DTYPE,))):
        if part.ndim != 4:
            raise ValueError(f"processor returned {name} of shape {tuple(part.shape)}; "
                             "expected [frames, height, width, channels]")
        if part.dtype not in dtypes:
            raise ValueError(f"processor returned {name} as {part.dtype}; expected {' or '.join(map(str, dtypes))}")
        if part.shape[1:] != chunk.body.shape[1:]:
            raise ValueError(f"processor returned {name} frames of {part.shape[1:]}, "
                             f"body frames of {chunk.body.shape[1:]}")
    if chunk.frames != task.out_frames:
        raise ValueError(f"processor returned {chunk.frames} frames, expected {task.out_frames}")
    if (chunk.head.shape[0], chunk.tail.shape[0]) != (task.shared_head, task.shared_tail):
        raise ValueError(f"processor returned {chunk.head.shape[0]} head and {chunk.tail.shape[0]} tail frames, "
                         f"chunk {task.index} shares {task.shared_head} and {task.shared_tail}")
    return chunk


def spill_bytes(task: ChunkTask, frame_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Size of ``task``'s spill file's frames (partials are float32, wider than the body)."""
    shared = task.shared_head + task.shared_tail
    pixels = int(np.prod(frame_shape))
    return pixels * ((task.out_frames - shared) * np.dtype(dtype).itemsize + shared * _PARTIAL_DTYPE.itemsize)


def write_spill(path: Path, chunk: ChunkFrames, *, durable: bool = True) -> None:
    """Write ``chunk`` to ``path`` so that the file either is complete or does not exist.

    ``durable`` also flushes it to the disk before the rename, so that a journaled chunk survives
    a power cut, not only a crash of the process.
    """
    tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        for part in (chunk.head, chunk.body, chunk.tail):
            np.save(handle, part, allow_pickle=False)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_header(handle, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of the ``.npy`` array at the handle's position; skips its data."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if fortran or len(shape) != 4:
        raise ValueError(f"{path}: not a spill file of [n, H, W, C] frames")
    offset = handle.tell()
    handle.seek(offset + int(np.prod(shape)) * dtype.itemsize)
    return shape, dtype, offset


class SpillReader:
    """Random access to the frames of one spill file without mapping it.

    Frame indices are the chunk's own (``0 .. frames``): ``read_partials`` reads float32 partial
    sums of shared frames, ``read_body`` final integer frames.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "rb")
        try:
            head, body, tail = (_read_header(self._handle, path) for _ in range(3))
            end = self._handle.tell()
        except (ValueError, OSError, EOFError) as exc:
            self._handle.close()
            raise ValueError(f"{path}: not a complete spill file ({exc})") from None
        frame = body[0][1:]
        if (head[1], tail[1]) != (_PARTIAL_DTYPE, _PARTIAL_DTYPE) or body[1] not in _OUTPUT_DTYPES \
                or head[0][1:] != frame or tail[0][1:] != frame:
            self._handle.close()
            raise ValueError(f"{path}: not a spill file of float32 partials around uint8/uint16 frames")
        actual = os.fstat(self._handle.fileno()).st_size
        if actual != end:
            self._handle.close()
            raise ValueError(f"{path}: {actual} bytes, expected {end} (truncated spill file)")
        self.head, self.tail = head[0][0], tail[0][0]
        self.dtype: np.dtype = body[1]
        self.shape: tuple[int, int, int, int] = (self.head + body[0][0] + self.tail, *frame)
        self.frame_bytes = int(np.prod(frame)) * self.dtype.itemsize
        self.partial_frame_bytes = int(np.prod(frame)) * _PARTIAL_DTYPE.itemsize
        self._head_offset, self._body_offset, self._tail_offset = head[2], body[2], tail[2]

    @property
    def frames(self) -> int:
        return self.shape[0]

    def _read(self, out: np.ndarray, offset: int) -> None:
        self._handle.seek(offset)
        if self._handle.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise OSError(f"{self.path}: short read at byte {offset}")

    def read_body(self, start: int, stop: int) -> np.ndarray:
        """Final frames ``[start, stop)``, all of them in the body."""
        if not self.head <= start <= stop <= self.frames - self.tail:
            raise ValueError(f"{self.path}: frames {start}:{stop} are not all final "
                             f"(body is {self.head}:{self.frames - self.tail})")
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        self._read(out, self._body_offset + (start - self.head) * self.frame_bytes)
        return out

    def read_partials(self, start: int, stop: int) -> np.ndarray:
        """Partial sums of shared frames ``[start, stop)``, all of them in the head or the tail."""
        tail_start = self.frames - self.tail
        if not 0 <= start <= stop <= self.frames or max(start, self.head) < min(stop, tail_start):
            raise ValueError(f"{self.path}: frames {start}:{stop} are not all shared "
                             f"(head 0:{self.head}, tail {tail_start}:{self.frames})")
        out = np.empty((stop - start, *self.shape[1:]), dtype=_PARTIAL_DTYPE)
        in_head = max(0, min(stop, self.head) - start)
        if in_head:
            self._read(out[:in_head], self._head_offset + start * self.partial_frame_bytes)
        if in_head < out.shape[0]:
            first = start + in_head
            self._read(out[in_head:], self._tail_offset + (first - tail_start) * self.partial_frame_bytes)
        return out

    def close(self) -> None:
        self._handle.close()


def remove_orphan_spills(folder: Path) -> int:
    """Delete half-written spill files whose writer, a process of this machine, is gone (a worker
    killed mid-write); returns how many. Files of live processes and of other machines stay."""
    removed = 0
    for path in Path(folder).glob(".chunk-*.npy.*.tmp"):
        host, _, pid = path.name[: -len(".tmp")].rpartition(".")[2].rpartition("-")
        if host != _HOST or not pid.isdigit() or process_alive(int(pid)):
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def read_spill_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """``(frames, H, W, C)`` and the body's dtype of a complete spill file (``ValueError`` otherwise)."""
    reader = SpillReader(path)
    try:
        return reader.shape, reader.dtype
    finally:
        reader.close()
