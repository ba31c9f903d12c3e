"""--vram auto: the savers chosen for a budget, and how the CLI applies them."""

from __future__ import annotations

import pytest
from media_factory import make_video

from seedvr_cli.config import MemorySettings
from seedvr_cli.errors import UsageError
from dataclasses import replace

from seedvr_cli.run.fit import MARGIN, fit_memory, step_down
from seedvr_cli.run.vram import ModelFacts, estimate_vram

THREE_B, SEVEN_B = ModelFacts("3b", "vae", 2.0, "test"), ModelFacts("7b", "vae", 2.0, "test")
HD = (1088, 1920)


@pytest.mark.parametrize("budget", [8, 12, 16, 24, 32, 48, 80])
def test_the_lightest_saver_that_fits_is_chosen(budget):
    fit = fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=budget))
    assert fit.estimate.total_gib <= MARGIN * budget
    if budget >= 48:
        assert not fit.memory.swaps and not fit.memory.tiles_vae and not fit.memory.offloads_dit
    elif budget >= 32:
        # The DiT waiting in host memory during the decode is enough: no swapping, no tiles.
        assert fit.memory.offloads_dit and not fit.memory.swaps and not fit.memory.tiles_vae
    else:
        assert fit.memory.blocks_to_swap == 32 and fit.memory.tiles_vae
    assert fit.window_frames == 33  # savers come before shorter windows
    assert f"--max-vram {budget}" in fit.reason


def test_smaller_budgets_get_smaller_tiles_and_the_impossible_is_said():
    tiles = [fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=b)).memory.vae_tile_size for b in (16, 12, 8)]
    assert tiles == sorted(tiles, reverse=True) and tiles[-1] < tiles[0]
    with pytest.raises(UsageError, match="--max-vram 1.5.*lower --resolution"):
        fit_memory(SEVEN_B, HD, 33, MemorySettings(max_vram_gib=1.5))


def test_shorter_windows_come_last_and_keep_the_overlap_possible():
    # 2160p output: the DiT's tokens set the peak; with every saver the window has to shrink for 12 GiB.
    uhd = (2160, 3840)
    fit = fit_memory(THREE_B, uhd, 33, MemorySettings(max_vram_gib=12))
    assert fit.window_frames < 33 and fit.memory.tiles_vae and fit.memory.blocks_to_swap == 32
    assert f"--batch-size {fit.window_frames}" in fit.reason and fit.estimate.total_gib <= MARGIN * 12
    # The window must stay longer than --temporal-overlap: then nothing fits, and that is said.
    with pytest.raises(UsageError, match="--max-vram 12"):
        fit_memory(THREE_B, uhd, 33, MemorySettings(max_vram_gib=12), min_window=fit.window_frames + 1)


def test_vae_offload_is_chosen_only_where_the_dit_sets_the_peak():
    plain = MemorySettings(blocks_to_swap=32, swap_io_components=True, vae_tiling="on", vae_tile_size=512)
    offloaded = replace(plain, vae_offload_device="cpu")
    # At 2160p the DiT phase is the peak: offloading the VAE lowers it by the VAE's weights.
    dit_bound = estimate_vram(THREE_B, (2160, 3840), 33, plain)
    assert dit_bound.phase == "DiT"
    saved = dit_bound.total_gib - estimate_vram(THREE_B, (2160, 3840), 33, offloaded).total_gib
    assert saved == pytest.approx(0.467, abs=0.01)
    # At 1080p the decode is the peak and the VAE must be on the GPU then: no gain, not chosen.
    big_tiles = replace(plain, vae_tile_size=1024)
    assert estimate_vram(THREE_B, HD, 33, big_tiles).phase == "VAE decode"
    assert (estimate_vram(THREE_B, HD, 33, replace(big_tiles, vae_offload_device="cpu")).total_gib
            == estimate_vram(THREE_B, HD, 33, big_tiles).total_gib)
    assert not fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=12)).memory.offloads_vae


def test_step_down_takes_the_next_saver_with_the_same_window():
    none = MemorySettings()
    first = step_down(THREE_B, HD, 33, none)
    assert first.memory.offloads_dit and not first.memory.swaps and not first.memory.tiles_vae
    assert first.window_frames == 33
    # BlockSwap of every block would not lower the decode's peak below the offload's: tiles come next,
    # with the offload kept.
    second = step_down(THREE_B, HD, 33, first.memory)
    assert second.memory.tiles_vae and second.memory.vae_tile_size == 1024 and second.memory.offloads_dit
    smallest = replace(second.memory, vae_tile_size=256, vae_tile_overlap=32, vae_offload_device="cpu")
    assert step_down(THREE_B, HD, 33, smallest) is None


