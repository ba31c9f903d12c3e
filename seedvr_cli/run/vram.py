"""How much GPU memory one worker needs for an input: the figure ``--dry-run`` prints.

The peak of a window is the resident weights plus the largest phase's working memory. Weights
come from the model's own tensor sizes in the form they are kept on the GPU (bf16, or fp8 / GGUF
packed as stored), with BlockSwap's resident part and slots computed by ``memory.blockswap`` the
way the swapper allocates them. The working memory of each phase scales with what drives it,
from measurements of the 3B at 1080p on an H200 (docs/benchmarks.md, "VAE memory at 1080p" and
"Memory savers end to end"):

* VAE decode: the causal cache and one slice scale with the area of one frame (or one tile), not
  with the window's length: 21.21 GiB at 1088x1920;
* VAE encode: 11.06 GiB at 1088x1920, the same way;
* DiT: 5.33 GiB at 73,440 tokens (33 frames at 1088x1920), in proportion to the tokens; with DiT
  tiles, to the tokens of one tile (``memory.dit_tiling.plan_tiles``), plus the tiler's float32
  accumulator of the whole window's velocities;
* beside the decode the window keeps two float32 clips (its colour reference and its output);
  tiling adds a float32 accumulator of the window's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from seedvr_cli.config import MemorySettings, ModelSettings
from seedvr_cli.errors import UserError
from seedvr_cli.memory.blockswap import BlockSwap, weight_vram
from seedvr_cli.memory.dit_tiling import plan_tiles
from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.models.vae import VideoVAE
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.weights.detect import CheckpointInfo, inspect_checkpoint
from seedvr_cli.weights.download import resolve_model_file
from seedvr_cli.weights.registry import find_model

GIB = 2**30
_REFERENCE_PIXELS = 1088 * 1920
_DECODE_GIB = 21.21
_ENCODE_GIB = 11.06
# What the conv rings (--vae-conv-rings) add at 1088x1920: a third cached frame per conv
# (bench.py --vae-only with and without them, H200).
_DECODE_RINGS_GIB = 6.43
_ENCODE_RINGS_GIB = 2.79
_DIT_GIB_PER_TOKEN = 5.33 / 73440
# That figure was measured on the 3B (width 2560); a token's activations grow with the width, and
# the 7B (3072) ran out of memory in its DiT phase under --max-vram 8 when the 3B's figure was used.
_CALIBRATION_WIDTH = 2560
# The DiT tiler's float32 sum of the window's velocities: 2 x 2 latents x 16 channels a token.
_TILED_DIT_GIB_PER_TOKEN = 2 * 2 * 16 * 4 / GIB
# The colour reference and the decoded clip; a tiled decode divides its float32 sum of the tiles
# in place into the latter, so tiling adds no clip of its own.
_FLOAT32_CLIPS_BESIDE_DECODE = 2
# Float32 clips of the window alive in the phases around the VAE and the DiT, counted from the code
# (pipeline.window): preprocessing holds the resized clip and two arithmetic results at its peak;
# the encode the clip, the colour reference ("style") and a half-size bf16 copy; the colour step
# the style, the decoded clip and the float output, plus its slices' temporaries.
_FLOAT32_CLIPS_IN_PREPROCESS = 3
_FLOAT32_CLIPS_BESIDE_ENCODE = 2.5
_FLOAT32_CLIPS_IN_COLOUR = 3
_COLOUR_SLICE_TEMPORARIES_GIB = 6 * 0.25
# Compute dtype on GPUs (bf16, or fp16 on older ones): two bytes per plain weight.
_PLAIN_BYTES = 2


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know of the two models."""

    variant: str  # "3b", "7b", "tiny-3b", ...
    vae_variant: str
    bytes_per_weight: float  # on the GPU: 2 for plain files, ~1 for fp8, the packed size for GGUF
    source: str  # where the facts came from, for the dry run's line


@dataclass(frozen=True)
class VRAMEstimate:
    weights_gib: float
    working_gib: float
    phase: str  # the phase that sets the peak

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.working_gib


def bytes_per_weight(info: CheckpointInfo) -> float:
    """Bytes one DiT weight takes on the GPU: fp8 and GGUF Linear weights stay as stored."""
    if info.format.startswith("gguf"):
        return info.file_size / max(1, info.num_params)
    if info.format.startswith("fp8"):
        return 1.0
    return float(_PLAIN_BYTES)


def model_facts(settings: ModelSettings) -> ModelFacts | None:
    """The models' facts from their files when they are here (header only), else from the
    registry entry's name; None when neither says (a missing file given by path)."""
    facts = []
    for name, kind in ((settings.model, "dit"), (settings.vae, "vae")):
        try:
            info = inspect_checkpoint(resolve_model_file(name, model_dir=settings.model_dir, download=False))
            facts.append((info.variant, bytes_per_weight(info), "file"))
            continue
        except UserError:
            pass
        entry = find_model(Path(name).name)
        if entry is None or entry.kind != kind:
            return None
        variant = "7b" if entry.variant.startswith("7b") else entry.variant
        per_weight = 1.0 if entry.format.startswith("fp8") else float(_PLAIN_BYTES)
        if entry.format.startswith("gguf") and entry.size:
            per_weight = entry.size / _num_params(variant)
        facts.append((variant, per_weight, "registry"))
    (dit_variant, per_weight, dit_source), (vae_variant, _, vae_source) = facts
    source = "the model files" if dit_source == vae_source == "file" else "the registry's description of the models"
    return ModelFacts(dit_variant, vae_variant, per_weight, source)


