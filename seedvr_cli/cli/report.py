"""How a run talks to the user: a Rich progress bar on a terminal, plain lines in logs, JSON lines for farms."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
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


def count(number: int, noun: str) -> str:
    """``1 window``, ``2 windows``: the nouns of these messages all take a plain -s."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe_plan(job: Job, plan: InputPlan) -> str:
    h0, w0 = plan.input_size
    h, w = plan.output_size
    extra = " 16-bit" if plan.deep else ""
    extra += " +alpha" if plan.alpha else ""
    return (f"{job.input} -> {job.output}: {count(plan.frames, 'frame')}{extra} {w0}x{h0} -> {w}x{h} "
            f"(model {plan.model_size[1]}x{plan.model_size[0]}), {count(plan.windows, plan.unit)} in "
            f"{count(plan.chunks, 'chunk')}"
            + (f", ~{plan.estimated_vram_gib:.1f} GiB VRAM per GPU (estimate)" if plan.estimated_vram_gib is not None
               else ", VRAM not estimated (model unknown)"))


def bar_label(path: str, width: int = 32) -> str:
    """The file's own name for the progress bar (its folders say little and cost the room); a name
    too long for the bar loses its middle, so that both its start and its extension stay."""
    name = Path(path).name or path
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep - keep // 2] + "…" + name[len(name) - keep // 2:]


