"""The VRAM estimate: the measured 1080p rows, what each saver takes off, where the facts come from."""

from __future__ import annotations

import pytest

from seedvr_cli.config import MemorySettings, ModelSettings
from seedvr_cli.run.vram import ModelFacts, dit_working_gib, estimate_vram, model_facts

THREE_B = ModelFacts("3b", "vae", 2.0, "test")
SWAP_ALL = dict(blocks_to_swap=32, swap_io_components=True)

# Peak allocated of the CLI's 1080p runs on an H200 (docs/benchmarks.md, "Memory savers end to end").
# Tiled rows measured before the tiles shared statistics are marked "own".
OWN = dict(vae_tile_statistics="own")
MEASURED = [
    (MemorySettings(), 29.73),
    (MemorySettings(**SWAP_ALL), 23.95),
    (MemorySettings(**SWAP_ALL, vae_tiling="on", **OWN), 13.98),
    (MemorySettings(**SWAP_ALL, vae_tiling="on", **OWN), 13.22),  # the --max-vram 16 run, no window overlap
]


# The 7B's, measured after the estimate was calibrated on the 3B's: an independent check.
MEASURED_7B = [
    (MemorySettings(), 37.93),
    (MemorySettings(blocks_to_swap=36, swap_io_components=True), 23.43),
]


@pytest.mark.parametrize(("facts", "memory", "measured"),
                         [(THREE_B, m, v) for m, v in MEASURED] +
                         [(ModelFacts("7b", "vae", 2.0, "test"), m, v) for m, v in MEASURED_7B])
def test_estimate_is_within_15_percent_of_the_measured_peaks(facts, memory, measured):
    estimate = estimate_vram(facts, (1088, 1920), 33, memory)
    assert abs(estimate.total_gib - measured) <= 0.15 * measured
    assert estimate.phase == "VAE decode"


# 2160p from a 1080p input, 33-frame window, under --max-vram 24 (docs/benchmarks.md, "The memory
# table"): what --vram auto picked then, and the peak it reached (in the decode).
MEASURED_2160P = [
    (MemorySettings(**SWAP_ALL, vae_tiling="on", vae_tile_size=768, vae_tile_overlap=96, dit_tiling="on",
                    dit_tile_size=2592, dit_tile_overlap=480, **OWN), 14.89),
    (MemorySettings(**SWAP_ALL, vae_tiling="on", vae_tile_size=1024, vae_tile_overlap=128, dit_tiling="on",
                    dit_tile_size=2592, dit_tile_overlap=480, **OWN), 19.41),
]


# Rows whose peak is in the DiT phase (--max-vram 8; the run summary's peak phase): the 7B's
# activations per token are larger than the 3B's, by about the ratio of their widths.
MEASURED_DIT_PHASE = [
    ("3b", 33, 7.19),
    ("7b", 25, 7.07),
]


@pytest.mark.parametrize(("variant", "frames", "measured"), MEASURED_DIT_PHASE)
def test_estimate_of_the_dit_phase_is_within_15_percent_per_model(variant, frames, measured):
    memory = MemorySettings(blocks_to_swap=32 if variant == "3b" else 36, swap_io_components=True,
                            vae_tiling="on", vae_tile_size=512, vae_tile_overlap=64, vae_offload_device="cpu", **OWN)
    estimate = estimate_vram(ModelFacts(variant, "vae", 2.0, "test"), (1088, 1920), frames, memory)
    assert estimate.phase == "DiT"
    assert abs(estimate.total_gib - measured) <= 0.15 * measured


@pytest.mark.parametrize(("memory", "measured"), MEASURED_2160P)
def test_estimate_at_2160p_is_within_15_percent_of_the_measured_peak(memory, measured):
    estimate = estimate_vram(THREE_B, (2160, 3840), 33, memory)
    assert abs(estimate.total_gib - measured) <= 0.15 * measured
    assert estimate.phase == "VAE decode"


def test_colour_correction_and_preprocessing_count_their_float32_clips():
    # With the smallest VAE tiles and DiT tiles at 2160p, the window's float32 clips are most of
    # the memory: three in preprocessing, the style + decoded + output clips in the colour step.
    memory = MemorySettings(**SWAP_ALL, vae_tiling="on", vae_tile_size=256, vae_tile_overlap=32, dit_tiling="on",
                            dit_tile_size=512, dit_tile_overlap=64)
    clip_gib = 3 * 33 * 2160 * 3840 * 4 / 2**30
    estimate = estimate_vram(THREE_B, (2160, 3840), 33, memory)
    assert estimate.working_gib >= 3 * clip_gib


