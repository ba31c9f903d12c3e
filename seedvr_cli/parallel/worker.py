"""The worker process: one per device, builds its processor once, then runs chunks until told to stop.

Protocol with the parent, over one private pipe per worker (a worker dying mid-message can only
break its own pipe, never a queue the other workers share):

    parent -> worker   ("job", job_id, source, context, spill_dir, durable)   start a new input
                       ("task", job_id, ChunkTask)                              process one chunk
                       ("stop",)
    worker -> parent   ("ready",) | ("init_failed", traceback)
                       ("done", job_id, chunk, shape, dtype, seconds)           spill file is complete
                       ("failed", job_id, chunk, traceback)

The worker decodes its own frames (``source.open().read(start, stop)``) and hands the result back
as a spill file, so no frames ever cross the pipe.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import as_frames, spill_name, write_spill
from seedvr_cli.parallel.tasks import ChunkTask


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
    exactly ``task.out_frames`` frames as uint8/uint16 ``[n, H, W, C]`` (numpy or torch). It must be
    a pure function of its arguments: no state carried between chunks, noise seeded from the
    task's window positions. An optional ``close()`` is called when the worker stops.
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


def worker_main(conn, device: DeviceSpec, factory_blob: bytes, env: dict[str, str]) -> None:
    # Before anything can initialise CUDA: this worker sees only its own GPU.
    os.environ.update(env)
    # Ctrl-C reaches the whole process group; the parent decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(message: tuple) -> bool:
        try:
            conn.send(message)
            return True
        except (BrokenPipeError, EOFError, OSError):
            return False

    try:
        factory = pickle.loads(factory_blob)
        processor = factory(device)
    except BaseException:
        send(("init_failed", traceback.format_exc()))
        return
    if not send(("ready",)):
        return

    source: Any = None
    context: Any = None
    spill_dir = Path(".")
    durable = True
    reader: Any = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            kind = message[0]
            if kind == "stop":
                return
            if kind == "job":
                _close(reader)
                reader = None
                _, _, source, context, spill_dir, durable = message
                continue
            _, job_id, task = message
            started = time.perf_counter()
            try:
                if reader is None:
                    reader = source.open()
                frames = reader.read(task.read_start, task.read_stop)
                if _frame_count(frames) != task.read_frames:
                    raise ValueError(
                        f"the reader returned {_frame_count(frames)} frames for {task.read_start}:{task.read_stop}"
                    )
                out = as_frames(processor.process(task, frames, context))
                del frames
                if out.shape[0] != task.out_frames:
                    raise ValueError(f"processor returned {out.shape[0]} frames, expected {task.out_frames}")
                write_spill(Path(spill_dir) / spill_name(task.index), out, durable=durable)
                reply = ("done", job_id, task.index, tuple(out.shape), str(out.dtype), time.perf_counter() - started)
                del out
            except Exception:
                reply = ("failed", job_id, task.index, traceback.format_exc())
            if not send(reply):
                return
    finally:
        _close(reader)
        _close(processor)
