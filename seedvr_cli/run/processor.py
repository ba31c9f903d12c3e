"""What each worker process does with a chunk: the SeedVR2 models on its device, window by window.

``SeedVRProcessorFactory`` is the picklable recipe the worker pool sends to every worker: it loads
the DiT, the VAE and the text embedding once per device and returns a ``SeedVRProcessor`` that is
reused for every chunk of every input. ``InputContext`` carries what differs between inputs (the
temporal plan and the per-window settings). A chunk's output is a pure function of its task, the
input frames and that context, so chunks can run on any worker in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch

from seedvr_cli.config import MemorySettings
from seedvr_cli.errors import CheckpointError, ChunkOutOfMemory, out_of_memory_summary
from seedvr_cli.memory.blockswap import BlockSwap, apply_blockswap
from seedvr_cli.memory.offload import HostResidentWeights, OffloadedDiT, OffloadedVAE
from seedvr_cli.memory.dit_tiling import TiledDiT
from seedvr_cli.memory.tiling import TiledVAE
from seedvr_cli.models.attention_choice import choose_attention
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import ChunkFrames
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.pipeline.finite import FiniteGuard, NonFiniteError
from seedvr_cli.pipeline.precision import resolve_compute_dtype
from seedvr_cli.pipeline.subwindows import upscale_in_subwindows
from seedvr_cli.pipeline.temporal import TemporalPlan
from seedvr_cli.pipeline.window import PhaseTimes, WindowSettings, upscale_window
from seedvr_cli.run.chunk_blend import ChunkBlend
from seedvr_cli.run.compile import compile_blocks, compile_seconds, inductor_cache_dir
from seedvr_cli.run.fit import WINDOW_STEPS, step_down
from seedvr_cli.run.models import ModelFiles
from seedvr_cli.run.vram import ModelFacts
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
    attention_backend: str = "sdpa"  # a choice of --attention ("auto" picks per device)
    compile: bool = False  # --compile: the DiT blocks through torch.compile
    memory: MemorySettings = MemorySettings()
    # With --vram auto: what a chunk that runs out of memory needs to step down to the next saver.
    facts: ModelFacts | None = None

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
        attention, attention_note = choose_attention(self.attention_backend, torch_device, dtype)
        dit = self._load_dit(torch_device, dtype, attention)
        if self.compile:
            compile_blocks(dit)
        vae = load_vae(self.files.vae, device=torch_device, dtype=dtype)
        vae.conv_rings = self.memory.vae_conv_rings
        text = load_text_embedding(self.files.text_embedding, expected_dim=dit.config.txt_in_dim,
                                   device=torch_device, dtype=dtype)
        vae_weights = HostResidentWeights(vae, torch_device) if self.memory.offloads_vae else None
        dit_weights = HostResidentWeights(dit, torch_device) if self.memory.offloads_dit else None
        return SeedVRProcessor(dit=wrap_dit(dit, self.memory, dit_weights), vae=wrap_vae(vae, self.memory, vae_weights),
                               text_embedding=text, dtype=dtype, device=torch_device, memory=self.memory,
                               facts=self.facts if self.memory.vram == "auto" else None,
                               vae_module=vae, vae_weights=vae_weights, dit_module=dit, dit_weights=dit_weights,
                               files=self.files, notes=[f"{torch_device}: {attention_note}"] if attention_note else [],
                               compiling=self.compile)

    def _load_dit(self, device: torch.device, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        """The DiT on ``device``; with BlockSwap its swapped tensors are loaded straight into host
        memory (they never pass through the GPU) and streamed in while it runs."""
        if not self.memory.swaps:
            return load_dit(self.files.dit, device=device, compute_dtype=dtype, attention_backend=attention)
        swap = BlockSwap(self.memory.blocks_to_swap, self.memory.swap_io_components)
        blocks = inspect_checkpoint(self.files.dit).num_blocks
        offload = torch.device(swap.offload_device)
        dit = load_dit(self.files.dit, device=device, compute_dtype=dtype, attention_backend=attention,
                       placement=lambda name: offload if swap.group_of(name, blocks) is not None else device)
        # The swapper installs itself as the model's block runner (and hooks around it): the
        # model keeps it alive and is called exactly as before.
        apply_blockswap(dit, swap, device=device)
        return dit


def wrap_dit(dit: torch.nn.Module, memory: MemorySettings, host_weights: HostResidentWeights | None):
    """The DiT with the savers of ``memory`` around it (called as before): DiT tiles outside BlockSwap
    (installed in the model), so every tile is a whole, swapped model call; the phase offload
    outermost, so a window uploads the weights once whatever its tiles."""
    model = dit
    if memory.dit_tiling == "on":
        model = TiledDiT(model, tile_size=memory.dit_tile_size, tile_overlap=memory.dit_tile_overlap)
    if memory.offloads_dit:
        model = OffloadedDiT(model, host_weights)
    return model


def wrap_vae(vae: torch.nn.Module, memory: MemorySettings, host_weights: HostResidentWeights | None):
    """The VAE with the memory savers of ``memory`` around it (same ``encode``/``decode`` calls);
    ``host_weights``: the VAE's weights moved to the host, for ``memory.offloads_vae``."""
    codec = vae
    if memory.tiles_vae:
        tile, overlap = memory.vae_tile_size, memory.vae_tile_overlap
        codec = TiledVAE(vae, tile_size=(tile, tile), tile_overlap=(overlap, overlap),
                         shared_statistics=memory.vae_tile_statistics == "shared")
    if memory.offloads_vae:
        codec = OffloadedVAE(codec, host_weights)
    return codec


