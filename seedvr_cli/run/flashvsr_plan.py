"""The plan of one input for the FlashVSR engine: output size, temporal segments, chunks (one
segment each) and a VRAM estimate. Like ``run.plan``, nothing here depends on the devices.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from seedvr_cli.config import FlashVSRSettings, JobSpec
from seedvr_cli.errors import UserError
from seedvr_cli.media.discovery import Job
from seedvr_cli.parallel.tasks import ChunkTask, plan_chunks
from seedvr_cli.pipeline.flashvsr.choices import FlashVSRModel
from seedvr_cli.pipeline.flashvsr.preprocess import (
    output_size,
    streamed_frames,
    unit_range,
    upscale_and_crop,
    upscale_planes,
)
from seedvr_cli.pipeline.flashvsr.segments import SegmentPlan, plan_segments
from seedvr_cli.pipeline.flashvsr.stream import SegmentSettings
from seedvr_cli.pipeline.flashvsr.tiles import output_tile, plan_tiles
from seedvr_cli.pipeline.plan import FrameSize
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.run.outputs import output_keeps_alpha
from seedvr_cli.run.plan import InputPlan, input_range

GIB = 2**30
# Parameter counts of the published modules (../shared/reference/flashvsr/WEIGHTS.md).
PARAMETERS = {"dit": 1_418_996_800, "lq-proj": 287_845_888, "tcdecoder": 45_338_371, "wan-vae": 73_295_603}


@dataclass(frozen=True)
class FlashVSRVRAM:
    """Peak memory of one worker, in GiB: weights from the parameter counts, working memory from
    the model below. The working-memory model is NOT measured yet (the lead measures it on the
    device): it counts the tensors the glue and the models must hold at the peak and nothing of
    the allocator's slack, so treat it as a lower bound."""

    weights_gib: float
    working_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.working_gib


