"""Temporary folders of a run, named after the process that made them.

A run removes its temporary folders when it ends, even on Ctrl-C or SIGTERM; a SIGKILL, an
out-of-memory kill or a power cut leaves them behind. Each name carries the owner's process id
and a tag of its host, ``seedvr-stats-<pid>-<host>-<random>``, so the next run can tell the folders
of dead runs of this machine from those of runs still going (on this host, or on another one that
shares the temporary folder), and removes only the former.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

_NAME = re.compile(r"^seedvr-[a-z]+-(\d+)-([0-9a-f]{8})-")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def run_temp_dir(kind: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for this run (a context manager, as ``tempfile.TemporaryDirectory``)."""
    return tempfile.TemporaryDirectory(prefix=f"seedvr-{kind}-{os.getpid()}-{_host_tag()}-")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_orphaned_temp_dirs(root: Path | None = None) -> list[Path]:
    """Remove the temporary folders of runs of this host and user whose process is gone; returns them.

    Only on POSIX: elsewhere ``os.kill(pid, 0)`` is no harmless probe.
    """
    if os.name != "posix":
        return []
    root = Path(tempfile.gettempdir() if root is None else root)
    removed = []
    try:
        candidates = list(root.glob("seedvr-*"))
    except OSError:
        return []
    for path in candidates:
        match = _NAME.match(path.name)
        if match is None or match.group(2) != _host_tag():
            continue
        pid = int(match.group(1))
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid != os.getpid() and not _process_exists(pid):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed
