"""``seedvr upscale --preview N``: output frame N beside its input frame, in one PNG, for the cost
of loading the models and running one or two windows (FlashVSR: segments).

Only the windows that cover frame N run (chunks of one window each, so no other window is
computed), on the same worker pool, with the same plan, noise and blend as the full run: the
right half is the frame the full run writes (to within one level where overlapping windows are
summed in another order). Nothing is written beside the output but the PNG, and an existing PNG
is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from seedvr_cli.config import JobSpec
from seedvr_cli.errors import UserError
from seedvr_cli.media.discovery import Job
from seedvr_cli.media.outputs import preview_output
from seedvr_cli.media.reader import open_reader
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.media.writer import open_writer
from seedvr_cli.parallel.assembler import quantize_partials
from seedvr_cli.parallel.engine import RunOptions, run_job
from seedvr_cli.parallel.pool import WorkerPool
from seedvr_cli.parallel.progress import RunFailed
from seedvr_cli.parallel.spill import SpillReader, spill_name
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.run.engines import input_like_output_for, plan_for_engine, worker_context
from seedvr_cli.run.models import ModelFiles
from seedvr_cli.run.outcome import JobOutcome, Reporter, finish
from seedvr_cli.run.outputs import deep_output_asked
from seedvr_cli.run.side_by_side import side_by_side
from seedvr_cli.run.sources import InputSource
from seedvr_cli.run.vram import ModelFacts


def covering_chunks(tasks: Sequence[ChunkTask], frame: int) -> list[ChunkTask]:
    """The chunks whose output range holds timeline frame ``frame``."""
    return [task for task in tasks if task.out_start <= frame < task.out_stop]


def final_frame(chunks: Sequence[ChunkTask], frame: int, open_chunk: Callable[[int], SpillReader]) -> np.ndarray:
    """Timeline frame ``frame`` as the assembler would write it, from the finished ``chunks`` that
    cover it: the one chunk's final frame, or the sum of their partials quantised once."""
    readers = [open_chunk(task.index) for task in chunks]
    try:
        offsets = [frame - task.out_start for task in chunks]
        if len(readers) == 1:
            return readers[0].read_body(offsets[0], offsets[0] + 1)[0]
        total = sum(reader.read_partials(offset, offset + 1) for reader, offset in zip(readers, offsets))
        return quantize_partials(total, readers[0].dtype)[0]
    finally:
        for reader in readers:
            reader.close()


def preview_one(index: int, total: int, job: Job, spec: JobSpec, pool: WorkerPool, reporter: Reporter,
                files: ModelFiles, facts: ModelFacts | None) -> JobOutcome:
    """Write the preview PNG of ``job`` (frame ``spec.run.preview``); failures become the outcome."""
    started = time.monotonic()
    number = spec.run.preview
    target = preview_output(job.output, number)
    try:
        if target.exists() and not spec.output_settings.overwrite:
            raise UserError(f"{target}: already exists; pass --overwrite to replace it")
        # One window per chunk: the frame's windows run, and not their neighbours in a longer chunk.
        one_window = replace(spec, run=replace(spec.run, windows_per_chunk=1))
        with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
            plan, size, temporal, tasks = plan_for_engine(job, one_window, reader, facts)
            if number >= plan.frames:
                raise UserError(f"{job.input}: --preview {number} is past the last frame (the output has "
                                f"{plan.frames} frames, 0 to {plan.frames - 1}); choose a smaller frame number")
            frame = temporal.prepend + number
            chunks = covering_chunks(tasks, frame)
            reporter.message(f"[{index + 1}/{total}] preview of {job.input}, frame {number}: "
                             f"{len(chunks)} of {len(tasks)} {plan.unit}s")
            deep = plan.deep or deep_output_asked(spec.output_settings)
            context = worker_context(spec, plan, size, temporal, deep)
            source = InputSource.of(job.input, spec.sequence, spec.fps, plan.first_frame, reader)
            original = reader.read(plan.first_frame + number, plan.first_frame + number + 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Beside the output, on its disk; a one-off work directory that nothing resumes from.
            with tempfile.TemporaryDirectory(prefix=f".{target.name}.work-", dir=target.parent) as workdir:
                options = RunOptions(resume=False, durable=False, keep_workdir=True, max_retries=spec.run.max_retries,
                                     chunks=[task.index for task in chunks])
                run_job(pool, source=source, tasks=tasks, workdir=Path(workdir), key="preview", sink=None,
                        context=context, options=options,
                        progress=reporter.progress)
                result = final_frame(chunks, frame, lambda k: SpillReader(Path(workdir) / spill_name(k)))
        picture = side_by_side(original, result[None], input_like_output_for(spec))[0]
        writer = open_writer(target, OutputSettings(overwrite=spec.output_settings.overwrite),
                             width=picture.shape[1], height=picture.shape[0])
        writer.write(picture)
        writer.close()
        return finish(reporter, JobOutcome(job, "done", 1, time.monotonic() - started,
                                           f"wrote {target} (frame {number}: input left, output right)"))
    except (UserError, RunFailed) as err:
        return finish(reporter, JobOutcome(job, "failed", 0, time.monotonic() - started, str(err)))
    except OSError as err:
        return finish(reporter, JobOutcome(job, "failed", 0, time.monotonic() - started, f"{target}: {err}"))
