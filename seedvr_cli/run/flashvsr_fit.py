"""``--vram auto`` for the FlashVSR engine: the DiT tiles (and, in full mode, VAE tiles) the largest
input of a run needs under the memory budget, chosen from the same estimate ``--dry-run`` prints
(``flashvsr_plan.estimate_flashvsr_vram``).

At 1080p most of FlashVSR's memory is the DiT's KV cache, which grows with the area it attends
over: DiT tiles (the reference tools' ``tiled_dit``, tiles in input pixels) shrink it with the
tile. Candidates go from the settings as given to ever smaller tiles; the first whose estimate fits
under the budget, less ``fit.MARGIN``, wins. Tiles change pictures a little at their seams, so a
run whose settings fit keeps them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from seedvr_cli.config import FlashVSRSettings
from seedvr_cli.errors import UsageError
from seedvr_cli.pipeline.flashvsr.choices import FlashVSRModel
from seedvr_cli.run.fit import MARGIN, budget_line
from seedvr_cli.run.flashvsr_plan import FlashVSRVRAM, estimate_flashvsr_vram

# DiT tile sides tried, in input pixels: the reference node's default first, then smaller.
TILE_SIZES = (256, 192, 128, 96, 64)


@dataclass(frozen=True)
class FlashVSRFit:
    settings: FlashVSRSettings
    estimate: FlashVSRVRAM
    reason: str  # one line for the user


def fit_flashvsr(model: FlashVSRModel, settings: FlashVSRSettings, size: tuple[int, int], segment_frames: int,
                 budget: float, source: str, bytes_per_value: int = 2) -> FlashVSRFit:
    """The settings for an output of ``size`` (height, width) in segments of ``segment_frames``
    frames within ``budget`` GiB (``source`` names where the budget comes from)."""
    candidates = [(settings, "no memory saver needed")]
    for tile in TILE_SIZES:
        if settings.tiled_dit and tile >= settings.tile_size:
            continue  # already at least this small
        tiled = replace(settings, tiled_dit=True, tile_size=tile, tile_overlap=min(settings.tile_overlap, tile // 4),
                        tiled_vae=settings.tiled_vae or model.decoder != "tcdecoder")
        candidates.append((tiled, f"DiT tiles of {tile} input px (--dit-tiling on --dit-tile-size {tile}: "
                                  "pictures change a little at tile seams)"))
    for candidate, what in candidates:
        estimate = estimate_flashvsr_vram(model, candidate, size, segment_frames, bytes_per_value)
        if estimate.total_gib <= MARGIN * budget:
            return FlashVSRFit(candidate, estimate,
                               f"--vram auto, {budget_line(budget, source)}: {what} (estimate "
                               f"{estimate.total_gib:.1f} GiB at {size[1]}x{size[0]})")
    smallest = estimate_flashvsr_vram(model, candidates[-1][0], size, segment_frames, bytes_per_value)
    raise UsageError(f"{budget_line(budget, source)}: even with DiT tiles of {TILE_SIZES[-1]} input px the "
                     f"{size[1]}x{size[0]} output in segments of {segment_frames} frames needs about "
                     f"{smallest.total_gib:.1f} GiB; use a smaller --scale or --segment-frames, or allow more memory")