class _Stages:
    """What a job is doing, from the engine's events, and its speed since the models were ready.

    Speed and ETA start when the first window starts, not when the job does: the first job of a
    run spends a minute or more loading models, which would otherwise count as slow upscaling.
    """

    def __init__(self, models_ready: bool) -> None:
        now = time.monotonic()
        self.started = now
        self.stage = "first window" if models_ready else "loading models"
        self.working_since: float | None = now if models_ready else None
        self.frames_before: int | None = None  # frames done (resumed) when the first window started

    def update(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.kind == "ready" and self.working_since is None:
            self.working_since = now
            self.stage = "first window"
        if self.frames_before is None and event.kind in ("start", "ready"):
            self.frames_before = event.frames_done
        if event.kind in ("chunk", "write", "finished") and event.chunks_done:
            if event.frames_done >= event.frames_total:
                self.stage = "encoding" if event.frames_written < event.frames_total else "done"
            elif event.kind == "chunk":
                self.stage = "upscaling"

    def rate(self, event: ProgressEvent) -> float | None:
        """Frames per second since the first window started; None before a window has finished."""
        if self.working_since is None or self.stage in ("loading models", "first window"):
            return None
        frames = event.frames_done - (self.frames_before or 0)
        seconds = time.monotonic() - self.working_since
        return frames / seconds if frames > 0 and seconds > 0 else None

    def eta(self, event: ProgressEvent) -> float | None:
        remaining = event.frames_total - event.frames_done
        if remaining <= 0:
            return 0.0
        rate = self.rate(event)
        return remaining / rate if rate else None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class TextReporter:
    """Rich progress on a terminal; one line per event otherwise (logs, CI, job scripts).

    The bar says what the job is doing (loading models, first window, upscaling, encoding), how
    long it has been at it, and an ETA once the first window is done. ``verbose`` adds each
    device's start-up and, in the summary, the time of each stage and the peak VRAM.
    """

    def __init__(self, *, interactive: bool | None = None, verbose: bool = False) -> None:
        self.interactive = console_err.is_terminal if interactive is None else interactive
        self.verbose = verbose
        self._progress = None
        self._task = None
        self._last_line = 0.0
        self._last_frames = -1  # frames of the last progress line (the final event repeats the last chunk's)
        self._models_ready = False  # the workers load their models once, for every job of the run
        self._stages: _Stages | None = None

    def message(self, text: str) -> None:
        self._say(escape(text))

    @staticmethod
    def _say(markup: str) -> None:
        """Print Rich markup; whatever comes from paths or errors must be ``escape``d first
        (a file named ``clip [x264].mkv`` would otherwise lose its ``[x264]``, or crash on ``[/]``)."""
        console_err.print(markup, highlight=False, soft_wrap=True)

    def job_started(self, index: int, total: int, job: Job, plan: InputPlan) -> None:
        self._say(f"[bold]\\[{index + 1}/{total}][/] {escape(describe_plan(job, plan))}")
        self._stages = _Stages(self._models_ready)
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"), TextColumn("[cyan]{task.fields[stage]}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("frames {task.fields[fps]}"), TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"), console=console_err, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(bar_label(job.input)), total=plan.frames,
                                                 stage=self._stages.stage, fps="", eta=_eta(None))

    def progress(self, event: ProgressEvent) -> None:
        if event.kind in ("failure", "dropped", "warning"):
            self._say(f"[yellow]warning:[/] {escape(event.message)}")
        elif event.kind == "start" and event.message:
            self.message(f"  {event.message}")  # e.g. how many chunks an earlier run left to resume from
        elif event.kind == "ready" and self.verbose and event.message:
            self.message(f"  {event.message}")
        if event.kind == "ready":
            self._models_ready = True
        stages = self._stages or _Stages(self._models_ready)
        before = stages.stage
        stages.update(event)
        rate = stages.rate(event)
        fps = f"{rate:.2f} fps" if rate else ""
        if self._progress is not None:
            self._progress.update(self._task, completed=min(event.frames_done, event.frames_total),
                                  total=event.frames_total, fps=fps, stage=stages.stage, eta=_eta(stages.eta(event)))
            return
        if (stages.stage != before or event.kind == "start") and stages.stage not in ("upscaling", "done"):
            self.message(f"  {stages.stage} ... (elapsed {_eta(stages.elapsed)})")
        now = time.monotonic()
        if event.kind in ("chunk", "finished") and (now - self._last_line > 2.0 or event.kind == "finished"):
            line = (f"  {event.frames_done}/{count(event.frames_total, 'frame')}" + (f", {fps}" if fps else "")
                    + f", elapsed {_eta(stages.elapsed)}, ETA {_eta(stages.eta(event))}")
            if event.kind != "finished" or event.frames_done != self._last_frames:
                self._last_line, self._last_frames = now, event.frames_done
                self.message(line)

    def close(self) -> None:
        """Take the bar off the terminal and give the cursor back (also after Ctrl-C)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def job_finished(self, outcome: JobOutcome) -> None:
        self.close()
        if outcome.status == "done":
            fps = outcome.frames / outcome.seconds if outcome.seconds else 0.0
            text = outcome.message or f"wrote {outcome.job.output}"
            self._say(f"[green]done[/] {escape(text)} "
                      f"({count(outcome.frames, 'frame')} in {outcome.seconds:.1f} s, {fps:.2f} fps)")
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
                 f"{count(summary.frames, 'frame')} in {summary.seconds:.1f} s"
                 f" ({summary.frames / summary.seconds if summary.seconds else 0:.2f} fps overall)")
        if summary.peak_vram_gib:
            line += "; peak VRAM " + ", ".join(f"{d} {g:.1f} GiB" for d, g in sorted(summary.peak_vram_gib.items()))
        self._say(f"[bold]summary:[/] {escape(line)}")
        if self.verbose:
            self._say_stage_times(summary)
        for outcome in summary.failed:
            self.message(f"  failed: {_failure(outcome)}")


    def _say_stage_times(self, summary: RunSummary) -> None:
        """``--verbose``: where the time went and the memory peak (what the JSON summary carries)."""
        if summary.phase_seconds:
            total = sum(summary.phase_seconds.values())
            times = ", ".join(f"{phase} {seconds:.1f} s ({100 * seconds / total:.0f}%)" if total else f"{phase} {seconds:.1f} s"
                              for phase, seconds in sorted(summary.phase_seconds.items(), key=lambda item: -item[1]))
            self.message(f"  stages (summed over devices): {times}")
        else:
            self.message("  stages: no window was processed in this run")
        if summary.peak_vram_gib:
            peaks = ", ".join(f"{device} {gib:.2f} GiB" + (f" (in the {summary.peak_phase[device]})"
                                                           if device in summary.peak_phase else "")
                              for device, gib in sorted(summary.peak_vram_gib.items()))
            self.message(f"  peak VRAM: {peaks}")
        else:
            self.message("  peak VRAM: none measured (no GPU worker ran)")


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

    def close(self) -> None:
        """Nothing is left on the terminal: every event is already a finished line."""

    def summary(self, summary: RunSummary) -> None:
        self._emit({"event": "summary", "done": sum(o.status == "done" for o in summary.outcomes),
                    "failed": len(summary.failed), "skipped": sum(o.status == "skipped" for o in summary.outcomes),
                    "frames": summary.frames, "seconds": summary.seconds, "peak_vram_gib": summary.peak_vram_gib,
                    "peak_phase": summary.peak_phase, "phase_seconds": summary.phase_seconds})


def make_reporter(log_format: str, *, verbose: bool = False):
    return JsonReporter() if log_format == "json" else TextReporter(verbose=verbose)


__all__ = ["JsonReporter", "TextReporter", "bar_label", "console", "count", "describe_plan", "make_reporter"]
