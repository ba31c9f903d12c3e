"""Progress events and run results: what the CLI renders (Rich or JSON lines) and turns into an exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from seedvr_cli.errors import UserError

ProgressKind = Literal["start", "ready", "chunk", "write", "failure", "dropped", "warning", "finished"]


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of one job, emitted on the caller's thread.

    ``frames_done``: frames whose chunks are finished (resumed ones included); ``frames_written``:
    frames already handed to the sink. ``fps`` counts only frames processed in this run, over the
    time since the run started; ``eta_s`` is ``None`` until the first chunk finishes.
    """

    kind: ProgressKind
    frames_done: int
    frames_written: int
    frames_total: int
    chunks_done: int
    chunks_total: int
    fps: float
    eta_s: float | None
    elapsed_s: float
    device: str | None = None
    chunk: int | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class WorkerFailure:
    """One failure of a worker: where, on what, and how (``exception``, ``exit``, ``init`` or ``timeout``)."""

    device: str
    chunk: int | None
    frames: tuple[int, int] | None
    kind: Literal["exception", "exit", "init", "timeout"]
    detail: str

    def summary(self) -> str:
        where = f"chunk {self.chunk} (frames {self.frames[0]}-{self.frames[1] - 1})" if self.frames else "startup"
        return f"{self.device} failed on {where}: {last_line(self.detail)}"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


@dataclass
class RunResult:
    """What a run did. ``complete``: the sink received every frame and was closed.

    ``failures`` were recovered from (retried elsewhere) unless the run raised ``RunFailed``;
    ``dropped_devices`` kept failing and were stopped. ``workdir`` is the kept work directory
    (a shard's part, or a failed run's journal to resume from), ``None`` once removed.
    """

    frames_total: int = 0
    frames_written: int = 0
    chunks_total: int = 0
    chunks_processed: int = 0
    chunks_resumed: int = 0
    failures: list[WorkerFailure] = field(default_factory=list)
    dropped_devices: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    workdir: Path | None = None
    complete: bool = False

    @property
    def clean(self) -> bool:
        return not self.failures and not self.dropped_devices


class RunFailed(UserError):
    """The run could not finish; ``result`` says what was done, ``reason`` why it stopped.

    Finished chunks stay journaled in ``result.workdir``: re-running the same command resumes.
    """

    def __init__(self, reason: str, result: RunResult) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result

    def __str__(self) -> str:
        # Built when shown: the work directory may be removed after the exception is made.
        workdir = self.result.workdir
        hint = f"; finished chunks are kept in {workdir}, re-run the same command to resume" if workdir else ""
        return self.reason + hint
