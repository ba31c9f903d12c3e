"""What a run reports: one outcome per input, a summary for the run, and the reporter interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from seedvr_cli.media.discovery import Job
from seedvr_cli.parallel.progress import ProgressEvent

if TYPE_CHECKING:
    from seedvr_cli.run.plan import InputPlan


class Reporter(Protocol):
    """Where the run tells the user what happens (Rich, plain lines or JSON lines)."""

    def job_started(self, index: int, total: int, job: Job, plan: InputPlan) -> None: ...

    def progress(self, event: ProgressEvent) -> None: ...

    def job_finished(self, outcome: JobOutcome) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class JobOutcome:
    job: Job
    status: str  # "done", "skipped", "failed", "planned"
    frames: int = 0
    seconds: float = 0.0
    message: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    outcomes: list[JobOutcome]
    seconds: float
    peak_vram_gib: dict[str, float]
    phase_seconds: dict[str, float]
    peak_phase: dict[str, str] = field(default_factory=dict)  # per device, the phase its peak was in

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.outcomes if o.status == "done")


def finish(reporter: Reporter, outcome: JobOutcome) -> JobOutcome:
    reporter.job_finished(outcome)
    return outcome
