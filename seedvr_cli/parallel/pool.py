"""Worker processes, one per device: start, message, notice deaths, restart, drop.

The pool knows processes and pipes, not policy: which chunk goes where, retries and when to give
up a device are decided by the engine (``engine.run_job``). A pool outlives one input, so the
models each worker loaded serve every file of a folder.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from seedvr_cli.parallel.devices import DeviceSpec, thread_environment, worker_environment
from seedvr_cli.parallel.launcher import worker_context
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.parallel.worker import ProcessorFactory, worker_main

EventKind = Literal["ready", "init_failed", "done", "failed", "died", "note"]


@dataclass
class WorkerSlot:
    """One device's worker. ``assigned`` lists the ``(job_id, chunk)`` it holds, in the order sent."""

    slot: int
    device: DeviceSpec
    process: Any = None
    conn: Connection | None = None
    ready: bool = False
    dropped: bool = False
    failures: int = 0
    job_sent: int | None = None
    assigned: list[tuple[int, int]] = field(default_factory=list)
    running: tuple[int, int] | None = None  # the chunk its processor is working on
    init_error: str = ""
    spawned_at: float = 0.0  # time.monotonic() when its process was started

    @property
    def alive(self) -> bool:
        return self.process is not None and not self.dropped

    @property
    def unprocessed(self) -> int:
        """Chunks it holds that its processor has not finished: the running one and those queued
        behind it. Chunks it started before the running one are only being written to disk (a
        worker runs its chunks in the order they were sent): they need no room in its queue."""
        if self.running in self.assigned:
            return len(self.assigned) - self.assigned.index(self.running)
        return len(self.assigned)


