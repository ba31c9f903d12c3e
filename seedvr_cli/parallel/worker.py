"""The worker process: one per device, builds its processor once, then runs chunks until told to stop.

Protocol with the parent, over one private pipe per worker (a worker dying mid-message can only
break its own pipe, never a queue the other workers share):

    parent -> worker   ("job", job_id, source, context, spill_dir, durable)   start a new input
                       ("task", job_id, ChunkTask)                              process one chunk
                       ("stop",)
    worker -> parent   ("ready", build_seconds) | ("init_failed", traceback)
                       ("started", job_id, chunk)                               processing begins
                       ("done", job_id, chunk, shape, dtype, seconds)           spill file is complete
                       ("failed", job_id, chunk, traceback)

The worker decodes its own frames (``source.open().read(start, stop)``) and hands the result back
as a spill file, so no frames ever cross the pipe. Decoding the next chunk and writing the last
one overlap with processing (``_Stages``), so the device does not wait for disk or decoder when
the parent keeps a second chunk queued. The parent may send a job and a task before "ready": the
first chunk's frames are then read while the processor is being built (the models loading).
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from seedvr_cli.errors import UserError
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import as_frames, spill_name, write_spill
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.parallel.timeline import Timeline


class FrameReader(Protocol):
    """An opened input: ``read(start, stop)`` gives frames ``[start, stop)`` as ``[n, H, W, C]``."""

    def read(self, start: int, stop: int) -> Any: ...


class FrameSource(Protocol):
    """A picklable description of an input, opened inside the worker (e.g. a path plus reader options)."""

    def open(self) -> FrameReader: ...


class ChunkProcessor(Protocol):
    """Per-device processing, built once per worker and reused for every chunk of every input.

    ``process`` receives the task, the frames ``[task.read_start, task.read_stop)`` as the reader
    returned them, and the job's ``context`` (caller-defined per input, e.g. output size); it returns
    ``spill.ChunkFrames`` of exactly ``task.out_frames`` frames: ``task.shared_head`` and
    ``task.shared_tail`` of them as float32 partial sums weighted by the chunk's shares, the rest as
    final uint8/uint16 ``[n, H, W, C]`` (numpy or torch; a plain integer array when the chunk shares
    no frame). It must be a pure function of its arguments: no state carried between chunks, noise
    seeded from the task's window positions. An optional ``close()`` is called when the worker stops.
    """

    def process(self, task: ChunkTask, frames: Any, context: Any) -> Any: ...


class ProcessorFactory(Protocol):
    """Picklable callable run once in each worker: loads the models for ``device`` and returns a processor.

    ``device.worker_torch_device`` is the torch device to use there (``cuda:0``: the worker only
    sees its own GPU), ``device.label`` its name in messages.
    """

    def __call__(self, device: DeviceSpec) -> ChunkProcessor: ...


class CallableSource:
    """A ``FrameSource`` that calls ``opener(*args, **kwargs)``; ``opener`` must be importable by name."""

    def __init__(self, opener, *args: Any, **kwargs: Any) -> None:
        self.opener, self.args, self.kwargs = opener, args, kwargs

    def open(self) -> FrameReader:
        return self.opener(*self.args, **self.kwargs)


def _close(thing: Any) -> None:
    close = getattr(thing, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing a reader must never hide the real outcome
            pass


def _frame_count(frames: Any) -> int:
    return int(frames.shape[0]) if hasattr(frames, "shape") else len(frames)


@dataclass
class _Item:
    """A chunk moving through the worker's stages; ``error`` set once a stage failed."""

    job_id: int
    task: ChunkTask
    spill_dir: Path
    durable: bool
    context: Any = None
    frames: Any = None
    out: Any = None
    error: str | None = None
    started: float = 0.0


_STOP = None


