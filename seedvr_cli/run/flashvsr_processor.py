"""What a worker does with a chunk under the FlashVSR engine: one temporal segment through
``pipeline.flashvsr.stream.upscale_segment``, blended into the chunk's frames.

``load_flashvsr_streamer`` is where the FlashVSR models meet the glue: it loads, once per worker,
the files ``run.flashvsr_models`` resolved and puts them behind the segment seam
(``pipeline.flashvsr.models_streamer.ModelsStreamer``). The tests may hand the factory a
stand-in streamer instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from seedvr_cli.config import FlashVSRSettings
from seedvr_cli.errors import CheckpointError, ChunkOutOfMemory, out_of_memory_summary
from seedvr_cli.memory.wan_vae_tiling import tiled_decode
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import ChunkFrames
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.pipeline.flashvsr import choices as fv
from seedvr_cli.pipeline.flashvsr.alpha import segment_alpha
from seedvr_cli.pipeline.flashvsr.choices import FlashVSRModel
from seedvr_cli.pipeline.flashvsr.models_streamer import ModelsStreamer
from seedvr_cli.pipeline.flashvsr.segments import SegmentPlan
from seedvr_cli.pipeline.flashvsr.stream import SegmentSettings, SegmentStreamer, upscale_segment
from seedvr_cli.pipeline.precision import resolve_compute_dtype
from seedvr_cli.pipeline.window import PhaseTimes
from seedvr_cli.run.chunk_blend import ChunkBlend
from seedvr_cli.run.flashvsr_models import FlashVSRFiles
from seedvr_cli.weights.flashvsr import load_flashvsr_dit, load_lq_projector, load_prompt_embedding
from seedvr_cli.weights.flashvsr_decoders import load_tc_decoder, load_wan_vae_decoder


def load_flashvsr_streamer(files: FlashVSRFiles, model: FlashVSRModel, settings: FlashVSRSettings,
                           device: torch.device, dtype: torch.dtype,
                           notes: list[str] | None = None) -> SegmentStreamer:  # fmt: skip
    """The FlashVSR models of ``model`` (version and mode) loaded from ``files`` onto ``device`` in
    ``dtype``, behind the ``SegmentStreamer`` seam. ``settings.tiled_vae`` asks the full mode's Wan
    VAE decoder for its tiled decode (latent tiles ``choices.DEFAULT_VAE_TILE``, stride
    ``DEFAULT_VAE_TILE_STRIDE``). Lines worth telling the user about the files go to ``notes``."""
    dit = load_flashvsr_dit(files.dit, device=device, dtype=dtype)
    projector = load_lq_projector(files.lq_proj, f"v{model.version}", device=device, dtype=dtype)
    prompt = load_prompt_embedding(files.prompt, dit.config.text_dim, device=device, dtype=dtype)
    tiled = None
    if model.decoder == "tcdecoder":
        decoder, note = load_tc_decoder(files.decoder, device=device, dtype=dtype)
        if note is not None and notes is not None:
            notes.append(note)
    else:
        decoder = load_wan_vae_decoder(files.decoder, device=device, dtype=dtype)
        if settings.tiled_vae:
            tiled = functools.partial(tiled_decode, decoder, tile_size=fv.DEFAULT_VAE_TILE,
                                      tile_stride=fv.DEFAULT_VAE_TILE_STRIDE)  # fmt: skip
    # The compiled FlexAttention reads only the kept blocks; the plain masked softmax elsewhere
    # (FlexAttention uncompiled on the CPU evaluates every token pair and is no faster).
    backend = "flex" if device.type == "cuda" else "reference"
    return ModelsStreamer(dit, projector, decoder, model.mode, prompt, backend=backend, tiled_vae_decode=tiled)


@dataclass(frozen=True)
class FlashVSRContext:
    """Per-input facts a worker needs besides the chunk."""

    plan: SegmentPlan
    settings: SegmentSettings
    output_dtype: torch.dtype  # uint8, or uint16 for a deep output
    alpha: bool = False  # True: an RGBA input's alpha is upscaled beside the RGB (the output keeps it)


@dataclass(frozen=True)
class FlashVSRProcessorFactory:
    """Builds the per-device processor once per worker (models loaded once, reused for every chunk).

    ``streamer``: a ready ``SegmentStreamer`` to use instead of loading the models (the tests'
    stand-in; it must pickle, as the factory is sent to every worker)."""

    model: FlashVSRModel
    files: FlashVSRFiles | None
    settings: FlashVSRSettings = FlashVSRSettings()
    dtype: str = "auto"
    max_vram_gib: float | None = None
    streamer: object | None = None

    def __call__(self, device: DeviceSpec) -> FlashVSRProcessor:
        torch_device = torch.device(device.worker_torch_device)
        if torch_device.type == "cuda":
            from seedvr_cli.run.processor import cap_vram

            torch.cuda.set_device(torch_device)
            if self.max_vram_gib is not None:
                cap_vram(torch_device, self.max_vram_gib)
        dtype = resolve_compute_dtype(self.dtype, torch_device)
        streamer = self.streamer
        notes: list[str] = []
        if streamer is None:
            assert self.files is not None
            streamer = load_flashvsr_streamer(self.files, self.model, self.settings, torch_device, dtype, notes)
        return FlashVSRProcessor(streamer, dtype, torch_device, self.model, notes=notes)


@dataclass
class FlashVSRProcessor:
    """Streams the one segment of each chunk it is handed and blends it into the chunk's frames
    (with ``context.alpha``, an RGBA input's alpha upscaled beside them: ``pipeline.flashvsr.alpha``)."""

    streamer: SegmentStreamer
    dtype: torch.dtype
    device: torch.device
    model: FlashVSRModel
    times: PhaseTimes = field(default_factory=PhaseTimes)
    notes: list[str] = field(default_factory=list)

    def process(self, task: ChunkTask, frames, context: FlashVSRContext) -> ChunkFrames:
        [segment] = task.windows
        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        local = frames[segment.start - task.read_start : segment.stop - task.read_start].to(self.device)
        message = None
        try:
            with self.times("flashvsr", self.device):
                output = upscale_segment(local, self.streamer, context.settings, self.dtype)
        except torch.OutOfMemoryError as err:
            message = out_of_memory_summary(err)
        if message is not None:
            # Outside the except clause: the traceback's references to the segment's tensors are gone.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise ChunkOutOfMemory(_out_of_memory_line(self.device, message, local.shape, context.settings))
        if not bool(torch.isfinite(output).all()):
            raise CheckpointError(f"{self.model.name} gave NaN or infinite values at "
                                  f"{str(self.dtype).removeprefix('torch.')}: a checkpoint may be damaged "
                                  "(download it again) or not meant for this precision (try another --dtype)")
        if context.alpha and local.shape[-1] == 4:
            with self.times("alpha", self.device):
                alpha = segment_alpha(local[..., 3:], output, context.settings.scale)
            output = torch.cat([output, alpha], dim=-1)
        blend = ChunkBlend(task, context.output_dtype)
        blend.add(segment.start, output, context.plan.segment_shares(segment.index))
        return blend.result()

    def close(self) -> None:
        del self.streamer
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _out_of_memory_line(device: torch.device, message: str, shape: torch.Size, settings: SegmentSettings) -> str:
    """One line: where the segment ran out of memory and the FlashVSR settings that need less."""
    frames, height, width = shape[0], shape[1] * settings.scale, shape[2] * settings.scale
    if settings.tiled_dit:
        fix = (f"use a smaller --dit-tile-size (now {settings.tile_size} input px), shorter --segment-frames, "
               "or --vae-tiling on for the full mode")
    else:
        fix = "use --dit-tiling on (tiles of --dit-tile-size input px), shorter --segment-frames, or a smaller --scale"
    return (f"{device} ran out of GPU memory ({message}) on a {frames}-frame segment at about {width}x{height}; "
            f"{fix}")
