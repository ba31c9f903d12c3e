"""The plan of one input: output size, temporal windows, chunks of work and a VRAM estimate.

Everything here depends on the input and the settings only, never on the devices that will run
it: that is what makes one GPU, several GPUs, a resumed run and a render-farm shard agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from seedvr_cli.config import JobSpec
from seedvr_cli.errors import UserError
from seedvr_cli.media.discovery import Job
from seedvr_cli.media.images import missing_numbers, sequence_numbers
from seedvr_cli.parallel.tasks import ChunkTask, plan_chunks
from seedvr_cli.pipeline.plan import FrameSize, plan_frame_size
from seedvr_cli.pipeline.temporal import TemporalPlan, padded_length, plan_windows
from seedvr_cli.pipeline.window import WindowSettings
from seedvr_cli.run.outputs import is_video_output, output_keeps_alpha
from seedvr_cli.run.vram import ModelFacts, estimate_vram


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
    estimated_vram_gib: float | None  # None: the models are not known well enough to say
    unit: str = "window"  # what ``windows`` counts: SeedVR2's windows, FlashVSR's segments


def frame_size(job: Job, spec: JobSpec, reader) -> FrameSize:
    """The sizes of one input's output frames (what is written, what the models see)."""
    process = spec.process
    return plan_frame_size(reader.height, reader.width, resolution=process.resolution,
                           max_resolution=process.max_resolution, scale=process.scale,
                           even=is_video_output(job.output, spec.output_settings))


def plan_input(job: Job, spec: JobSpec, reader, models: ModelFacts | None = None,
               ) -> tuple[InputPlan, FrameSize, TemporalPlan, list[ChunkTask]]:
    """Size, windows and chunks of one input opened as ``reader``, and the VRAM it needs with
    ``models`` (``run.vram.model_facts``)."""
    process = spec.process
    first, frames = input_range(job, spec, reader)
    size = frame_size(job, spec, reader)
    temporal = plan_windows(frames, batch_size=process.batch_size, overlap=process.temporal_overlap,
                            prepend=process.prepend_frames)
    tasks = plan_chunks(temporal.windows, windows_per_chunk=spec.run.windows_per_chunk, shares=temporal.chunk_shares)
    tasks = [_with_input_range(task, temporal) for task in tasks]
    deep = bool(reader.deep)
    plan = InputPlan(
        frames=frames, first_frame=first, input_size=(reader.height, reader.width), output_size=size.true,
        model_size=size.padded, fps=str(reader.fps), windows=len(temporal.windows), chunks=len(tasks),
        deep=deep, alpha=bool(reader.has_alpha) and output_keeps_alpha(job.output, spec.output_settings, deep),
        estimated_vram_gib=(None if models is None else
                            estimate_vram(models, size.padded, padded_length(process.batch_size), spec.memory).total_gib),
    )
    return plan, size, temporal, tasks


def input_range(job: Job, spec: JobSpec, reader) -> tuple[int, int]:
    """First input frame and frame count of the job (``--frames``); a cut-off file fails here
    unless ``--allow-short-input``."""
    first, stop = 0, reader.num_frames
    if spec.process.frames is not None:
        first, wanted_stop = spec.process.frames
        stop = reader.num_frames if wanted_stop is None else min(wanted_stop, reader.num_frames)
        if first >= reader.num_frames:
            raise UserError(f"{job.input}: --frames starts at {first} but the input has {reader.num_frames} frames")
    short = short_input_note(job, reader)
    if short is not None and not spec.run.allow_short_input:
        raise UserError(f"{short}; copy or download it again, or pass --allow-short-input to upscale the "
                        f"{reader.num_frames} frames it has")
    return first, stop - first


def short_input_note(job: Job, reader) -> str | None:
    """One line when the input holds fewer frames than its container announces (a cut-off file), else None."""
    info = reader.info
    if not info.short:
        return None
    return (f"{job.input}: the container announces {info.promised_frames} frames but only {info.frame_count} "
            "can be read; the file looks cut off")


def sequence_gap_note(job: Job, reader) -> str | None:
    """One line naming the frame numbers missing inside a numbered image sequence, else None."""
    files = getattr(reader, "files", None)
    numbers = sequence_numbers(files) if files else None
    missing = missing_numbers(numbers) if numbers else []
    if not missing:
        return None
    runs: list[list[int]] = []
    for number in missing:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:8]) + (" ..." if len(runs) > 8 else "")
    return (f"{job.input}: {len(missing)} frame number(s) missing from the sequence ({shown}); image outputs keep "
            "the input's numbers (the gap stays), a video output shows the files back to back")


def _with_input_range(task: ChunkTask, temporal: TemporalPlan) -> ChunkTask:
    """Chunks are planned on the timeline (prepended frames first); workers read input frames."""
    used = [i for window in task.windows for i in temporal.window_input_frames(window)]
    return replace(task, read_start=min(used), read_stop=max(used) + 1)


def window_settings(spec: JobSpec, size: FrameSize, deep: bool) -> WindowSettings:
    """How every window of an input is computed: the spec's pixel settings at the input's size,
    quantised to 16 bits for a deep output, else 8."""
    process = spec.process
    return WindowSettings(
        frame_size=size, color=process.color_correction, input_noise_scale=process.input_noise_scale,
        latent_noise_scale=process.latent_noise_scale, seed=process.seed,
        output_dtype=torch.uint16 if deep else torch.uint8,
    )