@dataclass
class WorkerEvent:
    kind: EventKind
    slot: WorkerSlot
    job_id: int | None = None
    chunk: int | None = None
    detail: str = ""
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    seconds: float = 0.0  # "done": the chunk's time in the worker; "ready": from spawn to ready
    build_seconds: float = 0.0  # "ready": the part of it spent building the processor (loading models)
    held: list[tuple[int, int]] = field(default_factory=list)  # for "died": what it was holding
    was_ready: bool = False  # for "died": whether its processor had been built
    running: tuple[int, int] | None = None  # for "died": the chunk being processed, if known


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class WorkerPool:
    """Spawned workers for ``devices``, each building its processor once with ``factory``.

    Use as a context manager; workers start on the first ``start()`` (``run_job`` calls it only
    when there is work, so a fully resumed or empty input never loads a model).
    """

    def __init__(self, devices: list[DeviceSpec], factory: ProcessorFactory) -> None:
        if not devices:
            raise ValueError("a worker pool needs at least one device")
        self.devices = list(devices)
        try:
            self._factory_blob = pickle.dumps(factory)
        except Exception as exc:
            raise TypeError(f"the processor factory must be picklable to reach spawned workers: {exc}") from exc
        self._ctx = worker_context()
        self.slots = [WorkerSlot(i, d) for i, d in enumerate(self.devices)]
        self._started = False
        self._next_job = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close(graceful=exc_info[0] is None)

    # -- processes --------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        # An exception that skips close() must not leave the interpreter joining idle workers forever.
        atexit.register(self.close, graceful=False)
        for slot in self.slots:
            self.spawn(slot)

    def spawn(self, slot: WorkerSlot) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            # The whole environment as it is now: a fork server's children inherit the one it had
            # when it started.
            args=(child_end, slot.device, self._factory_blob,
                  {**os.environ, **worker_environment(slot.device), **thread_environment(len(self.devices))}),
            name=f"seedvr-worker-{slot.device.label}",
            # Not daemonic: a processor may need child processes of its own (e.g. compile workers).
            daemon=False,
        )
        slot.spawned_at = time.monotonic()
        process.start()
        child_end.close()  # so that the parent sees EOF when the child goes away
        slot.process, slot.conn = process, parent_end
        slot.ready, slot.job_sent, slot.assigned, slot.init_error, slot.running = False, None, [], "", None

    def retire(self, slot: WorkerSlot) -> None:
        """Stop ``slot``'s worker for good (its device is dropped for the rest of the pool's life)."""
        slot.dropped = True
        self._stop(slot, graceful=False)

    def kill(self, slot: WorkerSlot) -> None:
        """Kill a hung worker; its death is then reported by ``poll`` with what it held."""
        if slot.process is not None and slot.process.is_alive():
            slot.process.kill()

    def _stop(self, slot: WorkerSlot, *, graceful: bool, timeout: float = 5.0) -> None:
        self._stop_all([(slot, graceful)], timeout)

    @staticmethod
    def _stop_all(slots: list[tuple[WorkerSlot, bool]], timeout: float) -> None:
        """Stop every ``(slot, graceful)`` worker at once, then wait for them together (each takes
        about a second to tear down its CUDA context). Graceful ones are asked to stop and killed if
        they have not within ``timeout``; the others are killed at once: workers ignore SIGTERM (it
        may reach the whole process group), and have nothing to save (a half-written spill file is
        removed on resume)."""
        stopping = []
        for slot, graceful in slots:
            process, conn = slot.process, slot.conn
            slot.process, slot.conn, slot.ready, slot.assigned, slot.running = None, None, False, [], None
            if process is None:
                continue
            if graceful and conn is not None:
                try:
                    conn.send(("stop",))
                except OSError:
                    graceful = False
            if not graceful:
                process.kill()
            stopping.append((process, conn, graceful))
        deadline = time.monotonic() + timeout
        for process, _, graceful in stopping:
            if graceful:
                process.join(max(0.0, deadline - time.monotonic()))
        for process, _, _ in stopping:
            if process.is_alive():
                process.kill()
        for process, conn, _ in stopping:
            process.join()
            if conn is not None:
                conn.close()

    def close(self, *, graceful: bool = True) -> None:
        """Stop every worker: ``graceful`` asks idle ones to stop, anything else is terminated."""
        self._stop_all([(slot, graceful and not slot.assigned) for slot in self.slots], timeout=5.0)
        atexit.unregister(self.close)

    @property
    def live_slots(self) -> list[WorkerSlot]:
        return [s for s in self.slots if s.alive]

    # -- messages ---------------------------------------------------------------------------

    def new_job_id(self) -> int:
        self._next_job += 1
        return self._next_job

    def send_task(self, slot: WorkerSlot, job_id: int, task: ChunkTask, *, source: Any, context: Any,
                  spill_dir: Path, durable: bool) -> None:
        """Hand ``task`` to ``slot`` (introducing the job to the worker first if it is new to it)."""
        assert slot.conn is not None
        if slot.job_sent != job_id:
            slot.conn.send(("job", job_id, source, context, str(spill_dir), durable))
            slot.job_sent = job_id
        slot.conn.send(("task", job_id, task))
        slot.assigned.append((job_id, task.index))

    def poll(self, timeout: float) -> list[WorkerEvent]:
        """Events from workers within ``timeout`` seconds: messages first, then deaths."""
        live = [s for s in self.slots if s.process is not None]
        if not live:
            time.sleep(min(timeout, 0.05))
            return []
        by_handle: dict[Any, WorkerSlot] = {}
        for slot in live:
            by_handle[slot.conn] = slot
            by_handle[slot.process.sentinel] = slot
        ready = wait(list(by_handle), timeout)
        events: list[WorkerEvent] = []
        touched = {id(by_handle[h]): by_handle[h] for h in ready}
        for slot in touched.values():
            process = slot.process
            # Whether it was dead *before* draining: then everything it sent is already in the pipe.
            # Checked after, a "done" sent just before dying could be left unread and its chunk redone.
            dead = process is not None and not process.is_alive()
            events.extend(self._drain(slot))
            if dead:
                process.join()
                held, was_ready, running = list(slot.assigned), slot.ready, slot.running
                detail = describe_exit(process.exitcode)
                if slot.conn is not None:
                    slot.conn.close()
                slot.process, slot.conn, slot.ready, slot.assigned, slot.running = None, None, False, [], None
                events.append(WorkerEvent("died", slot, detail=detail, held=held, was_ready=was_ready,
                                          running=running))
        return events

    def _drain(self, slot: WorkerSlot) -> list[WorkerEvent]:
        events = []
        conn = slot.conn
        while conn is not None:
            try:
                if not conn.poll():
                    break
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready":
                slot.ready = True
                events.append(WorkerEvent("ready", slot, seconds=time.monotonic() - slot.spawned_at,
                                          build_seconds=message[1]))
            elif kind == "init_failed":
                slot.init_error = message[1]
                events.append(WorkerEvent("init_failed", slot, detail=message[1]))
            elif kind == "started":
                slot.running = (message[1], message[2])
            elif kind == "note":
                events.append(WorkerEvent("note", slot, message[1], detail=message[2]))
            elif kind == "done":
                _, job_id, chunk, shape, dtype, seconds = message
                self._unassign(slot, job_id, chunk)
                events.append(WorkerEvent("done", slot, job_id, chunk, shape=shape, dtype=dtype, seconds=seconds))
            elif kind == "failed":
                _, job_id, chunk, detail = message
                self._unassign(slot, job_id, chunk)
                events.append(WorkerEvent("failed", slot, job_id, chunk, detail=detail))
        return events

    @staticmethod
    def _unassign(slot: WorkerSlot, job_id: int, chunk: int) -> None:
        if (job_id, chunk) in slot.assigned:
            slot.assigned.remove((job_id, chunk))
