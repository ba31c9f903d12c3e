"""FlashVSR's model names and the defaults of its settings, importable without torch.

Defaults follow the reference tools users come from (../shared/reference/flashvsr/CLI.md), the
standalone FlashVSR CLI where the tools differ: scale 4 (as the official scripts; the ComfyUI node
defaults to 2) and DiT tiles off (the node turns them on); the attention knobs, colour fix, tile
size and overlap and VAE tiles are the same in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlashVSRModel:
    """One ``--model flashvsr-...`` choice: checkpoint version and decoder mode."""

    version: str  # "1.0" or "1.1"
    mode: str  # "tiny", "tiny-long" or "full"

    @property
    def name(self) -> str:
        return f"flashvsr-v{self.version}-{self.mode}"

    @property
    def decoder(self) -> str:
        """Which decoder turns latents into frames: the TCDecoder (tiny modes) or the Wan2.1 VAE."""
        return "wan-vae" if self.mode == "full" else "tcdecoder"


VERSIONS = ("1.0", "1.1")
MODES = ("tiny", "tiny-long", "full")
FLASHVSR_MODELS: dict[str, FlashVSRModel] = {
    m.name: m for m in (FlashVSRModel(version, mode) for version in VERSIONS for mode in MODES)
}


def find_flashvsr_model(name: str) -> FlashVSRModel | None:
    """The FlashVSR choice called ``name`` (case-insensitive), or None for anything else (SeedVR2)."""
    return FLASHVSR_MODELS.get(name.strip().lower())


# Output = input x scale (an integer: the LR frame is upscaled by it before the 128-pixel crop).
SCALES = (2, 3, 4)
DEFAULT_SCALE = 4
# Block-sparse attention: top-k share (1.5 .. 2.0), KV cache in temporal windows, local window side.
DEFAULT_SPARSE_RATIO = 2.0
SPARSE_RATIO_RANGE = (1.5, 2.0)
DEFAULT_KV_RATIO = 3.0
KV_RATIO_RANGE = (1.0, 3.0)
DEFAULT_LOCAL_RANGE = 11
LOCAL_RANGES = (9, 11)
DEFAULT_COLOR_FIX = True
# Tiled DiT: the whole pipeline per LR tile (size and overlap in input pixels), feathered together.
DEFAULT_TILED_DIT = False
DEFAULT_TILE_SIZE = 256
DEFAULT_TILE_OVERLAP = 24
# Tiled Wan VAE decode (full mode): latent tiles and their stride, the reference pipeline's.
DEFAULT_TILED_VAE = True
DEFAULT_VAE_TILE = (60, 104)
DEFAULT_VAE_TILE_STRIDE = (30, 52)
# Temporal segments: frames per segment (8n-3: no padding beyond the 4 tail frames) and frames
# shared by neighbouring segments (the standalone CLI's --segment_overlap).
DEFAULT_SEGMENT_FRAMES = 125
DEFAULT_SEGMENT_OVERLAP = 2
# The node pads clips shorter than this with their last frame (the streaming schedule needs it).
MIN_FRAMES = 21
