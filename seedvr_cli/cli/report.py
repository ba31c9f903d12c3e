"""How a run talks to the user: a Rich progress bar on a terminal, plain lines in logs, JSON lines for farms."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from rich.markup import escape

from seedvr_cli.cli.app import console, console_err
from seedvr_cli.media.discovery import Job
from seedvr_cli.parallel.progress import ProgressEvent
from seedvr_cli.run.outcome import JobOutcome, RunSummary
from seedvr_cli.run.plan import InputPlan


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60:02d}:{seconds % 60:02d}"


def describe_plan(job: Job, plan: InputPlan) -> str:
    h0, w0 = plan.input_size
    h, w = plan.output_size
    extra = " 16-bit" if plan.deep else ""
    extra += " +alpha" if plan.alpha else ""
    return (f"{job.input} -> {job.output}: {plan.frames} frames{extra} {w0}x{h0} -> {w}x{h} "
            f"(model {plan.model_size[1]}x{plan.model_size[0]}), {plan.windows} windows in {plan.chunks} chunks"
            + (f", ~{plan.estimated_vram_gib:.1f} GiB VRAM per GPU (estimate)" if plan.estimated_vram_gib is not None
               else ", VRAM not estimated (model unknown)"))


class TextReporter:
    """Rich progress on a terminal; one line per event otherwise (logs, CI, job scripts)."""

    def __init__(self, *, interactive: bool | None = None) -> None:
        self.interactive = console_err.is_terminal if interactive is None else interactive
        self._progress = None
        self._task = None
        self._last_line = 0.0

    def message(self, text: str) -> None:
        self._say(escape(text))

    @staticmethod
    def _say(markup: str) -> None:
        """Print Rich markup; whatever comes from paths or errors must be ``escape``d first
        (a file named ``clip [x264].mkv`` would otherwise lose its ``[x264]``, or crash on ``[/]``)."""
        console_err.print(markup, highlight=False, soft_wrap=True)

    def job_started(self, index: int, total: int, job: Job, plan: InputPlan) -> None:
        self._say(f"[bold]\\[{index + 1}/{total}][/] {escape(describe_plan(job, plan))}")
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                TextColumn("{task.fields[fps]}"), TimeRemainingColumn(), console=console_err, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(job.input[-40:]), total=plan.frames, fps="")

    def progress(self, event: ProgressEvent) -> None:
        if event.kind in ("failure", "dropped", "warning"):
            self._say(f"[yellow]warning:[/] {escape(event.message)}")
        elif event.kind == "start" and event.message:
            self.message(f"  {event.message}")  # e.g. how many chunks an earlier run left to resume from
        if self._progress is not None:
            self._progress.update(self._task, completed=min(event.frames_done, event.frames_total),
                                  total=event.frames_total, fps=f"{event.fps:.2f} fps")
            return
        now = time.monotonic()
        if event.kind in ("chunk", "finished") and (now - self._last_line > 2.0 or event.kind == "finished"):
            self._last_line = now
            self.message(f"  {event.frames_done}/{event.frames_total} frames, {event.fps:.2f} fps, ETA {_eta(event.eta_s)}")

    def job_finished(self, outcome: JobOutcome) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if outcome.status == "done":
            fps = outcome.frames / outcome.seconds if outcome.seconds else 0.0
            text = outcome.message or f"wrote {outcome.job.output}"
            self._say(f"[green]done[/] {escape(text)} "
                      f"({outcome.frames} frames in {outcome.seconds:.1f} s, {fps:.2f} fps)")
        elif outcome.status == "failed":
            self._say(f"[bold red]failed[/] {escape(_failure(outcome))}")
        elif outcome.status == "skipped":
            self.message(f"skipped {outcome.job.input}: {outcome.message}")
        for note in outcome.notes:
            self.message(f"  note: {note}")

    def summary(self, summary: RunSummary) -> None:
        done = [o for o in summary.outcomes if o.status == "done"]
        planned = sum(o.status == "planned" for o in summary.outcomes)
        line = f"{planned} planned (dry run), " if planned else ""
        line += (f"{len(done)} done, {len(summary.failed)} failed, "
                 f"{sum(o.status == 'skipped' for o in summary.outcomes)} skipped; "
                 f"{summary.frames} frames in {summary.seconds:.1f} s"
                 f" ({summary.frames / summary.seconds if summary.seconds else 0:.2f} fps overall)")
        if summary.peak_vram_gib:
            line += "; peak VRAM " + ", ".join(f"{d} {g:.1f} GiB" for d, g in sorted(summary.peak_vram_gib.items()))
        self._say(f"[bold]summary:[/] {escape(line)}")
        for outcome in summary.failed:
            self.message(f"  failed: {_failure(outcome)}")


def _failure(outcome: JobOutcome) -> str:
    """``input: reason``, without naming the input twice (most errors start with the file they are about)."""
    if outcome.message.startswith(outcome.job.input):
        return outcome.message
    return f"{outcome.job.input}: {outcome.message}"


class JsonReporter:
    """One JSON object per line on stdout: for render farms and scripts (no TTY needed)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def _emit(self, payload: dict) -> None:
        self.stream.write(json.dumps(payload, default=str) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self._emit({"event": "message", "text": text})

    def job_started(self, index: int, total: int, job: Job, plan: InputPlan) -> None:
        self._emit({"event": "job_started", "index": index, "total": total, "input": job.input,
                    "output": job.output, "plan": plan.__dict__})

    def progress(self, event: ProgressEvent) -> None:
        self._emit({"event": "progress", **event.to_json()})

    def job_finished(self, outcome: JobOutcome) -> None:
        self._emit({"event": "job_finished", "input": outcome.job.input, "output": outcome.job.output,
                    "status": outcome.status, "frames": outcome.frames, "seconds": outcome.seconds,
                    "message": outcome.message, "notes": outcome.notes})

    def summary(self, summary: RunSummary) -> None:
        self._emit({"event": "summary", "done": sum(o.status == "done" for o in summary.outcomes),
                    "failed": len(summary.failed), "skipped": sum(o.status == "skipped" for o in summary.outcomes),
                    "frames": summary.frames, "seconds": summary.seconds, "peak_vram_gib": summary.peak_vram_gib,
                    "phase_seconds": summary.phase_seconds})


def make_reporter(log_format: str):
    return JsonReporter() if log_format == "json" else TextReporter()


__all__ = ["JsonReporter", "TextReporter", "console", "describe_plan", "make_reporter"]
