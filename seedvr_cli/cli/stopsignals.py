"""Ctrl-C, SIGTERM and SIGHUP stop a command the same way, through one handler.

SIGTERM is what ``kill``, Docker, systemd and Slurm send; SIGHUP what a closed terminal or a
dropped SSH session sends. Python's default for both ends the process on the spot, skipping every
``finally``: the partial output, the lock file and the temporary folders stayed, and the workers ran
on. The handler raises ``Stopped`` instead, a ``KeyboardInterrupt``, so the clean-up written for
Ctrl-C runs for all three: the workers are stopped together, finished chunks stay journaled for a
resume, partial files and temporary folders are removed.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

# Only where the platform has them (Windows has no SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """The command was asked to stop by ``signum``; it exits with ``128 + signum`` as shells expect."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_label(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_label(signum: int) -> str:
    if signum == signal.SIGINT:
        return "Ctrl-C"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def interrupted_exit_code(error: KeyboardInterrupt | StopRequest) -> int:
    """130 for a plain ``KeyboardInterrupt`` (Ctrl-C), ``128 + signum`` for a ``Stopped``."""
    return error.exit_code if isinstance(error, (Stopped, StopRequest)) else 128 + signal.SIGINT


class StopRequest:
    """Which stop signal arrived within ``stop_on_signals``, if any (the interrupt itself may have
    been turned into an exit code on its way out, as Typer does)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    def __str__(self) -> str:
        return "" if self.signum is None else signal_label(self.signum)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, the first stop signal raises ``Stopped`` in the main thread; later ones are
    ignored, so that a second Ctrl-C cannot cut short the clean-up of the first. The clean-up is
    bounded (the worker pool kills what does not stop within seconds); SIGKILL remains for a hang.

    Signals that are ignored (``nohup``) stay ignored. Restores the previous handlers on exit.
    Outside the main thread (an embedding application) it changes nothing, since Python lets only
    the main thread set handlers.
    """
    request = StopRequest()

    def handle(signum: int, _frame) -> None:
        if request.signum is not None:
            return
        request.signum = signum
        raise Stopped(signum)

    previous: dict[int, object] = {}
    try:
        for signum in STOP_SIGNALS:
            # An ignored signal stays ignored: ``nohup`` ignores SIGHUP, shells ignore SIGINT in
            # background jobs, and the user asked for exactly that.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handle)
    except ValueError:  # not the main thread
        pass
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            # None: a handler installed from C, which Python cannot put back.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
