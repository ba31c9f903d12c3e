"""``seedvr upscale`` end to end: inputs -> plans -> worker pool -> assembled, encoded outputs.

``run_upscale(spec, reporter)`` is the one function the CLI calls. Per input it probes the file,
plans output size, temporal windows and chunks (independent of the device count), and hands the
chunks to the worker pool, which streams finished frames into the writer. The pool, and with it
every worker's loaded models, lives for the whole run, across all inputs of a folder. One input
that fails is reported and the others go on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from seedvr_cli.config import JobSpec
from seedvr_cli.errors import UserError
from seedvr_cli.media.discovery import Job, discover_jobs
from seedvr_cli.media.settings import VIDEO_CONTAINERS
from seedvr_cli.parallel.progress import ProgressEvent, RunFailed
from seedvr_cli.pipeline.temporal import TemporalPlan


class Reporter(Protocol):
    """Where the run tells the user what happens (Rich, plain lines or JSON lines)."""

    def job_started(self, index: int, total: int, job: Job, plan: InputPlan) -> None: ...

    def progress(self, event: ProgressEvent) -> None: ...

    def job_finished(self, outcome: JobOutcome) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass(frozen=True)
class InputPlan:
    """What will happen to one input (also what ``--dry-run`` prints)."""

    frames: int
    first_frame: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    model_size: tuple[int, int]
    fps: str
    windows: int
    chunks: int
    deep: bool
    alpha: bool
    estimated_vram_gib: float


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

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.outcomes if o.status == "done")


# ---------------------------------------------------------------- sources and sinks


@dataclass(frozen=True)
class InputSource:
    """Picklable description of an input that each worker opens itself (frames never cross IPC)."""

    path: str
    sequence: bool
    fps: float | None
    first_frame: int
    # What the parent's reader found (media.frameindex.FrameIndex, media.probe.MediaInfo): workers
    # reuse them instead of scanning and probing the file once more each.
    index: object = None
    info: object = None

    def open(self) -> _OffsetReader:
        from seedvr_cli.media.reader import open_reader

        reader = open_reader(self.path, sequence=self.sequence, fps=self.fps, index=self.index, info=self.info)
        return _OffsetReader(reader, self.first_frame)


class _OffsetReader:
    def __init__(self, reader, offset: int) -> None:
        self.reader, self.offset = reader, offset

    def read(self, start: int, stop: int):
        return self.reader.read(self.offset + start, self.offset + stop)

    def close(self) -> None:
        self.reader.close()


class _DropLeadingFrames:
    """Sink adapter: the first ``count`` frames of the timeline are prepended context, not output."""

    def __init__(self, sink, count: int) -> None:
        self.sink, self.remaining = sink, count

    def write(self, frames: np.ndarray) -> None:
        if self.remaining:
            dropped = min(self.remaining, len(frames))
            frames, self.remaining = frames[dropped:], self.remaining - dropped
        if len(frames):
            self.sink.write(frames)

    def close(self) -> None:
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


# ---------------------------------------------------------------- planning


def _estimate_vram_gib(model_size: tuple[int, int], windows: int, batch_size: int) -> float:
    """Rough peak VRAM of one worker at this output size (weights + sliced VAE decode + DiT).

    From the 1080p measurements in docs/benchmarks.md: the sliced decode dominates and grows with
    the pixels of one frame; the DiT activations grow with the pixels of a whole window.
    """
    pixels = model_size[0] * model_size[1]
    decode = 40.0 * pixels / (1088 * 1920)
    dit = 4.0 * pixels * batch_size / (1088 * 1920 * 21)
    weights = 7.5
    return weights + max(decode, dit)


def plan_input(job: Job, spec: JobSpec, reader):
    """Size, windows and chunks of one input; independent of the devices that will run it."""
    from seedvr_cli.parallel.tasks import plan_chunks
    from seedvr_cli.pipeline.blend import blend_weights
    from seedvr_cli.pipeline.plan import plan_frame_size
    from seedvr_cli.pipeline.temporal import plan_windows

    process = spec.process
    first, stop = 0, reader.num_frames
    if process.frames is not None:
        first, wanted_stop = process.frames
        stop = reader.num_frames if wanted_stop is None else min(wanted_stop, reader.num_frames)
        if first >= reader.num_frames:
            raise UserError(f"{job.input}: --frames starts at {first} but the input has {reader.num_frames} frames")
    frames = stop - first
    video_output = Path(job.output).suffix.lower() in VIDEO_CONTAINERS and not spec.output_settings.is_image_codec()
    size = plan_frame_size(reader.height, reader.width, resolution=process.resolution,
                           max_resolution=process.max_resolution, scale=process.scale, even=video_output)
    batch_size = process.batch_size
    temporal = plan_windows(frames, batch_size=batch_size, overlap=process.temporal_overlap,
                            prepend=process.prepend_frames)
    tasks = plan_chunks(temporal.windows, windows_per_chunk=spec.run.windows_per_chunk,
                        blend=lambda length: blend_weights(length, temporal.blend).tolist())
    tasks = [_with_input_range(task, temporal) for task in tasks]
    plan = InputPlan(
        frames=frames, first_frame=first, input_size=(reader.height, reader.width), output_size=size.true,
        model_size=size.padded, fps=str(reader.fps), windows=len(temporal.windows), chunks=len(tasks),
        deep=bool(reader.deep), alpha=bool(reader.has_alpha) and _output_keeps_alpha(job, spec, bool(reader.deep)),
        estimated_vram_gib=_estimate_vram_gib(size.padded, len(temporal.windows), batch_size),
    )
    return plan, size, temporal, tasks


def _output_keeps_alpha(job: Job, spec: JobSpec, deep: bool) -> bool:
    """Whether the output format stores alpha: if not, the alpha upscaling is skipped altogether."""
    suffix = Path(job.output).suffix.lower()
    if suffix in VIDEO_CONTAINERS and not spec.output_settings.is_image_codec():
        return spec.output_settings.encoding_for(job.output, deep=deep, alpha=True).keeps_alpha
    return suffix not in (".jpg", ".jpeg", ".bmp")


def _with_input_range(task, temporal: TemporalPlan):
    """Chunks are planned on the timeline (prepended frames first); workers read input frames."""
    used = [i for window in task.windows for i in temporal.window_input_frames(window)]
    return replace(task, read_start=min(used), read_stop=max(used) + 1)


# ---------------------------------------------------------------- the run


def run_upscale(spec: JobSpec, reporter: Reporter) -> RunSummary:
    """Upscale every input of ``spec``; returns what happened to each (failures do not raise)."""
    started = time.monotonic()
    jobs = discover_jobs(spec.inputs, spec.output, spec.output_settings, sequence=spec.sequence)
    outcomes: list[JobOutcome] = []
    if spec.run.dry_run:
        for index, job in enumerate(jobs):
            outcomes.append(_dry_run(index, len(jobs), job, spec, reporter))
        return RunSummary(outcomes, time.monotonic() - started, {}, {})

    from seedvr_cli.parallel.devices import parse_devices
    from seedvr_cli.parallel.pool import WorkerPool

    if all(job.skip for job in jobs):
        # A finished folder re-run with --skip-existing needs no model (nor its download).
        for job in jobs:
            outcomes.append(_finish(reporter, JobOutcome(job, "skipped", message="output exists (--skip-existing)")))
        return RunSummary(outcomes, time.monotonic() - started, {}, {})
    factory = _processor_factory(spec, reporter)
    devices = parse_devices(spec.run.devices)
    with tempfile.TemporaryDirectory(prefix="seedvr-stats-") as stats_dir:
        factory = _with_stats(factory, stats_dir)
        with WorkerPool(devices, factory) as pool:
            for index, job in enumerate(jobs):
                if job.skip:
                    outcome = JobOutcome(job, "skipped", message="output exists (--skip-existing)")
                    reporter.job_finished(outcome)
                    outcomes.append(outcome)
                    continue
                outcomes.append(_run_one(index, len(jobs), job, spec, pool, reporter, _model_identity(factory)))
        peaks, phases = _read_stats(stats_dir)
    return RunSummary(outcomes, time.monotonic() - started, peaks, phases)


def _processor_factory(spec: JobSpec, reporter: Reporter):
    from seedvr_cli.pipeline.processor import ModelFiles, SeedVRProcessorFactory
    from seedvr_cli.weights.download import resolve_model_file
    from seedvr_cli.weights.text_embedding import find_text_embedding

    models = spec.model
    dit = resolve_model_file(models.model, model_dir=models.model_dir, download=models.download)
    vae = resolve_model_file(models.vae, model_dir=models.model_dir, download=models.download)
    text = find_text_embedding(dit, override=models.text_embedding, model_dir=models.model_dir,
                               download=models.download)
    _check_kind(dit, "dit")
    _check_kind(vae, "vae")
    reporter.message(f"model {dit}, vae {vae}, text embedding {text}")
    return SeedVRProcessorFactory(ModelFiles(dit, vae, text), dtype=models.dtype)


def _check_kind(path: Path, kind: str) -> None:
    """Swapped or foreign checkpoints fail here, from the file header, in one line: inside the
    workers the same mistake would cost a model load per device and a retry before it surfaced."""
    from seedvr_cli.errors import CheckpointError
    from seedvr_cli.weights.detect import inspect_checkpoint

    info = inspect_checkpoint(path)
    if info.kind != kind:
        flag = {"dit": "--model", "vae": "--vae"}[info.kind]
        raise CheckpointError(f"{path}: is a SeedVR2 {info.kind.upper()} checkpoint, not a {kind.upper()}; "
                              f"pass it with {flag}")


def _model_identity(factory) -> dict[str, str]:
    """Name and size of each model file: part of the resume key, so that another checkpoint under
    the same name (or a registry name now pointing elsewhere) never mixes with finished chunks."""
    files = factory.factory.files
    return {role: f"{path.name}:{path.stat().st_size}" for role, path in
            (("dit", files.dit), ("vae", files.vae), ("text", files.text_embedding))}


def _with_stats(factory, stats_dir: str):
    from seedvr_cli.pipeline.processor import StatsRecordingFactory

    return StatsRecordingFactory(factory, stats_dir)


def _read_stats(stats_dir: str) -> tuple[dict[str, float], dict[str, float]]:
    peaks: dict[str, float] = {}
    phases: dict[str, float] = {}
    for path in Path(stats_dir).glob("*.json"):
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if stats.get("peak_vram_bytes"):
            peaks[stats["device"]] = stats["peak_vram_bytes"] / 2**30
        for phase, seconds in stats.get("phase_seconds", {}).items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    return peaks, phases


def _run_one(index: int, total: int, job: Job, spec: JobSpec, pool, reporter: Reporter,
             model_identity: dict[str, str]) -> JobOutcome:
    from seedvr_cli.media.reader import open_reader
    from seedvr_cli.media.writer import open_writer
    from seedvr_cli.parallel.engine import RunOptions, run_job
    from seedvr_cli.parallel.journal import fingerprint_input, job_key, stale_workdirs, workdir_for
    from seedvr_cli.parallel.outputlock import OutputLock
    from seedvr_cli.parallel.tasks import parse_shard, shard_indices
    from seedvr_cli.pipeline.chunk import ChunkSettings
    from seedvr_cli.pipeline.processor import InputContext

    started = time.monotonic()
    writer = None
    lock = None
    try:
        with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
            plan, size, temporal, tasks = plan_input(job, spec, reader)
            reporter.job_started(index, total, job, plan)
            deep_output = plan.deep or _deep_output_asked(spec.output_settings)
            import torch

            settings = ChunkSettings(
                frame_size=size, color=spec.process.color_correction,
                input_noise_scale=spec.process.input_noise_scale, latent_noise_scale=spec.process.latent_noise_scale,
                seed=spec.process.seed, output_dtype=torch.uint16 if deep_output else torch.uint8,
            )
            context = InputContext(temporal, settings, alpha=plan.alpha)
            source = InputSource(job.input, spec.sequence, spec.fps, plan.first_frame,
                                 getattr(reader, "exact_index", None), reader.info)
            output = Path(job.output)
            input_path = Path(job.input)
            fingerprint_path = input_path if input_path.exists() else input_path.parent
            key = job_key(fingerprint_input(fingerprint_path),
                          {**spec.pixel_settings(), "first": plan.first_frame, "frames": plan.frames,
                           "deep_output": deep_output, "alpha": plan.alpha, "model_files": model_identity}, tasks)
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{output.parent}: cannot create the output folder ({err.strerror}); "
                                "choose another -o") from None
            shard = parse_shard(spec.run.shard) if spec.run.shard is not None else None
            # Before --restart removes anything: a second run of the same output must not touch the first's work.
            lock = OutputLock(output, shard)
            lock.acquire()
            if spec.run.restart:
                for stale in stale_workdirs(output):
                    shutil.rmtree(stale, ignore_errors=True)
            workdir = workdir_for(output, key)
            chunks = None
            if shard is not None:
                chunks = shard_indices(tasks, *shard)
            else:
                # A sub-range has no matching audio or timestamps in the source: it gets plain CFR timing.
                whole = plan.first_frame == 0 and plan.frames == reader.num_frames
                writer = open_writer(job.output, spec.output_settings, width=size.true[1], height=size.true[0],
                                     source=reader if whole else _frame_subset(reader, plan), fps=reader.fps,
                                     deep=deep_output, alpha=plan.alpha)
            options = RunOptions(resume=spec.run.resume, restart=spec.run.restart, max_retries=spec.run.max_retries,
                                 max_in_flight=spec.run.max_in_flight, chunks=chunks,
                                 keep_workdir=chunks is not None)
            sink = _DropLeadingFrames(writer, temporal.prepend) if writer is not None else None
            meta = {"input": str(Path(job.input).absolute()), "output": str(Path(job.output).absolute()),
                    "prepend": temporal.prepend, "width": size.true[1], "height": size.true[0],
                    "sequence": spec.sequence, "fps": str(reader.fps),
                    "first_frame": plan.first_frame, "frames": plan.frames, "deep": deep_output,
                    "alpha": plan.alpha, "output_settings": _output_settings_meta(spec.output_settings)}
            result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key=key, sink=sink,
                             context=context, meta=meta, options=options,
                             progress=_output_frames_only(reporter.progress, temporal.prepend))
        notes = list(getattr(writer, "notes", []) or [])
        for failure in result.failures:
            notes.append(f"recovered: {failure.summary()}")
        if chunks is not None:
            message = f"shard {spec.run.shard}: {len(chunks)} chunks done in {result.workdir}; join with `seedvr assemble`"
            # The output frames this part covers (chunk ranges are on the timeline, prepended frames first).
            covered = (max(0, max(tasks[k].out_stop for k in chunks) - max(min(tasks[k].out_start for k in chunks),
                                                                        temporal.prepend)) if chunks else 0)
            return _finish(reporter, JobOutcome(job, "done", covered, time.monotonic() - started, message, notes))
        return _finish(reporter, JobOutcome(job, "done", plan.frames, time.monotonic() - started, "", notes))
    except (UserError, RunFailed) as err:
        if writer is not None:
            writer.abort()
        return _finish(reporter, JobOutcome(job, "failed", 0, time.monotonic() - started, str(err)))
    except OSError as err:
        # A full disk or a vanished folder fails this file, in one line; the others of a folder go on.
        if writer is not None:
            writer.abort()
        return _finish(reporter, JobOutcome(job, "failed", 0, time.monotonic() - started, f"{job.output}: {err}"))
    except BaseException:
        # Ctrl-C, or anything unforeseen between opening the writer and the engine taking it over:
        # never leave a partial output behind.
        if writer is not None:
            writer.abort()
        raise
    finally:
        if lock is not None:
            lock.release()


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


def _output_settings_meta(settings) -> dict:
    """The output flags, stored in the work directory so that ``seedvr assemble`` encodes the same way."""
    from dataclasses import asdict

    return asdict(settings)


def assemble_parts(workdirs: list[Path], output: str | None, *, overwrite: bool, keep: bool, progress=None):
    """Join render-farm parts (work directories of one job) into the output the job would have made."""
    from seedvr_cli.media.reader import open_reader
    from seedvr_cli.media.settings import OutputSettings
    from seedvr_cli.media.writer import open_writer
    from seedvr_cli.parallel.engine import assemble
    from seedvr_cli.parallel.journal import Journal

    meta = Journal.load(workdirs[0]).meta
    settings_meta = dict(meta.get("output_settings") or {})
    settings_meta["overwrite"] = overwrite
    settings_meta["skip_existing"] = False
    settings = OutputSettings(**settings_meta)
    target = output or meta["output"]
    reader = None
    source_path = Path(meta["input"])
    if source_path.exists() or meta.get("sequence") or "%" in meta["input"]:
        try:
            reader = open_reader(meta["input"], sequence=bool(meta.get("sequence")), fps=meta.get("fps"))
        except UserError:
            reader = None
    whole = reader is not None and meta.get("first_frame", 0) == 0 and meta.get("frames") == reader.num_frames
    writer = open_writer(target, settings, width=meta["width"], height=meta["height"],
                         source=reader if whole else None, fps=reader.fps if reader is not None else meta.get("fps"),
                         deep=bool(meta.get("deep")), alpha=bool(meta.get("alpha")))
    try:
        result = assemble(workdirs, _DropLeadingFrames(writer, int(meta.get("prepend", 0))), keep_workdir=keep,
                          progress=progress)
    except BaseException:
        writer.abort()
        raise
    finally:
        if reader is not None:
            reader.close()
    notes = list(getattr(writer, "notes", []) or [])
    if reader is None:
        notes.append(f"{meta['input']} not found: written at the recorded frame rate without its audio")
    return target, result, notes


@dataclass(frozen=True)
class _FileSubset:
    """What a writer needs of an image-sequence source cut by --frames: the files of those frames
    (their names become the output's), the rate, the depth and the alpha."""

    files: tuple
    fps: object
    deep: bool
    has_alpha: bool


def _frame_subset(reader, plan: InputPlan):
    """A sequence's frames keep their own file names under --frames; a video's have no such names
    (and no matching audio), so the writer gets no source and plain timing."""
    files = getattr(reader, "files", None)
    if not files:
        return None
    chosen = tuple(files[plan.first_frame:plan.first_frame + plan.frames])
    return _FileSubset(chosen, reader.fps, bool(reader.deep), bool(reader.has_alpha))


def _deep_output_asked(settings) -> bool:
    """``--10bit``, or a pixel format deeper than 8 bits: the chunks must then carry 16-bit values."""
    if settings.ten_bit:
        return True
    if settings.pix_fmt:
        from seedvr_cli.media.pixels import pixel_format_facts

        return pixel_format_facts(settings.pix_fmt).bit_depth > 8
    return False


def _finish(reporter: Reporter, outcome: JobOutcome) -> JobOutcome:
    reporter.job_finished(outcome)
    return outcome


def _dry_run(index: int, total: int, job: Job, spec: JobSpec, reporter: Reporter) -> JobOutcome:
    from seedvr_cli.media.reader import open_reader

    try:
        with open_reader(job.input, sequence=spec.sequence, fps=spec.fps) as reader:
            plan, *_ = plan_input(job, spec, reader)
    except UserError as err:
        return _finish(reporter, JobOutcome(job, "failed", message=str(err)))
    reporter.job_started(index, total, job, plan)
    return _finish(reporter, JobOutcome(job, "planned", plan.frames))

