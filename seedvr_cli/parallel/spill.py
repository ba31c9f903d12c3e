"""Finished chunks on disk: ``.npy`` files written atomically by workers, read back frame ranges at a time.

Chunks travel from worker to parent through the job's work directory rather than a pipe: the
parent never holds more than the frames it is blending, and the same files are the resume journal's
payload. Reading uses plain seeks instead of a memory map, so pages of finished chunks never count
toward (or linger in) the parent's resident memory.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np

from seedvr_cli.system import process_alive

_OUTPUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
# Render-farm shards on several machines share a work directory: temporary files name their host,
# so that each machine only ever judges (and removes) the leftovers of its own processes.
_HOST = socket.gethostname().replace("/", "_") or "host"


def spill_name(index: int) -> str:
    """File name of chunk ``index`` inside a work directory (workers and the journal agree on it)."""
    return f"chunk-{index:06d}.npy"


def as_frames(frames) -> np.ndarray:
    """A processor's output as a C-contiguous uint8/uint16 ``[n, H, W, C]`` numpy array (torch accepted)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    array = np.ascontiguousarray(frames)
    if array.ndim != 4:
        raise ValueError(f"processor returned shape {tuple(array.shape)}; expected [frames, height, width, channels]")
    if array.dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"processor returned {array.dtype}; expected uint8 or uint16 frames")
    return array


def write_spill(path: Path, frames: np.ndarray, *, durable: bool = True) -> None:
    """Write ``frames`` to ``path`` so that the file either is complete or does not exist.

    ``durable`` also flushes it to the disk before the rename, so that a journaled chunk survives
    a power cut, not only a crash of the process.
    """
    tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, frames, allow_pickle=False)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


class SpillReader:
    """Random access to the frames of one spill file without mapping it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "rb")
        version = np.lib.format.read_magic(self._handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(self._handle)
        if fortran or len(shape) != 4 or dtype not in _OUTPUT_DTYPES:
            self._handle.close()
            raise ValueError(f"{path}: not a spill file of uint8/uint16 [n, H, W, C] frames")
        self.shape: tuple[int, int, int, int] = shape
        self.dtype: np.dtype = dtype
        self._offset = self._handle.tell()
        self.frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        expected = self._offset + shape[0] * self.frame_bytes
        actual = os.fstat(self._handle.fileno()).st_size
        if actual != expected:
            self._handle.close()
            raise ValueError(f"{path}: {actual} bytes, expected {expected} (truncated spill file)")

    @property
    def frames(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        count = stop - start
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        self._handle.seek(self._offset + start * self.frame_bytes)
        if self._handle.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise OSError(f"{self.path}: short read of frames {start}:{stop}")
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
    reader = SpillReader(path)
    try:
        return reader.shape, reader.dtype
    finally:
        reader.close()
