"""Disk space of one input's run: how much it needs, a warning before it starts, a clear line when the disk fills.

A run writes the finished chunks into its work folder beside the output (all of them with resume,
since they are the journal; only those in flight without) and the output itself, under a temporary
name, in the same folder. Both are estimated from the plan before anything is written.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.parallel.spill import spill_bytes
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.run.outputs import is_video_output

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Worker and writer failures reach the run as text: the errors' own words are what is left of them.
_DISK_FULL_WORDS = tuple(os.strerror(code) for code in _DISK_FULL_ERRNOS)
# Lossy codecs store a frame in a small part of its raw size (H.264 at CRF 16 takes well under a
# tenth at 1080p); lossless and intra-frame formats (FFV1, ProRes, PNG, TIFF, DPX) are counted raw.
_LOSSY_CODECS = ("h264", "h265", "av1")
_LOSSY_IMAGES = (".jpg", ".jpeg", ".webp")
_LOSSY_SHARE = 0.1


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes one input's run still has to write beside its output (rough for the encoded output)."""

    work: int  # finished chunks in the work folder
    output: int

    @property
    def total(self) -> int:
        return self.work + self.output

    def describe(self) -> str:
        return f"about {format_bytes(self.total)} (work folder {format_bytes(self.work)} + output {format_bytes(self.output)})"


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``340 MiB``, ``12 KiB``: small amounts never read as ``0.0 GiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if count < 10 * size else f"{count / size:.0f} {unit}"
    return f"{int(count)} B"


def estimate_space(tasks: Sequence[ChunkTask], chunks: Sequence[int] | None, *, frame: tuple[int, int, int],
                   deep: bool, resume: bool, in_flight: int, already: int, output: str | None,
                   settings: OutputSettings, frames: int) -> SpaceNeed:
    """What is left to write for ``tasks`` (only ``chunks`` of them for a shard, which writes no
    output) with frames of ``frame`` = (height, width, channels). ``already``: bytes of an
    earlier run's work folder that a resumed run reuses. Without resume only ``in_flight`` chunks
    are on the disk at once."""
    dtype = np.dtype(np.uint16 if deep else np.uint8)
    chosen = [tasks[k] for k in chunks] if chunks is not None else list(tasks)
    sizes = [spill_bytes(task, frame, dtype) for task in chosen]
    if not sizes:
        work = 0
    elif resume:
        work = max(0, sum(sizes) - already)
    else:
        work = min(len(sizes), in_flight) * max(sizes)
    raw = frames * int(np.prod(frame)) * dtype.itemsize
    return SpaceNeed(work, 0 if output is None else int(raw * _output_share(output, settings, deep, frame[2] == 4)))


def _output_share(output: str, settings: OutputSettings, deep: bool, alpha: bool) -> float:
    if is_video_output(output, settings):
        codec = settings.encoding_for(output, deep=deep, alpha=alpha).codec
        return _LOSSY_SHARE if codec in _LOSSY_CODECS else 1.0
    suffix = Path(output).suffix.lower()
    lossy = suffix in _LOSSY_IMAGES or settings.codec in ("jpeg", "jpg", "webp")
    return _LOSSY_SHARE if lossy else 1.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files directly in ``folder`` (a work folder has no subfolders); 0 when absent."""
    try:
        return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return 0


def mount_point(path: Path) -> Path:
    """The mount point of the disk that holds ``path`` (or would, for a folder not made yet)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def space_warning(folder: Path, need: SpaceNeed, *, resume: bool) -> str | None:
    """One line when ``folder``'s disk has less free space than ``need``, else None. ``resume``:
    the run keeps every finished chunk, which --no-resume would not."""
    free = free_bytes(folder)
    if need.total <= free:
        return None
    fixes = "free some space, choose -o on another disk" + (
        " or use --no-resume (keeps only the chunks in flight)" if resume else "")
    return (f"{folder} (disk {mount_point(folder)}) has {format_bytes(free)} free but this input needs "
            f"{need.describe()}; {fixes}")


def is_disk_full(error: BaseException | str) -> bool:
    """True for ENOSPC / EDQUOT, whether raised here or reported as text by a worker or the writer."""
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    return any(words in str(error) for words in _DISK_FULL_WORDS)


def disk_full_message(folder: Path, need: SpaceNeed | None, *, removed: Path | None) -> str:
    """What to tell the user when ``folder``'s disk filled up: which disk, how much it needs, what was freed."""
    needs = f"; this input needs {need.describe()} there" if need is not None else ""
    freed = f"; its work folder {removed} was removed to free the disk" if removed is not None else ""
    return (f"the disk {mount_point(folder)} holding {folder} is full ({format_bytes(free_bytes(folder))} free)"
            f"{needs}{freed}; free space there, or choose -o on another disk, and run again")
