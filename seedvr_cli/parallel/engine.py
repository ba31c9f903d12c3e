"""One input through the pool: hand out chunks, survive failures, journal, assemble, resume.

``run_job`` is what ``seedvr upscale`` calls per input; ``assemble`` joins render-farm parts.
Policy in one place:
- chunks go to whichever worker is free (fast GPUs simply take more), lowest index first, and
  never further than ``max_in_flight`` chunks ahead of the assembler;
- a chunk that fails is retried, preferably on a device that has not failed it, up to
  ``max_retries`` times; a device failing ``device_max_failures`` times in one job is dropped (a dead worker
  below that count is restarted); the run goes on while any device is left;
- when the run cannot finish, chunks still running elsewhere are awaited and journaled before
  ``RunFailed`` is raised, so a re-run loses nothing that was finished.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.assembler import Assembler, BackgroundAssembler, FrameSink
from seedvr_cli.parallel.encoder_thread import EncoderThread
from seedvr_cli.parallel.journal import Journal
from seedvr_cli.parallel.pool import WorkerEvent, WorkerPool, WorkerSlot
from seedvr_cli.parallel.progress import (
    ProgressCallback,
    ProgressEvent,
    RunFailed,
    RunResult,
    WorkerFailure,
    last_line,
)
from seedvr_cli.parallel.spill import SpillReader
from seedvr_cli.parallel.tasks import ChunkTask, owned_frames, total_frames, validate_tasks
from seedvr_cli.parallel.timeline import Timeline
from seedvr_cli.parallel.worker import FrameSource

_POLL_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    """How a job runs (none of this changes pixels).

    ``resume``: reuse finished chunks of an earlier run of the same job and keep spill files until
    the output is complete; off: start clean and delete each chunk once written. ``restart``:
    discard an existing work directory first. ``chunks``: run only these chunk indices (a shard or
    a frame range), producing a part in the work directory and no output. ``max_in_flight``:
    chunks handed out or finished but not yet written (default ``2 * workers + 2``).
    ``chunk_timeout_s``: a worker that finishes nothing for this long is killed (a hung GPU) and its
    chunk retried like any other failure. ``prefetch``: chunks queued per worker (2: the next one
    is decoded while the current one runs; a second chunk is only queued once every worker has one;
    a worker still loading its models is handed one, so that its frames are read during the load).
    """

    resume: bool = True
    restart: bool = False
    keep_workdir: bool = False
    max_in_flight: int | None = None
    max_retries: int = 1
    device_max_failures: int = 2
    durable: bool = True
    chunks: Sequence[int] | None = None
    chunk_timeout_s: float | None = None
    prefetch: int = 2


class _Progress:
    def __init__(self, tasks: Sequence[ChunkTask], scope: Sequence[int], callback: ProgressCallback | None) -> None:
        self.tasks, self.callback = tasks, callback
        self.frames_total = sum(owned_frames(tasks, k) for k in scope)
        self.chunks_total = len(scope)
        self.started = time.monotonic()
        self.frames_done = self.chunks_done = self.frames_written = 0
        self.frames_new = 0

    def chunk_finished(self, index: int, *, resumed: bool) -> None:
        frames = owned_frames(self.tasks, index)
        self.frames_done += frames
        self.chunks_done += 1
        if not resumed:
            self.frames_new += frames

    def emit(self, kind: str, *, device: str | None = None, chunk: int | None = None, message: str = "") -> None:
        if self.callback is None:
            return
        elapsed = time.monotonic() - self.started
        fps = self.frames_new / elapsed if elapsed > 0 else 0.0
        remaining = self.frames_total - self.frames_done
        eta = (remaining / fps if fps > 0 else None) if remaining else 0.0
        self.callback(
            ProgressEvent(kind, self.frames_done, self.frames_written, self.frames_total, self.chunks_done,
                          self.chunks_total, fps, eta, elapsed, device, chunk, message)  # type: ignore[arg-type]
        )


class _Scheduler:
    """The state of one job inside ``run_job``."""

    def __init__(self, pool: WorkerPool, tasks: Sequence[ChunkTask], pending: list[int], journal: Journal,
                 options: RunOptions, result: RunResult, progress: _Progress, assembler: BackgroundAssembler | None,
                 source: FrameSource, context: Any) -> None:
        self.pool, self.tasks, self.pending, self.journal = pool, tasks, pending, journal
        self.options, self.result, self.progress, self.assembler = options, result, progress, assembler
        self.source, self.context = source, context
        self.job_id = pool.new_job_id()
        self.failed_on: dict[int, set[str]] = {}
        self.chunk_failures: dict[int, int] = {}
        self.fatal: str | None = None
        self.progress_at: dict[int, float] = {}  # slot number -> when it last got or finished a chunk
        self.timed_out: set[int] = set()
        self.device_failures: dict[int, int] = {}
        # Slots that keep raising on this input: skipped for the rest of it, not for the next input.
        self.excluded: set[int] = set()

    @property
    def usable(self) -> list[WorkerSlot]:
        return [s for s in self.pool.live_slots if s.slot not in self.excluded]

    def _in_flight(self) -> int:
        """Chunks handed out or finished but not yet written (RunOptions.max_in_flight)."""
        return self.options.max_in_flight or 2 * len(self.usable) + 2

    # -- handing out ------------------------------------------------------------------------

    def _window_limit(self) -> int:
        if self.assembler is None:
            return len(self.tasks)
        in_flight = self._in_flight()
        return self.assembler.next_chunk + max(1, in_flight)

    def _allowed(self, chunk: int, slot: WorkerSlot) -> bool:
        failed = self.failed_on.get(chunk, set())
        if slot.device.label not in failed:
            return True
        # Retry on the same device only when every live device has already failed this chunk.
        return all(s.device.label in failed for s in self.usable)

    def dispatch(self) -> None:
        if self.fatal is not None:
            return
        limit = self._window_limit()
        # Idle workers first; a second (queued) chunk only when every worker already has one, and,
        # with several workers, only while plenty is left: the last chunks go to whichever worker is
        # free first. A lone worker has nobody to balance with: its last chunk is queued too, so
        # that chunk's frames are read while the one before runs.
        live = self.usable
        for depth in range(1, max(1, self.options.prefetch) + 1):
            for slot in live:
                if depth > 1 and len(live) > 1 and len(self.pending) <= len(live):
                    return
                # A worker still loading its models gets one chunk, whose frames it reads meanwhile.
                # A chunk being written to disk does not count: the next one is read meanwhile.
                if slot.unprocessed < (depth if slot.ready else 1):
                    self._give(slot, limit)

    def _give(self, slot: WorkerSlot, limit: int) -> None:
        chunk = next((c for c in self.pending if c < limit and self._allowed(c, slot)), None)
        if chunk is not None:
            self.pending.remove(chunk)
            if not slot.assigned:
                self.progress_at[slot.slot] = time.monotonic()
            try:
                self.pool.send_task(slot, self.job_id, self.tasks[chunk], source=self.source, context=self.context,
                                    spill_dir=self.journal.root, durable=self.options.durable)
            except OSError:
                # The worker is going away; its death event will come through poll().
                self._requeue(chunk)
                slot.assigned = [a for a in slot.assigned if a != (self.job_id, chunk)]

    def _requeue(self, chunk: int) -> None:
        if chunk not in self.pending:
            self.pending.append(chunk)
            self.pending.sort()

    @property
    def busy(self) -> bool:
        return any(job == self.job_id for s in self.pool.live_slots for job, _ in s.assigned)

    # -- events -----------------------------------------------------------------------------

    def handle(self, event: WorkerEvent) -> None:
        slot, label = event.slot, event.slot.device.label
        if event.kind == "ready":
            self.progress_at[slot.slot] = time.monotonic()  # the chunk timeout counts from here, not the load
            self.progress.emit("ready", device=label, message=f"{label} ready after {event.seconds:.1f} s "
                                                             f"(models {event.build_seconds:.1f} s)")
        elif event.kind == "done":
            if event.job_id != self.job_id:
                return  # a chunk of an earlier, abandoned job
            self.progress_at[slot.slot] = time.monotonic()
            self.journal.record(event.chunk, shape=event.shape, dtype=event.dtype, device=label, seconds=event.seconds)
            self.result.chunks_processed += 1
            self.progress.chunk_finished(event.chunk, resumed=False)
            if self.assembler is not None:
                self.assembler.add(event.chunk)
            self.progress.emit("chunk", device=label, chunk=event.chunk)
        elif event.kind == "failed":
            if event.job_id != self.job_id:
                return
            self.progress_at[slot.slot] = time.monotonic()
            self._chunk_failed(slot, event.chunk, "exception", event.detail)
            self._device_failed(slot, restart=False)
        elif event.kind == "init_failed":
            pass  # reported once, with the exit that follows it
        elif event.kind == "note":
            self.progress.emit("warning", device=label, message=f"{label}: {event.detail}")
        elif event.kind == "died":
            ours = [chunk for job, chunk in event.held if job == self.job_id]
            if event.running is not None and event.running[0] == self.job_id and event.running[1] in ours:
                ours.remove(event.running[1])
                ours.insert(0, event.running[1])  # the chunk being processed is the one to blame
            requeue = ours[1:]
            if not event.was_ready:
                detail = slot.init_error or f"worker {event.detail} while loading"
                self._record_failure(slot, None, "init", detail)
                requeue = ours  # handed to it while it loaded, never started: nothing to blame
            elif ours and slot.slot in self.timed_out:
                self.timed_out.discard(slot.slot)
                self._chunk_failed(slot, ours[0], "timeout",
                                   f"no result after {self.options.chunk_timeout_s:g} s; worker stopped")
            elif ours:
                self._chunk_failed(slot, ours[0], "exit", f"worker {event.detail}")
            else:
                self._record_failure(slot, None, "exit", f"worker {event.detail}")
            for chunk in requeue:
                self._requeue(chunk)
            self.journal.remove_orphans()  # a chunk it was writing when it died
            self._device_failed(slot, restart=True)

    def _record_failure(self, slot: WorkerSlot, chunk: int | None, kind: str, detail: str) -> None:
        frames = (self.tasks[chunk].out_start, self.tasks[chunk].out_stop) if chunk is not None else None
        failure = WorkerFailure(slot.device.label, chunk, frames, kind, detail)  # type: ignore[arg-type]
        self.result.failures.append(failure)
        self.progress.emit("failure", device=slot.device.label, chunk=chunk, message=failure.summary())

    def _chunk_failed(self, slot: WorkerSlot, chunk: int, kind: str, detail: str) -> None:
        self._record_failure(slot, chunk, kind, detail)
        self.failed_on.setdefault(chunk, set()).add(slot.device.label)
        self.chunk_failures[chunk] = self.chunk_failures.get(chunk, 0) + 1
        if self.chunk_failures[chunk] > self.options.max_retries:
            devices = ", ".join(sorted(self.failed_on[chunk]))
            task = self.tasks[chunk]
            self.fatal = (f"chunk {chunk} (frames {task.out_start}-{task.out_stop - 1}) failed "
                          f"{self.chunk_failures[chunk]} times (on {devices}): {last_line(detail)}")
        else:
            self._requeue(chunk)

    def _device_failed(self, slot: WorkerSlot, *, restart: bool) -> None:
        # Counted per job: failures while one bad input ran do not follow a healthy GPU to the next.
        if slot.slot in self.excluded:
            return  # a chunk it had queued before it was skipped; that chunk is already requeued
        slot.failures += 1
        count = self.device_failures[slot.slot] = self.device_failures.get(slot.slot, 0) + 1
        if count >= self.options.device_max_failures:
            if restart:
                held = [chunk for job, chunk in slot.assigned if job == self.job_id]
                self.pool.retire(slot)  # a worker that keeps dying: the device is gone for the run
                for chunk in held:
                    self._requeue(chunk)
                message = f"{slot.device.label} dropped after {count} failures"
            else:
                # Exceptions may come from this input alone (a corrupt frame): the worker is alive,
                # so skip it for this input only and let it serve the next ones. Chunks it already
                # has queued finish there or come back through their own failure.
                self.excluded.add(slot.slot)
                message = f"{slot.device.label} skipped for this input after {count} failures"
            self.result.dropped_devices.append(slot.device.label)
            self.progress.emit("dropped", device=slot.device.label, message=message)
        elif restart:
            self.pool.spawn(slot)

    def _stop_hung_workers(self) -> None:
        timeout = self.options.chunk_timeout_s
        if timeout is None:
            return
        now = time.monotonic()
        for slot in self.pool.live_slots:
            # A worker still loading is not hung: its chunks wait for the models, not for it.
            ours = slot.ready and any(job == self.job_id for job, _ in slot.assigned)
            if ours and slot.slot not in self.timed_out and now - self.progress_at.get(slot.slot, now) > timeout:
                self.timed_out.add(slot.slot)
                self.pool.kill(slot)  # its death arrives through poll() like any other

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            if self.assembler is not None and self.assembler.error is not None:
                self.fatal = self.fatal or f"writing the output failed: {self.assembler.error}"
            if self.fatal is None and self.pending and not self.usable:
                last = self.result.failures[-1].summary() if self.result.failures else "no worker left"
                self.fatal = f"every device failed ({last})"
            if self.fatal is not None and not self.busy:
                return
            if self.fatal is None and not self.pending and not self.busy:
                return
            self.dispatch()
            self._stop_hung_workers()
            written = self.assembler.frames_written if self.assembler is not None else 0
            for event in self.pool.poll(_POLL_S):
                self.handle(event)
            if self.assembler is not None and self.assembler.frames_written != written:
                self.progress.frames_written = self.assembler.frames_written
                self.progress.emit("write")


def run_job(
    pool: WorkerPool,
    *,
    source: FrameSource,
    tasks: Sequence[ChunkTask],
    workdir: Path,
    key: str,
    sink: FrameSink | None,
    context: Any = None,
    meta: dict[str, Any] | None = None,
    options: RunOptions = RunOptions(),
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Process ``tasks`` of ``source`` on ``pool`` and stream the blended frames into ``sink``.

    ``workdir``/``key``: from ``journal.workdir_for(output, key)`` and ``journal.job_key(...)``.
    With ``options.chunks`` (a shard), ``sink`` must be ``None``: the finished chunks stay in
    ``workdir`` for ``assemble``. Returns a ``RunResult``; raises ``RunFailed`` (sink aborted,
    journal kept) when the job cannot finish. The engine closes or aborts ``sink``.
    """
    tasks = list(tasks)
    validate_tasks(tasks)
    for name, thing in (("source", source), ("context", context)):
        try:
            pickle.dumps(thing)
        except Exception as exc:
            raise TypeError(f"the job's {name} must be picklable to reach the workers: {exc}") from exc
    if options.chunks is not None and sink is not None:
        raise ValueError("a shard run produces a part, not an output: pass sink=None")
    started = time.monotonic()
    journal = Journal.open(workdir, key=key, tasks=tasks, meta=meta, restart=options.restart or not options.resume)
    scope = sorted(set(options.chunks)) if options.chunks is not None else list(range(len(tasks)))
    done = journal.done() if options.resume else {}
    resumed = [k for k in scope if k in done]
    result = RunResult(frames_total=total_frames(tasks), chunks_total=len(scope),
                       chunks_resumed=len(resumed), workdir=journal.root)
    tracker = _Progress(tasks, scope, progress)
    for k in resumed:
        tracker.chunk_finished(k, resumed=True)

    assembler = None
    if sink is not None:
        release = None if options.resume else journal.discard
        sink = EncoderThread(sink)  # the encoder beside the spill reads, both beside the workers
        assembler = BackgroundAssembler(
            Assembler(tasks, lambda k: SpillReader(journal.spill_path(k)), sink, release=release)
        )
        for k in resumed:
            assembler.add(k)
    tracker.emit("start", message=f"{len(resumed)} of {len(scope)} chunks resumed" if resumed else "")

    pending = [k for k in scope if k not in done]
    scheduler = None
    try:
        if pending:
            with Timeline("parent").span("start_workers"):
                pool.start()
            scheduler = _Scheduler(pool, tasks, pending, journal, options, result, tracker, assembler, source, context)
            scheduler.run()
        if scheduler is not None and scheduler.fatal is not None:
            raise RunFailed(scheduler.fatal, result)
        if assembler is not None:
            # What is left once the last chunk is done: its frames read back, encoded, the file closed.
            with Timeline("parent").span("finish"):
                assembler.finish()
                result.frames_written = assembler.frames_written
                sink.close()
            result.complete = True
    except BaseException as exc:
        if assembler is not None:
            assembler.cancel()
            result.frames_written = assembler.frames_written
        if sink is not None:
            sink.abort()
        if not options.resume or (options.chunks is None and not journal.done()):
            # Nothing to resume: a --no-resume run, or one that failed before any chunk finished
            # (e.g. no device could load the model); an empty work directory would only mislead.
            journal.remove()
            result.workdir = None
        result.elapsed_s = time.monotonic() - started
        if isinstance(exc, RunFailed):
            raise
        if isinstance(exc, Exception):
            raise RunFailed(f"the run stopped: {exc}", result) from exc
        raise  # KeyboardInterrupt / SystemExit: the journal is kept for the next run

    result.elapsed_s = time.monotonic() - started
    tracker.frames_written = result.frames_written
    if result.complete and not options.keep_workdir:
        journal.remove()
        result.workdir = None
    tracker.emit("finished")
    return result


