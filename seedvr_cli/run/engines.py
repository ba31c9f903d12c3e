"""What the two engines (SeedVR2, FlashVSR) do differently with each input: its plan, what the
workers need of it, and how an input frame is brought to the output's size beside it (``--preview``
and ``--compare``). One place for both the run and its preview, so that they never plan or show an
input differently."""

from __future__ import annotations

from seedvr_cli.config import JobSpec
from seedvr_cli.media.discovery import Job
from seedvr_cli.pipeline.plan import FrameSize
from seedvr_cli.run.flashvsr_plan import (
    compute_bytes,
    lq_like_output,
    output_dtype,
    plan_flashvsr_input,
    segment_settings,
)
from seedvr_cli.run.flashvsr_processor import FlashVSRContext
from seedvr_cli.run.plan import InputPlan, plan_input, window_settings
from seedvr_cli.run.processor import InputContext
from seedvr_cli.run.side_by_side import input_like_output
from seedvr_cli.run.vram import ModelFacts


def plan_for_engine(job: Job, spec: JobSpec, reader, facts: ModelFacts | None):
    """The plan of one input by the run's engine: (InputPlan, FrameSize, temporal plan, chunks)
    (FlashVSR's chunks are one segment each)."""
    if spec.flashvsr_model is None:
        return plan_input(job, spec, reader, facts)
    return plan_flashvsr_input(job, spec, reader, spec.flashvsr_model, compute_bytes(spec.model.dtype))


def worker_context(spec: JobSpec, plan: InputPlan, size: FrameSize, temporal, deep: bool):
    """What the workers need of the input (``InputContext`` or ``FlashVSRContext``)."""
    if spec.flashvsr_model is None:
        return InputContext(temporal, window_settings(spec, size, deep), alpha=plan.alpha)
    return FlashVSRContext(temporal, segment_settings(spec), output_dtype(deep), alpha=plan.alpha)


def input_like_output_for(spec: JobSpec):
    """How an input frame is brought to the output's size for a side-by-side picture (FlashVSR
    crops too: the frame as the model sees it)."""
    return input_like_output if spec.flashvsr_model is None else lq_like_output(spec.flashvsr.scale)
