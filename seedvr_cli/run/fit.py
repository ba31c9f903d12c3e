"""``--vram auto``: choose the memory savers that let the largest input of a run fit the budget.

The budget is ``--max-vram`` (the parent never touches a GPU, so without it there is nothing to
fit to and the settings stay as given). Candidates go from the fastest to the most frugal, and
the first whose estimate (``run.vram``) fits under the budget, less a margin for the allocator's
rounding and fragmentation, wins: no saver; BlockSwap of every block and the layers around them
(same pictures, no slower per window on an H200); then VAE tiles of 1024, 768, 512, 384 and 256
pixels on top (pictures change a little at tile seams). The window length is never changed: that
would change the pictures more than any saver.
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


@dataclass(frozen=True)
class Fit:
    memory: MemorySettings
    estimate: VRAMEstimate
    reason: str  # one line for the user


def candidates(facts: ModelFacts, memory: MemorySettings) -> list[tuple[MemorySettings, str]]:
    blocks = dit_config(facts.variant).num_layers
    swapped = replace(memory, blocks_to_swap=blocks, swap_io_components=True)
    found = [(memory, "no memory saver needed"),
             (swapped, f"BlockSwap of all {blocks} blocks and the layers around them")]
    for tile in TILE_SIZES:
        tiled = replace(swapped, vae_tiling="on", vae_tile_size=tile, vae_tile_overlap=tile // 8)
        found.append((tiled, f"BlockSwap of all {blocks} blocks + VAE tiles of {tile} px"))
    return found


def fit_memory(facts: ModelFacts, model_size: tuple[int, int], window_frames: int,
               memory: MemorySettings) -> Fit:
    """The lightest candidate whose estimate fits ``memory.max_vram_gib`` (with the margin)."""
    budget = memory.max_vram_gib
    if budget is None:
        raise ValueError("fit_memory needs a budget (max_vram_gib)")
    for settings, what in candidates(facts, memory):
        estimate = estimate_vram(facts, model_size, window_frames, settings)
        if estimate.total_gib <= MARGIN * budget:
            return Fit(settings, estimate, f"--vram auto, --max-vram {budget:g}: {what} "
                                           f"(estimate {estimate.total_gib:.1f} GiB at {model_size[1]}x{model_size[0]}, "
                                           f"{window_frames}-frame windows)")
    smallest = estimate_vram(facts, model_size, window_frames, candidates(facts, memory)[-1][0])
    raise UsageError(f"--max-vram {budget:g}: even with every block swapped and 256 px VAE tiles the "
                     f"{model_size[1]}x{model_size[0]} output needs about {smallest.total_gib:.1f} GiB; "
                     "lower --batch-size or --resolution, or allow more memory")