def cap_vram(device: torch.device, gib: float) -> None:
    """Let this process's allocator take at most ``gib`` of ``device``: an allocation past it fails
    as if the card were that small (the chunk then fails like any out-of-memory error)."""
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), device)


@dataclass
class SeedVRProcessor:
    """Upscales the windows of a chunk and blends them on the device into the chunk's output frames.

    With ``facts`` (``--vram auto``), a chunk that runs out of GPU memory is retried with the next
    saver of ``run.fit`` (more swapping, smaller VAE tiles, VAE offload, DiT tiles), then, with no saver
    left, with each planned window upscaled in shorter sub-windows (``pipeline.subwindows``); each step
    then stays in use for the following chunks and is left in ``notes`` for the worker to pass on.
    """

    dit: object  # the DiT module inside its wrappers (TiledDiT, OffloadedDiT)
    vae: object
    text_embedding: torch.Tensor
    dtype: torch.dtype
    device: torch.device
    times: PhaseTimes = field(default_factory=PhaseTimes)
    memory: MemorySettings = MemorySettings()
    facts: ModelFacts | None = None
    vae_module: torch.nn.Module | None = None  # the bare VAE inside ``vae``'s wrappers
    vae_weights: HostResidentWeights | None = None
    dit_module: torch.nn.Module | None = None  # the bare DiT inside ``dit``'s wrappers
    dit_weights: HostResidentWeights | None = None
    notes: list[str] = field(default_factory=list)
    files: ModelFiles | None = None  # named when a model's output is not finite
    compiling: bool = False  # --compile, until the first chunk has reported its compile time
    # The last step-down: every planned window is upscaled in sub-windows of at most this many frames.
    subwindow_frames: int | None = None

    def process(self, task: ChunkTask, frames, context: InputContext) -> ChunkFrames:
        while True:
            try:
                done = self._process(task, frames, context)
                if self.compiling:
                    self.compiling = False
                    self.notes.append(f"{self.device}: compiled the DiT blocks in {compile_seconds():.1f} s "
                                      f"(cached in {inductor_cache_dir()})")
                return done
            except torch.OutOfMemoryError as err:
                message = out_of_memory_summary(err)
                phase = self.times.take_failed_phase()
                if phase is not None:
                    message = f"in the {phase}: {message}"
            # Outside the except clause: the traceback's references to the window's tensors are gone.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if not self._step_down(task, context, message):
                raise ChunkOutOfMemory(
                    f"{self.device} ran out of GPU memory ({message}) at {_size_text(context)} with "
                    f"{self._windows_text(task, context)} and {describe_memory(self.memory)}; "
                    + ("use --vram auto with --max-vram set below the card's free memory, or lower --batch-size "
                       "or --resolution" if self.subwindow_frames is None else
                       "lower --resolution, or free GPU memory for it")) from None

    def _process(self, task: ChunkTask, frames, context: InputContext) -> ChunkFrames:
        plan = context.plan
        # Windows stay float until blended: an overlap frame is quantised once, not per window.
        settings = replace(context.settings, dtype=self.dtype, output_dtype=None)
        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if not context.alpha and frames.shape[-1] == 4:
            frames = frames[..., :3]
        blend = ChunkBlend(task, context.settings.output_dtype)
        finite = FiniteGuard()
        upscale = upscale_window if self.subwindow_frames is None else partial(
            upscale_in_subwindows, max_frames=self.subwindow_frames)
        for window in task.windows:
            local = torch.tensor([i - task.read_start for i in plan.window_input_frames(window)])
            window_frames = frames.index_select(0, local).to(self.device, non_blocking=True)
            output = upscale(
                window_frames, vae=self.vae, dit=self.dit, text_embedding=self.text_embedding,
                settings=settings, window=window, times=self.times, finite=finite,
            )
            blend.add(window.start, output, plan.window_shares(window.index))
        try:
            finite.check()  # once per chunk: the flags stay on the device until here
        except NonFiniteError as err:
            raise CheckpointError(self._blame(err, context.settings.color)) from None
        return blend.result()

    def _blame(self, err: NonFiniteError, color: str) -> str:
        """One line naming what produced the NaN or infinity and what to do about it."""
        if err.stage == "color":
            return f"{err}; choose another --color-correction than {color}"
        model = None
        if self.files is not None:
            model = self.files.dit if err.stage == "dit" else self.files.vae
        named = f"checkpoint {model}" if model is not None else "checkpoint"
        return (f"{err} with {named} at {str(self.dtype).removeprefix('torch.')}: the file may be damaged "
                "(download it again) or not meant for this precision (try another --dtype)")

    def _step_down(self, task: ChunkTask, context: InputContext, reason: str) -> bool:
        """One saver more (or shorter windows), with a note naming where the chunk ran out."""
        if self.facts is None or self.vae_module is None:
            return False
        return self._add_saver(task, context, reason) or self._shorten_windows(task, context, reason)

    def _add_saver(self, task: ChunkTask, context: InputContext, reason: str) -> bool:
        found = step_down(self.facts, context.settings.frame_size.padded, task.windows[0].padded_length, self.memory)
        # Swapping is only ever added here (taking it back would need the whole DiT on the GPU at once).
        if found is None or (self.memory.swaps and found.memory.blocks_to_swap != self.memory.blocks_to_swap):
            return False
        memory = found.memory
        if memory.swaps and not self.memory.swaps:
            apply_blockswap(self.dit_module, BlockSwap(memory.blocks_to_swap, memory.swap_io_components),
                            device=self.device)
            if self.dit_weights is not None:
                # The swapped blocks went (from the host, where offloaded weights rest) into the
                # swapper's own buffers; the offload keeps moving only the rest.
                self.dit_weights.drop_taken()
        if memory.offloads_dit and self.dit_weights is None:
            self.dit_weights = HostResidentWeights(self.dit_module, self.device)
        self.dit = wrap_dit(self.dit_module, memory, self.dit_weights)
        if memory.offloads_vae and self.vae_weights is None:
            self.vae_weights = HostResidentWeights(self.vae_module, self.device)
        self.vae = wrap_vae(self.vae_module, memory, self.vae_weights)
        self.memory = memory
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            # The run's reported peak is the one of the settings that work.
            torch.cuda.reset_peak_memory_stats(self.device)
            self.times.forget_peak()
        self.notes.append(f"chunk {task.index} ran out of GPU memory ({reason}); retrying it and the rest with "
                          f"{found.what}")
        return True

    def _shorten_windows(self, task: ChunkTask, context: InputContext, reason: str) -> bool:
        """The last step: the planned windows keep their place (the plan, the blend and the chunks
        are fixed) and are computed in sub-windows one ``fit.WINDOW_STEPS`` length shorter."""
        in_use = max(window.padded_length for window in task.windows)
        if self.subwindow_frames is not None:
            in_use = min(in_use, self.subwindow_frames)
        shorter = [frames for frames in WINDOW_STEPS if frames < in_use]
        if not shorter:
            return False
        self.subwindow_frames = shorter[0]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.times.forget_peak()
        self.notes.append(f"chunk {task.index} ran out of GPU memory ({reason}); retrying it and the rest with "
                          f"{self._windows_text(task, context)} (pictures change)")
        return True

    def _windows_text(self, task: ChunkTask, context: InputContext) -> str:
        if self.subwindow_frames is None:
            return f"{task.windows[0].padded_length}-frame windows"
        planned = max(window.padded_length for window in context.plan.windows)
        return f"{self.subwindow_frames}-frame windows inside each {planned}-frame window"

    def close(self) -> None:
        del self.dit, self.vae, self.vae_module, self.vae_weights, self.dit_module, self.dit_weights
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def describe_memory(memory: MemorySettings) -> str:
    parts = []
    if memory.swaps:
        parts.append(f"{memory.blocks_to_swap} blocks swapped" + (" + io layers" if memory.swap_io_components else ""))
    if memory.tiles_vae:
        parts.append(f"VAE tiles of {memory.vae_tile_size} px")
    if memory.offloads_vae:
        parts.append("VAE offload")
    if memory.offloads_dit:
        parts.append("DiT offload during the VAE phases")
    return "no memory saver" if not parts else ", ".join(parts)


def _size_text(context: InputContext) -> str:
    height, width = context.settings.frame_size.padded
    return f"{width}x{height}"