def _num_params(variant: str) -> int:
    return sum(_element_counts(variant).values())


@lru_cache(maxsize=8)
def _element_counts(variant: str) -> dict[str, int]:
    with torch.device("meta"):
        model = NaDiT(dit_config(variant))
    return {name: t.numel() for name, t in model.state_dict().items()}


@lru_cache(maxsize=4)
def _vae_bytes(variant: str) -> float:
    with torch.device("meta"):
        model = VideoVAE(vae_config(variant))
    return sum(t.numel() for t in model.state_dict().values()) * _PLAIN_BYTES


def estimate_vram(facts: ModelFacts, model_size: tuple[int, int], window_frames: int,
                  memory: MemorySettings) -> VRAMEstimate:
    """Peak memory of one worker running windows of ``window_frames`` at ``model_size`` (padded)."""
    counts = _element_counts(facts.variant)
    sizes = {name: int(n * facts.bytes_per_weight) for name, n in counts.items()}
    swap = BlockSwap(memory.blocks_to_swap, memory.swap_io_components)
    num_blocks = dit_config(facts.variant).num_layers
    swapped = weight_vram(sizes, swap, num_blocks) if memory.swaps else None
    dit_weights = swapped.total if swapped else sum(sizes.values())
    # With DiT offload only BlockSwap's slots stay while the VAE codes.
    dit_weights_idle = dit_weights
    if memory.offloads_dit:
        dit_weights_idle = swapped.slots if swapped else 0
    vae_weights = _vae_bytes(facts.vae_variant)

    height, width = model_size
    pixels = height * width
    clip_gib = 3 * window_frames * pixels * 4 / GIB  # one float32 clip of the window
    coded = pixels
    mid_gib = 0.0
    if memory.tiles_vae and (height > memory.vae_tile_size or width > memory.vae_tile_size):
        coded = min(height, memory.vae_tile_size) * min(width, memory.vae_tile_size)
        # A tiled decode keeps its mid block's output for the whole latent (memory.tiling).
        mid_channels = vae_config(facts.vae_variant).block_out_channels[-1]
        mid_gib = mid_channels * ((window_frames - 1) // 4 + 1) * (pixels // 64) * 2 / GIB
    rings = 1 if memory.vae_conv_rings else 0
    working = {
        "VAE decode": (_DECODE_GIB + rings * _DECODE_RINGS_GIB) * coded / _REFERENCE_PIXELS
        + _FLOAT32_CLIPS_BESIDE_DECODE * clip_gib + mid_gib,
        "VAE encode": (_ENCODE_GIB + rings * _ENCODE_RINGS_GIB) * coded / _REFERENCE_PIXELS
        + _FLOAT32_CLIPS_BESIDE_ENCODE * clip_gib,
        "DiT": dit_working_gib(facts, model_size, window_frames, memory) + clip_gib,
        "preprocessing": _FLOAT32_CLIPS_IN_PREPROCESS * clip_gib,
        "colour correction": _FLOAT32_CLIPS_IN_COLOUR * clip_gib + _COLOUR_SLICE_TEMPORARIES_GIB,
    }
    # With VAE offload the VAE's weights are on the GPU only while it codes, with DiT offload the
    # DiT's only while it runs.
    weights = {"DiT": (dit_weights + (0 if memory.offloads_vae else vae_weights)) / GIB,
               "VAE decode": (dit_weights_idle + vae_weights) / GIB,
               "VAE encode": (dit_weights_idle + vae_weights) / GIB}
    weights["preprocessing"] = weights["colour correction"] = weights["VAE encode"]
    phase = max(working, key=lambda name: weights[name] + working[name])
    return VRAMEstimate(weights[phase], working[phase], phase)


def dit_working_gib(facts: ModelFacts, model_size: tuple[int, int], window_frames: int,
                    memory: MemorySettings) -> float:
    """The DiT's activations for one window at ``model_size`` (padded): the whole window's tokens,
    or with ``--dit-tiling on`` one tile's, plus the tiler's accumulator."""
    height, width = model_size
    latent_frames = (window_frames - 1) // 4 + 1
    tokens = latent_frames * (height // 16) * (width // 16)
    config = dit_config(facts.variant)
    per_token = _DIT_GIB_PER_TOKEN * config.width / _CALIBRATION_WIDTH
    if memory.dit_tiling != "on":
        return per_token * tokens
    grid = (latent_frames, height // 16, width // 16)
    plan = plan_tiles(grid, config, memory.dit_tile_size, memory.dit_tile_overlap)
    if plan is None:
        return per_token * tokens
    return per_token * plan.tile_tokens + _TILED_DIT_GIB_PER_TOKEN * tokens