def _merged_journal(workdirs: Sequence[Path]) -> tuple[Journal, dict[int, Journal]]:
    journals = [Journal.load(Path(w)) for w in workdirs]
    first = journals[0]
    for other in journals[1:]:
        if other.key != first.key:
            raise UsageError(f"{other.root} and {first.root} are parts of different jobs; assemble one job at a time")
    owner: dict[int, Journal] = {}
    for journal in journals:
        for index in journal.done():
            owner.setdefault(index, journal)
    return first, owner


def assemble(
    workdirs: Path | Sequence[Path],
    sink: FrameSink,
    *,
    keep_workdir: bool = False,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Join the parts of a job (one shared work directory, or one per shard) into ``sink``.

    Every chunk must be finished somewhere; otherwise nothing is written and a ``UsageError``
    names the missing frames. The work directories are removed after success unless kept.
    """
    paths = [Path(workdirs)] if isinstance(workdirs, (str, Path)) else [Path(w) for w in workdirs]
    journal, owner = _merged_journal(paths)
    tasks = journal.tasks()
    missing = [t for t in tasks if t.index not in owner]
    if missing:
        ranges = ", ".join(f"{t.out_start}-{t.out_stop - 1}" for t in missing[:8])
        raise UsageError(
            f"{paths[0]}: {len(missing)} of {len(tasks)} chunks are not finished (frames {ranges}"
            f"{' ...' if len(missing) > 8 else ''}); run the missing shards first"
        )
    started = time.monotonic()
    tracker = _Progress(tasks, list(range(len(tasks))), progress)
    result = RunResult(frames_total=journal.manifest["frames"], chunks_total=len(tasks), chunks_resumed=len(tasks),
                       workdir=paths[0])
    sink = EncoderThread(sink)  # a chunk is read back while the one before is encoded
    assembler = Assembler(tasks, lambda k: SpillReader(owner[k].spill_path(k)), sink)
    try:
        for task in tasks:
            assembler.add(task.index)
            tracker.chunk_finished(task.index, resumed=True)
            if assembler.pump():
                tracker.frames_written = assembler.frames_written
                tracker.emit("write")
        assembler.close()
        sink.close()
    except BaseException:
        assembler.close()
        sink.abort()
        raise
    result.frames_written = assembler.frames_written
    result.complete = True
    result.elapsed_s = time.monotonic() - started
    if not keep_workdir:
        for path in paths:
            Journal.load(path).remove()
        result.workdir = None
    tracker.emit("finished")
    return result
