"""``seedvr upscale`` end to end: inputs -> plans -> worker pool -> assembled, encoded outputs.

``run_upscale(spec, reporter)`` is the one function the CLI calls. Per input it probes the file,
plans output size, temporal windows and chunks (``run.plan``), and hands the chunks to the worker
pool, which streams finished frames into the writer. The pool, and with it every worker's loaded
models, lives for the whole run, across all inputs of a folder. One input that fails is reported
and the others go on.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from seedvr_cli.config import JobSpec, parse_shard
from seedvr_cli.errors import UserError
from seedvr_cli.media.discovery import Job, discover_jobs
from seedvr_cli.media.outputs import compare_output
from seedvr_cli.media.reader import open_reader
from seedvr_cli.parallel.devices import DeviceSpec, parse_devices
from seedvr_cli.parallel.engine import RunOptions, run_job
from seedvr_cli.parallel.gpu_memory import read_gpu_memory
from seedvr_cli.parallel.journal import fingerprint_input, job_key, workdir_for
from seedvr_cli.parallel.outputlock import OutputLock
from seedvr_cli.parallel.pool import WorkerPool
from seedvr_cli.parallel.progress import ProgressEvent, RunFailed
from seedvr_cli.parallel.tasks import shard_indices
from seedvr_cli.pipeline.temporal import padded_length
from seedvr_cli.run.cpu_time import cpu_fallback_warning
from seedvr_cli.run.engines import input_like_output_for, plan_for_engine, worker_context
from seedvr_cli.run.fit import CONTEXT_GIB, fit_memory
from seedvr_cli.run.flashvsr_fit import fit_flashvsr
from seedvr_cli.run.flashvsr_models import describe_flashvsr, resolve_flashvsr_files
from seedvr_cli.run.flashvsr_plan import (
    compute_bytes,
    describe_vram,
    estimate_flashvsr_vram,
    flashvsr_frame_size,
)
from seedvr_cli.run.flashvsr_processor import FlashVSRProcessorFactory
from seedvr_cli.run.leftovers import notes_on_other_workdirs, remove_workdirs
from seedvr_cli.run.models import ModelFiles, describe_models, resolve_models
from seedvr_cli.run.outcome import JobOutcome, Reporter, RunSummary, finish
from seedvr_cli.run.outputs import (
    DropLeadingFrames,
    check_encoders,
    deep_output_asked,
    open_output,
    output_settings_meta,
)
from seedvr_cli.run.plan import (
    InputPlan,
    frame_size,
    sequence_gap_note,
    short_input_note,
)
from seedvr_cli.run.preview import preview_one
from seedvr_cli.run.processor import SeedVRProcessorFactory
from seedvr_cli.run.scratch import remove_orphaned_temp_dirs, run_temp_dir
from seedvr_cli.run.side_by_side import with_comparison
from seedvr_cli.run.sources import InputSource
from seedvr_cli.run.space import SpaceNeed, disk_full_message, estimate_space, folder_bytes, is_disk_full, space_warning
from seedvr_cli.run.stats import StatsRecordingFactory, read_stats
from seedvr_cli.run.vram import ModelFacts, model_facts


def run_upscale(spec: JobSpec, reporter: Reporter) -> RunSummary:
    """Upscale every input of ``spec``; returns what happened to each (failures do not raise)."""
    started = time.monotonic()
    output_settings = spec.output_settings
    if spec.run.preview is not None:
        # A preview writes no output, so an existing one is no reason to stop (nor to skip).
        output_settings = replace(output_settings, overwrite=True, skip_existing=False)
    jobs = discover_jobs(spec.inputs, spec.output, output_settings, sequence=spec.sequence)
    outcomes: list[JobOutcome] = []
    if not spec.run.dry_run and all(job.skip for job in jobs):
        # A finished folder re-run with --skip-existing needs no model (nor its download).
        for job in jobs:
            outcomes.append(finish(reporter, JobOutcome(job, "skipped", message="output exists (--skip-existing)")))
        return RunSummary(outcomes, time.monotonic() - started, {}, {})
    check_encoders(jobs, spec.output_settings, sequence=spec.sequence, fps=spec.fps)
    flashvsr = spec.flashvsr_model
    facts = model_facts(spec.model) if flashvsr is None else None
    if flashvsr is None:
        spec = _fit_memory(spec, jobs, facts, reporter)
    else:
        spec = _fit_flashvsr_memory(spec, jobs, reporter)
    if spec.run.dry_run:
        models = describe_models(spec.model) if flashvsr is None else describe_flashvsr(spec.model, flashvsr)
        reporter.message(f"would use {models}")
        devices, line = _devices_for_dry_run(spec)
        reporter.message(line)
        cpu_fallback = _falls_back_to_cpu(spec, devices)
        for index, job in enumerate(jobs):
            outcomes.append(_dry_run(index, len(jobs), job, spec, reporter, facts, cpu_fallback))
        return RunSummary(outcomes, time.monotonic() - started, {}, {})
    if flashvsr is None:
        files = resolve_models(spec.model, spec.memory)
        reporter.message(f"model {files.dit}, vae {files.vae}, text embedding {files.text_embedding}")
        factory = SeedVRProcessorFactory(files, dtype=spec.model.dtype, memory=spec.memory, facts=facts,
                                         attention_backend=spec.model.attention, compile=spec.model.compile)
    else:
        files = resolve_flashvsr_files(spec.model, flashvsr)
        reporter.message(f"{flashvsr.name}: dit {files.dit}, LQ projector {files.lq_proj}, decoder {files.decoder}, "
                         f"prompt {files.prompt}")
        factory = FlashVSRProcessorFactory(flashvsr, files, spec.flashvsr, dtype=spec.model.dtype,
                                           max_vram_gib=spec.memory.max_vram_gib)
    devices = parse_devices(spec.run.devices)
    reporter.message(_device_line(spec, devices))
    cpu_fallback = _falls_back_to_cpu(spec, devices)
    for folder in remove_orphaned_temp_dirs():
        reporter.message(f"removed {folder}, a temporary folder of a run that was killed")
    with run_temp_dir("stats") as stats_dir:
        with WorkerPool(devices, StatsRecordingFactory(factory, stats_dir)) as pool:
            for index, job in enumerate(jobs):
                if job.skip:
                    outcomes.append(finish(reporter, JobOutcome(job, "skipped",
                                                                message="output exists (--skip-existing)")))
                    continue
                if spec.run.preview is not None:
                    outcomes.append(preview_one(index, len(jobs), job, spec, pool, reporter, files, facts))
                else:
                    outcomes.append(_run_one(index, len(jobs), job, spec, pool, reporter, files, facts, cpu_fallback))
        peaks, phases, peak_phases = read_stats(stats_dir)
    return RunSummary(outcomes, time.monotonic() - started, peaks, phases, peak_phases)


def _device_line(spec: JobSpec, devices: list[DeviceSpec]) -> str:
    line = "devices: " + ", ".join(device.label for device in devices)
    if len(devices) > 1:
        line += " (one worker each)"
    if _falls_back_to_cpu(spec, devices):
        line += " (--devices auto: no GPU is visible)"
    return line


def _devices_for_dry_run(spec: JobSpec) -> tuple[list[DeviceSpec], str]:
    """The devices a real run would use, said without failing: a plan may be made on a machine
    other than the one that will run it."""
    try:
        devices = parse_devices(spec.run.devices)
    except UserError as err:
        return [], f"devices: none usable on this machine ({err})"
    return devices, _device_line(spec, devices)


def _falls_back_to_cpu(spec: JobSpec, devices: list[DeviceSpec]) -> bool:
    """Whether ``--devices auto`` found no GPU (the user did not choose the CPU)."""
    return spec.run.devices.strip().lower() == "auto" and bool(devices) and devices[0].kind == "cpu"


def _warn_if_slow_on_cpu(reporter: Reporter, job: Job, plan: InputPlan, facts: ModelFacts | None,
                         spec: JobSpec) -> None:
    variant = "flashvsr" if spec.flashvsr_model is not None else facts.variant if facts is not None else None
    warning = cpu_fallback_warning(job.input, plan, variant)
    if warning is not None:
        reporter.message(f"warning: {warning}")


def _fit_memory(spec: JobSpec, jobs: list[Job], facts: ModelFacts | None, reporter: Reporter) -> JobSpec:
    """``--vram auto``: the savers (and if need be the window length) that the largest input of the
    run needs under the budget (the workers load their models once, for every input)."""
    if spec.memory.vram != "auto":
        return spec
    budget = _memory_budget(spec, reporter)
    if budget is None:
        return spec
    if facts is None:
        reporter.message("--vram auto: the models are not known before they are downloaded; "
                         "memory savers stay as given")
        return spec
    largest = _largest_input(spec, jobs, lambda job, reader: frame_size(job, spec, reader).padded,
                             key=lambda size: size[0] * size[1])
    if largest is None:
        return spec
    fit = fit_memory(facts, largest, padded_length(spec.process.batch_size), spec.memory, budget=budget[0],
                     source=budget[1], min_window=spec.process.temporal_overlap + 1)
    reporter.message(fit.reason)
    process = spec.process
    if fit.window_frames < padded_length(process.batch_size):
        process = replace(process, batch_size=fit.window_frames)
    return replace(spec, memory=fit.memory, process=process)


def _fit_flashvsr_memory(spec: JobSpec, jobs: list[Job], reporter: Reporter) -> JobSpec:
    """``--vram auto`` for FlashVSR: the DiT tiles that the largest input of the run needs under the
    budget (``run.flashvsr_fit``); settings given on the command line are kept."""
    if spec.memory.vram != "auto":
        return spec
    budget = _memory_budget(spec, reporter)
    if budget is None:
        return spec
    largest = _largest_input(
        spec, jobs,
        lambda job, reader: (flashvsr_frame_size(job, spec, reader).true,
                             min(reader.num_frames, spec.flashvsr.segment_frames)),
        key=lambda found: (found[0][0] * found[0][1], found[1]))
    if largest is None:
        return spec
    fit = fit_flashvsr(spec.flashvsr_model, spec.flashvsr, largest[0], largest[1], budget[0], budget[1],
                       compute_bytes(spec.model.dtype))
    reporter.message(fit.reason)
    return replace(spec, flashvsr=fit.settings)


def _largest_input(spec: JobSpec, jobs: list[Job], measure, key):
    """``measure(job, reader)`` of the input of the run that ranks highest by ``key`` (the first of
    equals), or None when no input can be read (those are reported when they are planned)."""
    largest = None
    for job in jobs:
        if job.skip:
            continue
        try:
            with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
                found = measure(job, reader)
        except UserError:
            continue
        if largest is None or key(found) > key(largest):
            largest = found
    return largest


def _memory_budget(spec: JobSpec, reporter: Reporter) -> tuple[float, str] | None:
    """GiB a worker may use and where that figure comes from: ``--max-vram``, else the smallest free
    memory of the run's GPUs (read without a CUDA context), less a context's worth."""
    if spec.memory.max_vram_gib is not None:
        return spec.memory.max_vram_gib, "--max-vram"
    try:
        devices = parse_devices(spec.run.devices)
    except UserError:
        return None  # reported when the run starts
    gpus = [device.index for device in devices if device.kind == "cuda"]
    if not gpus:
        return None
    memory = read_gpu_memory(gpus)
    if memory is None:
        reporter.message("--vram auto: could not read the GPUs' free memory (no NVML); memory savers stay as "
                         "given (--max-vram GIB sets the budget by hand)")
        return None
    free, index = min((m.free, i) for i, m in zip(gpus, memory))
    return free / 2**30 - CONTEXT_GIB, f"cuda:{index}"


def _run_one(index: int, total: int, job: Job, spec: JobSpec, pool: WorkerPool, reporter: Reporter,
             files: ModelFiles, facts: ModelFacts | None, cpu_fallback: bool = False) -> JobOutcome:
    started = time.monotonic()
    writer = None
    lock = None
    workdir: Path | None = None
    chunks = None
    need: SpaceNeed | None = None
    try:
        with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
            plan, size, temporal, tasks = plan_for_engine(job, spec, reader, facts)
            reporter.job_started(index, total, job, plan)
            # Only reached with --allow-short-input: said now, and again in the outcome for scripts.
            short = short_input_note(job, reader)
            if short is not None:
                reporter.message(f"warning: {short}; upscaling the {reader.num_frames} frames it has "
                                 "(--allow-short-input)")
            gap = sequence_gap_note(job, reader)
            if gap is not None:
                reporter.message(f"warning: {gap}")
            if cpu_fallback:
                _warn_if_slow_on_cpu(reporter, job, plan, facts, spec)
            deep_output = plan.deep or deep_output_asked(spec.output_settings)
            context = worker_context(spec, plan, size, temporal, deep_output)
            source = InputSource.of(job.input, spec.sequence, spec.fps, plan.first_frame, reader)
            output = Path(job.output)
            input_path = Path(job.input)
            fingerprint_path = input_path if input_path.exists() else input_path.parent
            key = job_key(fingerprint_input(fingerprint_path),
                          {**spec.pixel_settings(), "first": plan.first_frame, "frames": plan.frames,
                           "deep_output": deep_output, "alpha": plan.alpha, "model_files": files.identity()}, tasks)
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{output.parent}: cannot create the output folder ({err.strerror}); "
                                "choose another -o") from None
            shard = parse_shard(spec.run.shard) if spec.run.shard is not None else None
            # Before --restart removes anything: a second run of the same output must not touch the first's work.
            lock = OutputLock(output, shard)
            lock.acquire()
            workdir = workdir_for(output, key)
            leftovers = remove_workdirs(output) if spec.run.restart else notes_on_other_workdirs(output, workdir)
            for line in leftovers:
                reporter.message(line)
            chunks = None
            if shard is not None:
                chunks = shard_indices(tasks, *shard)
            else:
                writer = open_output(job.output, spec.output_settings, reader, first_frame=plan.first_frame,
                                     frames=plan.frames, size=size.true, deep=deep_output, alpha=plan.alpha)
                if spec.run.compare:
                    writer = with_comparison(writer, compare_output(job.output), spec.output_settings, reader, source,
                                             first_frame=plan.first_frame, frames=plan.frames, size=size.true,
                                             deep=deep_output, alpha=plan.alpha,
                                             like_output=input_like_output_for(spec))
            # Without resume a chunk is read back once and deleted: flushing it to the disk buys nothing.
            options = RunOptions(resume=spec.run.resume, restart=spec.run.restart, max_retries=spec.run.max_retries,
                                 max_in_flight=spec.run.max_in_flight, chunks=chunks,
                                 keep_workdir=chunks is not None, durable=spec.run.resume)
            need = estimate_space(
                tasks, chunks, frame=(*size.true, 4 if plan.alpha else 3), deep=deep_output, resume=spec.run.resume,
                in_flight=spec.run.max_in_flight or 2 * len(pool.devices) + 2,
                already=folder_bytes(workdir) if spec.run.resume and not spec.run.restart else 0,
                output=None if chunks is not None else job.output, settings=spec.output_settings, frames=plan.frames)
            warning = space_warning(output.parent, need, resume=spec.run.resume and chunks is None)
            if warning is not None:
                reporter.message(f"warning: {warning}")
            sink = DropLeadingFrames(writer, temporal.prepend) if writer is not None else None
            meta = {"input": str(Path(job.input).absolute()), "output": str(Path(job.output).absolute()),
                    "prepend": temporal.prepend, "width": size.true[1], "height": size.true[0],
                    "sequence": spec.sequence, "fps": str(reader.fps),
                    "first_frame": plan.first_frame, "frames": plan.frames, "deep": deep_output,
                    "alpha": plan.alpha, "output_settings": output_settings_meta(spec.output_settings)}
            result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key=key, sink=sink,
                             context=context, meta=meta, options=options,
                             progress=_output_frames_only(reporter.progress, temporal.prepend))
        notes = list(getattr(writer, "notes", []) or [])
        if short is not None:
            notes.append(f"short input: {short}")
        if gap is not None:
            notes.append(f"sequence gap: {gap}")
        for failure in result.failures:
            notes.append(f"recovered: {failure.summary()}")
        if chunks is not None:
            message = f"shard {spec.run.shard}: {len(chunks)} chunks done in {result.workdir}; join with `seedvr assemble`"
            # The output frames this part covers (chunk ranges are on the timeline, prepended frames first).
            covered = (max(0, max(tasks[k].out_stop for k in chunks) - max(min(tasks[k].out_start for k in chunks),
                                                                        temporal.prepend)) if chunks else 0)
            return finish(reporter, JobOutcome(job, "done", covered, time.monotonic() - started, message, notes))
        return finish(reporter, JobOutcome(job, "done", plan.frames, time.monotonic() - started, "", notes))
    except (UserError, RunFailed, OSError) as err:
        # A full disk or a vanished folder fails this file, in one line; the others of a folder go on.
        if writer is not None:
            writer.abort()
        if is_disk_full(err):
            message = f"{job.input}: {_disk_full(err, Path(job.output).parent, workdir, chunks, need)}"
        elif isinstance(err, OSError):
            message = f"{job.output}: {err}"
        else:
            message = str(err)
        return finish(reporter, JobOutcome(job, "failed", 0, time.monotonic() - started, message))
    except BaseException:
        # Ctrl-C, or anything unforeseen between opening the writer and the engine taking it over:
        # never leave a partial output behind.
        if writer is not None:
            writer.abort()
        raise
    finally:
        if lock is not None:
            lock.release()


def _disk_full(err: BaseException, folder: Path, workdir: Path | None, chunks, need: SpaceNeed | None) -> str:
    """A full disk: a re-run would fill it again, so (except for a render-farm part, whose folder
    other shards share) the work folder goes, and the line says which disk and how much it takes."""
    removed = None
    if chunks is None and workdir is not None and workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        removed = workdir
    return disk_full_message(folder, need, removed=removed)


def _output_frames_only(progress, prepend: int):
    """The engine counts timeline frames; users expect the frames of their output (without the
    ``--prepend-frames`` context), as in the plan and the summary."""
    if not prepend:
        return progress

    def report(event: ProgressEvent) -> None:
        progress(replace(event, frames_done=max(0, event.frames_done - prepend),
                         frames_written=max(0, event.frames_written - prepend),
                         frames_total=max(0, event.frames_total - prepend)))

    return report


def _dry_run(index: int, total: int, job: Job, spec: JobSpec, reporter: Reporter,
             facts: ModelFacts | None, cpu_fallback: bool = False) -> JobOutcome:
    try:
        with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
            plan, size, temporal, _ = plan_for_engine(job, spec, reader, facts)
    except UserError as err:
        return finish(reporter, JobOutcome(job, "failed", message=str(err)))
    reporter.job_started(index, total, job, plan)
    if spec.flashvsr_model is not None:
        longest = max(segment.length for segment in temporal.segments)
        reporter.message(describe_vram(estimate_flashvsr_vram(spec.flashvsr_model, spec.flashvsr, size.true, longest,
                                                              compute_bytes(spec.model.dtype))))
    if cpu_fallback:
        _warn_if_slow_on_cpu(reporter, job, plan, facts, spec)
    return finish(reporter, JobOutcome(job, "planned", plan.frames))
