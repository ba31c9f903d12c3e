"""One process per output at a time: an advisory lock file beside the output while a run works on it.

Two runs of the same command (a double-clicked job script, a render-farm task retried while the
first attempt still runs) would otherwise compute every chunk twice, and one of them could remove
the work directory the other is journaling into (``--restart``, or plain success). Render-farm
shards lock their own part (``--shard i/n``), so different shards still run side by side.

``flock`` locks vanish with their process, so a crashed run never leaves a stale lock behind; the
file itself is removed on release. Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from seedvr_cli.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def lock_path(output: Path, shard: tuple[int, int] | None = None) -> Path:
    output = Path(output)
    part = "" if shard is None else f"-shard-{shard[0]}-of-{shard[1]}"
    return output.parent / f".{output.name}.seedvr{part}.lock"


class OutputLock:
    """Held from ``acquire()`` to ``release()`` (or use as a context manager)."""

    def __init__(self, output: Path, shard: tuple[int, int] | None = None) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output, shard)
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"another seedvr process (pid {holder})" if holder else "another seedvr process"
                raise UserError(f"{self.output}: {who} is working on this output now; wait for it to finish "
                                f"or stop it (lock file {self.path})") from None
            except OSError:
                # A file system without locks (some network mounts): run unlocked rather than not at all.
                os.close(fd)
                return
            # The holder before us may have removed the file between our open and our lock: then
            # we hold a lock on a deleted file and must start again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so nobody can lock the old file after we let go.
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError):
        return None