def test_the_cli_reports_the_choice_and_keeps_given_flags(tmp_path, capsys, checkpoints):
    from seedvr_cli.cli import main
    dit, vae = checkpoints
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    common = ["upscale", str(clip), "-o", str(tmp_path / "o.mkv"), "--model", str(dit), "--vae", str(vae),
              "--batch-size", "5", "--resolution", "1080", "--dry-run"]

    def run(*extra):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *extra])
        return exit_info.value.code, capsys.readouterr().err

    code, err = run("--max-vram", "2")
    assert code == 0 and "--vram auto, --max-vram 2: BlockSwap of all 4 blocks + VAE tiles of 384 px" in err
    code, err = run("--max-vram", "2", "--vae-tiling", "off")  # a flag the user gave is kept
    assert code == 0 and "--vram auto" not in err
    code, err = run("--max-vram", "2", "--vram", "manual")
    assert code == 0 and "--vram auto" not in err
    code, err = run("--max-vram", "0.5")
    assert code == 2 and "--max-vram 0.5: even with every block swapped" in err


@pytest.mark.parametrize("card", [8, 12, 16, 24, 48, 80])
def test_card_presets_set_the_budget_and_leave_the_choice_to_auto(card):
    from seedvr_cli.presets import load_preset

    preset = load_preset(f"{card}gb")
    assert preset.settings["max_vram"] == card and f"{card} GB card" in preset.description
    assert not {"blocks_to_swap", "vae_tiling", "vram"} & set(preset.settings)
    facts = SEVEN_B if "7b" in preset.settings["model"] else THREE_B
    fit = fit_memory(facts, HD, preset.settings["batch_size"], MemorySettings(max_vram_gib=card))
    assert fit.window_frames == preset.settings["batch_size"]  # 1080p fits without shortening the windows


def test_a_profile_budget_reaches_the_fit(tmp_path, capsys, checkpoints):
    from seedvr_cli.cli import main
    dit, vae = checkpoints
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "-o", str(tmp_path / "o.mkv"), "--profile", "8gb", "--model", str(dit),
              "--vae", str(vae), "--batch-size", "5", "--resolution", "1080", "--dry-run"])
    assert exit_info.value.code == 0 and "--vram auto, --max-vram 8: " in capsys.readouterr().err


def test_dit_offload_lowers_the_vae_phases_by_the_dits_weights():
    plain = MemorySettings()
    offloaded = replace(plain, dit_offload_device="cpu")
    before, after = estimate_vram(SEVEN_B, HD, 33, plain), estimate_vram(SEVEN_B, HD, 33, offloaded)
    assert before.phase == after.phase == "VAE decode"
    # The 7B's weights in bf16 (~15.3 GiB) leave the GPU while the decode runs.
    assert 15.0 < before.total_gib - after.total_gib < 15.6
    # With BlockSwap only the swapper's slots stay during the VAE phases.
    swapped = replace(plain, blocks_to_swap=36, swap_io_components=True)
    both = replace(swapped, dit_offload_device="cpu")
    assert estimate_vram(SEVEN_B, HD, 33, both).total_gib <= estimate_vram(SEVEN_B, HD, 33, swapped).total_gib


def test_conv_rings_cost_their_measured_memory_in_the_vae_phases():
    plain = MemorySettings(dit_offload_device="cpu")
    rings = replace(plain, vae_conv_rings=True)
    before, after = estimate_vram(THREE_B, HD, 33, plain), estimate_vram(THREE_B, HD, 33, rings)
    assert after.phase == "VAE decode" and abs(after.total_gib - before.total_gib - 6.43) < 0.01


def test_vae_tiles_overlap_by_128_px_where_the_tile_allows():
    from seedvr_cli.run.fit import tile_overlap

    assert [tile_overlap(tile) for tile in (1024, 768, 512, 384, 256)] == [128, 128, 128, 96, 64]
    fit = fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=8))
    assert fit.memory.vae_tile_size == 512 and fit.memory.vae_tile_overlap == 128
