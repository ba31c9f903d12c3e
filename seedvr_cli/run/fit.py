"""``--vram auto``: choose the memory savers (and, last, the window length) that let the largest
input of a run fit the GPU memory a worker may use.

The budget is ``--max-vram``, else the free memory of the run's GPUs as NVML reports it before any
worker starts (``parallel.gpu_memory``), less what a CUDA context takes. Candidates go from the
fastest to the most frugal, and the first whose estimate (``run.vram``) fits under the budget,
less a margin for the allocator's rounding and fragmentation, wins:

1. no saver;
2. the DiT's weights in host memory while the VAE codes (same pictures; one upload of the weights
   per window, a few percent of its time; at 1080p the decode sets the peak, and the idle DiT
   weights beside it are 6.3 / 15.3 GiB for the 3B / 7B);
3. BlockSwap of every block and the layers around them (same pictures, no slower per window on an
   H200: the copies hide behind the compute);
4. on top, VAE tiles of 1024, 768, 512, 384 and 256 pixels (pictures change a little at tile
   seams), with the VAE offloaded while the DiT runs where the DiT phase sets the peak;
5. the same with DiT tiles (``memory.dit_tiling``: large outputs, where the DiT's tokens set the
   peak; pictures change a little at tile seams, the DiT costs more);
6. then shorter windows, with the same savers again (pictures change most: fewer frames seen at once).

``step_down`` gives the next candidate after the one in use, for a chunk that still ran out of
memory (the estimate is a model; fragmentation and other processes are not in it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from seedvr_cli.config import MemorySettings
from seedvr_cli.errors import UsageError
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.run.vram import ModelFacts, VRAMEstimate, estimate_vram

# Measured peaks sat up to 6 % below or above the estimate; allocator rounding comes on top.
MARGIN = 0.9
TILE_SIZES = (1024, 768, 512, 384, 256)
# What a CUDA context and the allocator's first pools take before the models load (H200, torch 2.11).
CONTEXT_GIB = 0.75
# Window lengths tried when no saver is enough, longest first (all 4n+1).
WINDOW_STEPS = (29, 25, 21, 17, 13, 9, 5, 1)


def tile_overlap(tile: int) -> int:
    """VAE tile overlap for a tile size: 128 px where the tile allows. With the tiles sharing
    statistics what a seam still adds is the tiles' cut receptive fields (~4 latents deep); at
    64 px of overlap that was 8-23 % over the interiors' error, at 128 px 0-1 %
    (docs/benchmarks.md). At 1080p the full-size pass needs no more tiles for it; with 512 px
    tiles the half-size one needs 6 instead of 4 (~8 % of the 8 GB row's window throughput)."""
    return max(tile // 8, min(128, tile // 4))


@dataclass(frozen=True)
class Candidate:
    memory: MemorySettings
    window_frames: int
    what: str


@dataclass(frozen=True)
class Fit:
    memory: MemorySettings
    window_frames: int  # frames per window (the --batch-size to use)
    estimate: VRAMEstimate
    reason: str  # one line for the user


def candidates(facts: ModelFacts, model_size: tuple[int, int], window_frames: int, memory: MemorySettings,
               min_window: int = 1) -> list[Candidate]:
    """Every candidate in the order they are tried (lightest first)."""
    blocks = dit_config(facts.variant).num_layers
    swapped = replace(memory, blocks_to_swap=blocks, swap_io_components=True)
    found = [Candidate(memory, window_frames, "no memory saver needed"),
             Candidate(replace(memory, dit_offload_device="cpu"), window_frames,
                       "the DiT in host memory while the VAE codes (--dit-offload-device cpu)"),
             Candidate(swapped, window_frames, f"BlockSwap of all {blocks} blocks and the layers around them")]
    windows = [window_frames] + [frames for frames in WINDOW_STEPS if min_window <= frames < window_frames]
    for frames in windows:
        for dit_tiles in (False, True):
            for tile in TILE_SIZES:
                memory = replace(swapped, vae_tiling="on", vae_tile_size=tile, vae_tile_overlap=tile_overlap(tile))
                if dit_tiles:
                    memory = replace(memory, dit_tiling="on")
                tiled = _with_vae_offload_if_it_helps(facts, model_size, frames, memory)
                what = f"BlockSwap of all {blocks} blocks + VAE tiles of {tile} px"
                if dit_tiles:
                    what += f" + DiT tiles of {memory.dit_tile_size} px"
                if tiled.offloads_vae:
                    what += " + VAE offload"
                if frames != window_frames:
                    what += f" + {frames}-frame windows (--batch-size {frames}: pictures change)"
                found.append(Candidate(tiled, frames, what))
    return found


def _with_vae_offload_if_it_helps(facts: ModelFacts, model_size: tuple[int, int], window_frames: int,
                                  memory: MemorySettings) -> MemorySettings:
    offloaded = replace(memory, vae_offload_device="cpu")
    if (estimate_vram(facts, model_size, window_frames, offloaded).total_gib
            < estimate_vram(facts, model_size, window_frames, memory).total_gib):
        return offloaded
    return memory


def budget_line(budget: float, source: str) -> str:
    return f"--max-vram {budget:g}" if source == "--max-vram" else f"{budget:.1f} GiB free on {source}"


def fit_memory(facts: ModelFacts, model_size: tuple[int, int], window_frames: int, memory: MemorySettings,
               budget: float | None = None, source: str = "--max-vram", min_window: int = 1) -> Fit:
    """The lightest candidate whose estimate fits ``budget`` GiB (default ``memory.max_vram_gib``)
    with the margin. ``min_window``: windows must stay longer than the temporal overlap."""
    budget = memory.max_vram_gib if budget is None else budget
    if budget is None:
        raise ValueError("fit_memory needs a budget (max_vram_gib)")
    found = candidates(facts, model_size, window_frames, memory, min_window)
    for candidate in found:
        estimate = estimate_vram(facts, model_size, candidate.window_frames, candidate.memory)
        if estimate.total_gib <= MARGIN * budget:
            return Fit(candidate.memory, candidate.window_frames, estimate,
                       f"--vram auto, {budget_line(budget, source)}: {candidate.what} "
                       f"(estimate {estimate.total_gib:.1f} GiB at {model_size[1]}x{model_size[0]}, "
                       f"{candidate.window_frames}-frame windows)")
    last = found[-1]
    smallest = estimate_vram(facts, model_size, last.window_frames, last.memory)
    raise UsageError(f"{budget_line(budget, source)}: even with every block swapped, 256 px VAE tiles and "
                     f"{last.window_frames}-frame windows the {model_size[1]}x{model_size[0]} output needs about "
                     f"{smallest.total_gib:.1f} GiB; lower --resolution, or allow more memory")


def step_down(facts: ModelFacts, model_size: tuple[int, int], window_frames: int,
              memory: MemorySettings) -> Candidate | None:
    """The next saver after ``memory`` that keeps the window length (a chunk's windows are
    planned already), or None when there is none left."""
    found = [c for c in candidates(facts, model_size, window_frames, memory) if c.window_frames == window_frames]
    current = estimate_vram(facts, model_size, window_frames, memory).total_gib
    for candidate in found:
        if estimate_vram(facts, model_size, window_frames, candidate.memory).total_gib < current:
            return candidate
    return None