def test_each_saver_takes_off_what_it_should():
    plain = estimate_vram(THREE_B, (1088, 1920), 33, MemorySettings())
    swapped = estimate_vram(THREE_B, (1088, 1920), 33, MemorySettings(**SWAP_ALL))
    tiled = estimate_vram(THREE_B, (1088, 1920), 33, MemorySettings(vae_tiling="on"))
    # BlockSwap moves weights, not working memory; tiling the reverse.
    assert swapped.working_gib == plain.working_gib and swapped.weights_gib < plain.weights_gib - 5
    assert tiled.weights_gib == plain.weights_gib and tiled.working_gib < plain.working_gib - 8
    # A frame smaller than a tile is coded whole, so tiling changes nothing there.
    small = (544, 960)
    assert (estimate_vram(THREE_B, small, 33, MemorySettings(vae_tiling="on")).total_gib
            == estimate_vram(THREE_B, small, 33, MemorySettings()).total_gib)
    # fp8 weights take half the bytes; the 7B more than the 3B.
    fp8 = estimate_vram(ModelFacts("3b", "vae", 1.0, "test"), (1088, 1920), 33, MemorySettings())
    assert fp8.weights_gib == pytest.approx(plain.weights_gib / 2, rel=0.1)
    assert estimate_vram(ModelFacts("7b", "vae", 2.0, "test"), (1088, 1920), 33, MemorySettings()).weights_gib > 15


def test_facts_come_from_the_files_or_else_the_registry(tmp_path):
    from seedvr_cli.weights.synthesize import write_checkpoint

    dit = write_checkpoint("tiny-3b", "fp8_e4m3fn", tmp_path / "dit.safetensors", seed=0)
    vae = write_checkpoint("tiny-vae", "fp16", tmp_path / "vae.safetensors", seed=0)
    from_files = model_facts(ModelSettings(model=str(dit), vae=str(vae)))
    assert (from_files.variant, from_files.vae_variant, from_files.bytes_per_weight) == ("tiny-3b", "tiny-vae", 1.0)
    # Registry names whose files are not here (nothing is downloaded for an estimate).
    from_registry = model_facts(ModelSettings(model_dir=str(tmp_path / "empty")))
    assert (from_registry.variant, from_registry.bytes_per_weight) == ("3b", 2.0)
    assert "registry" in from_registry.source
    assert model_facts(ModelSettings(model=str(tmp_path / "missing.safetensors"))) is None


def test_dit_tiles_shrink_the_dit_term_to_one_tile():
    from seedvr_cli.memory.dit_tiling import plan_tiles
    from seedvr_cli.models.dit_config import dit_config

    # 3840x2160 output, 33-frame windows (9 latent frames): 135 x 240 tokens a frame.
    uhd, frames = (2160, 3840), 33
    savers = dict(**SWAP_ALL, vae_tiling="on", vae_tile_size=512, vae_tile_overlap=64)
    whole = estimate_vram(THREE_B, uhd, frames, MemorySettings(**savers))
    tiled = estimate_vram(THREE_B, uhd, frames, MemorySettings(**savers, dit_tiling="on"))
    # At 4K with 33-frame windows the DiT sets the peak, over a 24 GB card's budget (fit.MARGIN x 24);
    # in the default 2x2 tiles a 3840x2160 output from a 1080p input fits it.
    assert whole.phase == "DiT" and whole.total_gib > 0.9 * 24
    assert tiled.working_gib < whole.working_gib - 8 and tiled.total_gib < 0.9 * 24
    # The DiT term follows one tile's tokens (the accumulator of the whole window is ~1 % on top).
    defaults = MemorySettings()
    plan = plan_tiles((9, 135, 240), dit_config("3b"), defaults.dit_tile_size, defaults.dit_tile_overlap)
    dit_whole = dit_working_gib(THREE_B, uhd, frames, MemorySettings())
    one_tile = dit_working_gib(THREE_B, uhd, frames, MemorySettings(dit_tiling="on"))
    assert one_tile == pytest.approx(dit_whole * plan.tile_tokens / (9 * 135 * 240), rel=0.02)
    # A frame within one tile runs whole: the same estimate as without tiling.
    assert (estimate_vram(THREE_B, (1088, 1920), 33, MemorySettings(dit_tiling="on")).total_gib
            == estimate_vram(THREE_B, (1088, 1920), 33, MemorySettings()).total_gib)
