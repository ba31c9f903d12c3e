"""What each worker process does with a chunk: the SeedVR2 models on its device, window by window.

``SeedVRProcessorFactory`` is the picklable recipe the worker pool sends to every worker: it loads
the DiT, the VAE and the text embedding once per device and returns a ``SeedVRProcessor`` that is
reused for every chunk of every input. ``InputContext`` carries what differs between inputs (the
temporal plan and the per-window settings). A chunk's output is a pure function of its task, the
input frames and that context, so chunks can run on any worker in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from seedvr_cli.config import MemorySettings
from seedvr_cli.memory.blockswap import BlockSwap, apply_blockswap
from seedvr_cli.memory.dit_tiling import TiledDiT
from seedvr_cli.memory.tiling import TiledVAE
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import ChunkFrames
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.pipeline.precision import resolve_compute_dtype
from seedvr_cli.pipeline.temporal import TemporalPlan
from seedvr_cli.pipeline.window import PhaseTimes, WindowSettings, upscale_window
from seedvr_cli.run.chunk_blend import ChunkBlend
from seedvr_cli.run.models import ModelFiles
from seedvr_cli.weights.detect import inspect_checkpoint
from seedvr_cli.weights.loader import load_dit, load_vae
from seedvr_cli.weights.text_embedding import load_text_embedding


@dataclass(frozen=True)
class InputContext:
    """Per-input facts a worker needs besides the chunk: the plan and the window settings."""

    plan: TemporalPlan
    settings: WindowSettings
    alpha: bool = True  # False: the output cannot store alpha, so an RGBA input's alpha is not upscaled


@dataclass(frozen=True)
class SeedVRProcessorFactory:
    """Builds the per-device processor once per worker (models loaded once, reused for every chunk)."""

    files: ModelFiles
    dtype: str = "auto"
    attention_backend: str = "sdpa"
    memory: MemorySettings = MemorySettings()

    def __call__(self, device: DeviceSpec) -> SeedVRProcessor:
        torch_device = torch.device(device.worker_torch_device)
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
            # No cuDNN autotuning: at 1080p it cost ~45 s on the first window for a 2% faster
            # steady state (H100, docs/benchmarks.md), a bad trade for all but very long clips.
            torch.backends.cudnn.benchmark = False
            if self.memory.max_vram_gib is not None:
                cap_vram(torch_device, self.memory.max_vram_gib)
        dtype = resolve_compute_dtype(self.dtype, torch_device)
        dit = self._load_dit(torch_device, dtype)
        vae = load_vae(self.files.vae, device=torch_device, dtype=dtype)
        if self.memory.vae_tiling == "on":
            tile, overlap = self.memory.vae_tile_size, self.memory.vae_tile_overlap
            vae = TiledVAE(vae, tile_size=(tile, tile), tile_overlap=(overlap, overlap))
        text = load_text_embedding(self.files.text_embedding, expected_dim=dit.config.txt_in_dim,
                                   device=torch_device, dtype=dtype)
        if self.memory.dit_tiling == "on":
            # Outside BlockSwap (installed in the model): every tile is a whole, swapped model call.
            dit = TiledDiT(dit, tile_size=self.memory.dit_tile_size, tile_overlap=self.memory.dit_tile_overlap)
        return SeedVRProcessor(dit=dit, vae=vae, text_embedding=text, dtype=dtype, device=torch_device)

    def _load_dit(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        """The DiT on ``device``; with BlockSwap its swapped tensors are loaded straight into host
        memory (they never pass through the GPU) and streamed in while it runs."""
        if not self.memory.swaps:
            return load_dit(self.files.dit, device=device, compute_dtype=dtype,
                            attention_backend=self.attention_backend)
        swap = BlockSwap(self.memory.blocks_to_swap, self.memory.swap_io_components, self.memory.dit_offload_device)
        blocks = inspect_checkpoint(self.files.dit).num_blocks
        offload = torch.device(self.memory.dit_offload_device)
        dit = load_dit(self.files.dit, device=device, compute_dtype=dtype, attention_backend=self.attention_backend,
                       placement=lambda name: offload if swap.group_of(name, blocks) is not None else device)
        # The swapper installs itself as the model's block runner (and hooks around it): the
        # model keeps it alive and is called exactly as before.
        apply_blockswap(dit, swap, device=device)
        return dit


def cap_vram(device: torch.device, gib: float) -> None:
    """Let this process's allocator take at most ``gib`` of ``device``: an allocation past it fails
    as if the card were that small (the chunk then fails like any out-of-memory error)."""
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), device)


@dataclass
class SeedVRProcessor:
    """Upscales the windows of a chunk and blends them on the device into the chunk's output frames."""

    dit: torch.nn.Module | TiledDiT
    vae: torch.nn.Module
    text_embedding: torch.Tensor
    dtype: torch.dtype
    device: torch.device
    times: PhaseTimes = field(default_factory=PhaseTimes)

    def process(self, task: ChunkTask, frames, context: InputContext) -> ChunkFrames:
        plan = context.plan
        # Windows stay float until blended: an overlap frame is quantised once, not per window.
        settings = replace(context.settings, dtype=self.dtype, output_dtype=None)
        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if not context.alpha and frames.shape[-1] == 4:
            frames = frames[..., :3]
        blend = ChunkBlend(task, context.settings.output_dtype)
        for window in task.windows:
            local = torch.tensor([i - task.read_start for i in plan.window_input_frames(window)])
            window_frames = frames.index_select(0, local).to(self.device, non_blocking=True)
            output = upscale_window(
                window_frames, vae=self.vae, dit=self.dit, text_embedding=self.text_embedding,
                settings=settings, window=window, times=self.times,
            )
            blend.add(window.start, output, plan.window_shares(window.index))
        return blend.result()

    def close(self) -> None:
        del self.dit, self.vae
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