def estimate_flashvsr_vram(model: FlashVSRModel, settings: FlashVSRSettings, size: tuple[int, int],
                           segment_frames: int, bytes_per_value: int = 2) -> FlashVSRVRAM:
    """``size``: the output frame (height, width); ``segment_frames``: real frames of the longest segment.

    Working memory = the segment's LQ video in the compute dtype + the glue's float32 output buffer (and
    a tile's, when tiled) + the DiT's peak (its KV cache of ``2 * kv_ratio + 2`` latent frames in 30 blocks, plus
    one block's activations over the first chunk's 6 latent frames) + the decoder's peak (TCDecoder:
    ~3 maps of 256 channels per output pixel for one frame; Wan VAE: ~6 maps of 96 channels over 4
    frames per pixel, for a 480x832 tile when tiled).
    """
    weights = sum(PARAMETERS[name] for name in ("dit", "lq-proj", model.decoder)) * bytes_per_value
    height, width = size
    frames = streamed_frames(segment_frames)
    if settings.tiled_dit:
        side, overlap = output_tile(settings.tile_size, settings.tile_overlap, settings.scale)
        tile_h, tile_w = max((th, tw) for _, _, th, tw in plan_tiles(height, width, side, overlap))
    else:
        tile_h, tile_w = height, width
    lq = 3 * frames * height * width * bytes_per_value
    buffers = 3 * (frames - 4) * (height * width + (tile_h * tile_w if settings.tiled_dit else 0)) * 4
    tokens = (tile_h // 16) * (tile_w // 16)  # per latent frame
    kv_cache = 30 * 2 * int(2 * settings.kv_ratio + 2) * tokens * 1536 * bytes_per_value
    dit = 6 * tokens * (4 * 1536 + 8960) * bytes_per_value
    if model.decoder == "tcdecoder":
        decoder = 3 * 256 * tile_h * tile_w * bytes_per_value
    else:
        pixels = min(tile_h * tile_w, 480 * 832) if settings.tiled_vae else tile_h * tile_w
        decoder = 6 * 96 * 4 * pixels * bytes_per_value
    return FlashVSRVRAM(weights / GIB, (lq + buffers + kv_cache + dit + decoder) / GIB)


def segment_settings(spec: JobSpec) -> SegmentSettings:
    settings = spec.flashvsr
    return SegmentSettings(scale=settings.scale, sparse_ratio=settings.sparse_ratio, kv_ratio=settings.kv_ratio,
                           local_range=settings.local_range, color_fix=settings.color_fix, seed=settings.seed,
                           tiled_dit=settings.tiled_dit, tile_size=settings.tile_size,
                           tile_overlap=settings.tile_overlap)


def flashvsr_frame_size(job: Job, spec: JobSpec, reader) -> FrameSize:
    """The output frame: the input times ``--scale``, centre-cropped to multiples of 128."""
    scale = spec.flashvsr.scale
    try:
        size = output_size(reader.height, reader.width, scale)
    except ValueError as err:
        raise UserError(f"{job.input}: {err}; use a larger --scale or a larger input") from None
    return FrameSize(input=(reader.height, reader.width), short_side=size,
                     resized=(reader.height * scale, reader.width * scale), true=size, padded=size)


def plan_flashvsr_input(job: Job, spec: JobSpec, reader, model: FlashVSRModel, bytes_per_value: int = 2,
                        ) -> tuple[InputPlan, FrameSize, SegmentPlan, list[ChunkTask]]:
    first, frames = input_range(job, spec, reader)
    size = flashvsr_frame_size(job, spec, reader)
    segments = plan_segments(frames, segment_frames=spec.flashvsr.segment_frames,
                             overlap=spec.flashvsr.segment_overlap)
    tasks = plan_chunks(segments.segments, windows_per_chunk=1, shares=segments.chunk_shares)
    longest = max(segment.length for segment in segments.segments)
    vram = estimate_flashvsr_vram(model, spec.flashvsr, size.true, longest, bytes_per_value)
    deep = bool(reader.deep)
    plan = InputPlan(
        frames=frames, first_frame=first, input_size=(reader.height, reader.width), output_size=size.true,
        model_size=size.true, fps=str(reader.fps), windows=len(segments.segments), chunks=len(tasks),
        deep=deep, alpha=bool(reader.has_alpha) and output_keeps_alpha(job.output, spec.output_settings, deep),
        estimated_vram_gib=vram.total_gib, unit="segment",
    )
    return plan, size, segments, tasks


def compute_bytes(dtype: str) -> int:
    """Bytes per weight and activation value for ``--dtype`` (auto: bf16 on a GPU)."""
    return 4 if dtype == "fp32" else 2


def describe_vram(vram: FlashVSRVRAM) -> str:
    return (f"FlashVSR VRAM estimate: {vram.weights_gib:.1f} GiB weights + {vram.working_gib:.1f} GiB working "
            "memory (modelled; within 16 % of the peaks measured at real size on an H200)")


def output_dtype(deep: bool) -> torch.dtype:
    return torch.uint16 if deep else torch.uint8


def lq_like_output(scale: int):
    """``--compare``'s (and ``--preview``'s) left half for FlashVSR: each input frame as the model gets
    it (bicubic x ``scale``, centre-cropped), so both halves line up pixel for pixel; an alpha the
    output keeps goes through the same resize and crop."""
    return functools.partial(_lq_like_output, scale=scale)


def _lq_like_output(inputs, outputs: np.ndarray, *, scale: int) -> np.ndarray:
    frames = unit_range(torch.as_tensor(np.asarray(inputs)))
    lq = upscale_and_crop(frames[..., :3], scale, torch.float32)[0].permute(1, 2, 3, 0)  # [T, H, W, 3] in [-1, 1]
    picture = (lq + 1) / 2
    if outputs.shape[-1] == 4 and frames.shape[-1] == 4:
        alpha = upscale_planes(frames[..., 3:].permute(0, 3, 1, 2), scale).permute(0, 2, 3, 1)
        picture = torch.cat([picture, alpha], dim=-1)
    dtype = torch.uint16 if outputs.dtype == np.uint16 else torch.uint8
    return quantize(picture, dtype).numpy()
