"""Work folders that earlier runs of an output left beside it, and what this run says about them.

A run resumes only the work folder of its own job (same input, settings and plan). One left by an
interrupted run with other settings used to stay hidden for ever. It is not removed behind the
user's back: it can hold hours of finished chunks, and going back to those settings resumes it.
Each run lists it instead, with what it holds and how to remove it; ``--restart`` removes it and
says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.journal import Journal, stale_workdirs


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def describe_workdir(folder: Path) -> str:
    """What a work folder holds, e.g. ``3 finished chunks, 12.5 MiB``."""
    try:
        chunks = f"{len(Journal.load(folder).done())} finished chunks"
    except UsageError:
        chunks = "no readable journal"
    return f"{chunks}, {_size(_folder_bytes(folder))}"


def other_workdirs(output: Path, current: Path) -> list[Path]:
    """Work folders of ``output`` that belong to other jobs than the one in ``current``."""
    return [folder for folder in stale_workdirs(output) if folder != Path(current)]


def notes_on_other_workdirs(output: Path, current: Path) -> list[str]:
    """One line per work folder of ``output`` that this run will not use."""
    return [f"note: {folder} is kept from an earlier run of {Path(output).name} with other input or settings "
            f"({describe_workdir(folder)}); this run does not use it: delete it, or pass --restart to discard it"
            for folder in other_workdirs(output, current)]


def remove_workdirs(output: Path) -> list[str]:
    """``--restart``: remove every work folder of ``output``; one line per folder removed."""
    lines = []
    for folder in stale_workdirs(output):
        held = describe_workdir(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            lines.append(f"--restart: removed {folder} ({held})")
    return lines