class _Stages:
    """Decode the next chunk and write the last one while the processor works on the current one.

    receiver thread: pipe -> inbox            (jobs and tasks, in order)
    decoder thread:  inbox -> decoded (1 slot) reads frames of the next chunk
    main thread:     decoded -> encoded        runs the processor (owns the device)
    writer thread:   encoded (1 slot) -> spill file + "done"/"failed" to the parent
    At most one decoded and one finished chunk wait beside the one being processed. The receiver,
    decoder and writer run from the start; ``process`` only once the processor is built.
    """

    def __init__(self, conn, timeline: Timeline) -> None:
        self.conn, self.timeline = conn, timeline
        self.processor: ChunkProcessor | None = None
        self.inbox: queue.Queue = queue.Queue()
        self.decoded: queue.Queue = queue.Queue(maxsize=1)
        self.encoded: queue.Queue = queue.Queue(maxsize=1)
        self.parent_gone = threading.Event()
        self._send_lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (BrokenPipeError, EOFError, OSError):
                self.parent_gone.set()

    def receive(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.parent_gone.set()  # the parent is gone: abandon queued work
                message = ("stop",)
            self.inbox.put(message)
            if message[0] == "stop":
                return

    def decode(self) -> None:
        reader: Any = None
        job: tuple = ()
        try:
            while True:
                message = self.inbox.get()
                if message[0] == "stop":
                    return
                if message[0] == "job":
                    _close(reader)
                    reader, job = None, message
                    continue
                _, job_id, task = message
                _, _, source, context, spill_dir, durable = job
                item = _Item(job_id, task, Path(spill_dir), durable, context, started=time.perf_counter())
                if self.parent_gone.is_set():
                    continue
                try:
                    with self.timeline.span("read", task.index):
                        if reader is None:
                            reader = source.open()
                        item.frames = reader.read(task.read_start, task.read_stop)
                    if _frame_count(item.frames) != task.read_frames:
                        raise ValueError(f"the reader returned {_frame_count(item.frames)} frames "
                                         f"for {task.read_start}:{task.read_stop}")
                except Exception as exc:
                    item.frames, item.error = None, _failure_detail(exc)
                self.decoded.put(item)
        finally:
            _close(reader)
            self.decoded.put(_STOP)

    def process(self, processor: ChunkProcessor) -> None:
        self.processor = processor
        try:
            while True:
                with self.timeline.span("wait_input"):
                    item = self.decoded.get()
                if item is _STOP:
                    return
                if item.error is None and not self.parent_gone.is_set():
                    # Lets the parent blame the right chunk if this process dies while processing.
                    self.send(("started", item.job_id, item.task.index))
                    try:
                        with self.timeline.span("process", item.task.index):
                            out = self.processor.process(item.task, item.frames, item.context)
                        item.out = as_frames(out, item.task)
                    except Exception as exc:
                        item.out, item.error = None, _failure_detail(exc)
                    self._send_notes(item.job_id)
                item.frames = None
                if item.error is not None:
                    # Said now, not behind the spill writes: should the next chunk kill this process,
                    # a failure still queued for the writer would be lost and that chunk blamed alone.
                    self.send(("failed", item.job_id, item.task.index, item.error))
                    continue
                with self.timeline.span("wait_output"):
                    self.encoded.put(item)
        finally:
            self.encoded.put(_STOP)

    def _send_notes(self, job_id: int) -> None:
        """What the processor wants the user to know (e.g. that it stepped down after running out of memory)."""
        notes = getattr(self.processor, "notes", None)
        while notes:
            self.send(("note", job_id, notes.pop(0)))

    def write(self) -> None:
        while True:
            item = self.encoded.get()
            if item is _STOP:
                return
            if self.parent_gone.is_set():
                continue
            task = item.task
            if item.error is None:
                try:
                    with self.timeline.span("spill_write", task.index):
                        write_spill(item.spill_dir / spill_name(task.index), item.out, durable=item.durable)
                except Exception as exc:
                    item.error = _failure_detail(exc)
            if item.error is None:
                self.send(("done", item.job_id, task.index, tuple(item.out.shape), str(item.out.dtype),
                           time.perf_counter() - item.started))
            else:
                self.send(("failed", item.job_id, task.index, item.error))
            item.out = None


def _failure_detail(exc: Exception) -> str:
    """What the parent is told about a failed chunk: a ``UserError``'s own line (already written for
    the user: a damaged input, a checkpoint giving NaN), any other error's traceback."""
    if isinstance(exc, UserError):
        return str(exc)
    return traceback.format_exc()


def worker_main(conn, device: DeviceSpec, factory_blob: bytes, env: dict[str, str]) -> None:
    # Before anything can initialise CUDA: this worker sees only its own GPU (and its share of cores).
    os.environ.update(env)
    threads = env.get("OMP_NUM_THREADS", "")
    if "torch" in sys.modules and threads.isdigit() and int(threads) > 0:
        # Forked from the fork server, torch is imported already: the variable alone comes too late.
        sys.modules["torch"].set_num_threads(int(threads))
    # Ctrl-C reaches the whole process group, and so can SIGTERM (systemd, Slurm) and SIGHUP (a closed
    # terminal): the parent decides what stops, and when, and stops the workers together.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    timeline = Timeline(device.label)
    stages = _Stages(conn, timeline)
    # Started before the models load, so that the first chunk's frames are read meanwhile. Daemons:
    # a worker whose models fail to load returns with them still waiting on the pipe or a queue.
    threads = [
        threading.Thread(target=stages.receive, name="receive", daemon=True),
        threading.Thread(target=stages.decode, name="decode", daemon=True),
        threading.Thread(target=stages.write, name="write", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        factory = pickle.loads(factory_blob)
        building = time.perf_counter()
        with timeline.span("load"):
            processor = factory(device)
        build_seconds = time.perf_counter() - building
    except BaseException:
        stages.send(("init_failed", traceback.format_exc()))
        return
    stages.send(("ready", build_seconds))
    try:
        stages.process(processor)  # on the main thread, which owns the device
        threads[2].join()
    finally:
        _close(processor)
