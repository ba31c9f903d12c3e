"""Workers per device, the chunk queue, overlap assembly and the resume journal.

The boundary with the rest of the tool (see each module for details):

- ``tasks.plan_chunks(windows, windows_per_chunk=, shares=)`` -> ``list[ChunkTask]``: the plan,
  fixed by the video and the settings, never by the device count.
- ``worker.FrameSource`` (picklable, ``open() -> reader.read(start, stop)``),
  ``worker.ProcessorFactory`` (picklable, ``factory(device) -> processor``, run once per worker) and
  ``worker.ChunkProcessor`` (``process(task, frames, context) -> spill.ChunkFrames``: final
  uint8/uint16 frames, float32 partial sums where the neighbouring chunks overlap).
- ``assembler.FrameSink``: ``write(frames)``, ``close()``, ``abort()``.
- ``devices.parse_devices(spec)``, ``pool.WorkerPool(devices, factory)``,
  ``engine.run_job(pool, source=, tasks=, workdir=, key=, sink=, ...)``, ``engine.assemble(workdir, sink)``,
  ``journal.fingerprint_input``, ``journal.job_key``, ``journal.workdir_for``.

How ``seedvr upscale`` drives it (one pool for all the inputs of a command)::

    with WorkerPool(parse_devices(spec), MyFactory(model_settings)) as pool:
        for video in inputs:
            tasks = plan_chunks(windows, windows_per_chunk=n, shares=temporal_plan.chunk_shares)
            key = job_key(fingerprint_input(video), pixel_settings, tasks)
            result = run_job(pool, source=MySource(video), tasks=tasks, key=key,
                             workdir=workdir_for(output, key), sink=open_writer(...),
                             context=per_file_settings, meta={"input": str(video)},
                             options=RunOptions(resume=..., restart=..., max_retries=...),
                             progress=render)            # RunFailed: sink aborted, journal kept
"""

from seedvr_cli.parallel.assembler import FrameSink
from seedvr_cli.parallel.devices import DeviceSpec, list_devices, parse_devices
from seedvr_cli.parallel.engine import RunOptions, assemble, run_job
from seedvr_cli.parallel.journal import fingerprint_input, job_key, stale_workdirs, workdir_for
from seedvr_cli.parallel.pool import WorkerPool
from seedvr_cli.parallel.progress import ProgressEvent, RunFailed, RunResult, WorkerFailure
from seedvr_cli.parallel.tasks import ChunkTask, plan_chunks, shard_indices
from seedvr_cli.parallel.worker import CallableSource, ChunkProcessor, FrameSource, ProcessorFactory

__all__ = [
    "CallableSource",
    "ChunkProcessor",
    "ChunkTask",
    "DeviceSpec",
    "FrameSink",
    "FrameSource",
    "ProcessorFactory",
    "ProgressEvent",
    "RunFailed",
    "RunOptions",
    "RunResult",
    "WorkerFailure",
    "WorkerPool",
    "assemble",
    "fingerprint_input",
    "job_key",
    "list_devices",
    "parse_devices",
    "plan_chunks",
    "run_job",
    "shard_indices",
    "stale_workdirs",
    "workdir_for",
]
