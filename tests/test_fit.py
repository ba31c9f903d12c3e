"""--vram auto: the savers chosen for a budget, and how the CLI applies them."""

from __future__ import annotations

import pytest
from media_factory import make_video

from seedvr_cli.config import MemorySettings
from seedvr_cli.errors import UsageError
from seedvr_cli.run.fit import MARGIN, fit_memory
from seedvr_cli.run.vram import ModelFacts

THREE_B, SEVEN_B = ModelFacts("3b", "vae", 2.0, "test"), ModelFacts("7b", "vae", 2.0, "test")
HD = (1088, 1920)


@pytest.mark.parametrize("budget", [8, 12, 16, 24, 32, 48, 80])
def test_the_lightest_saver_that_fits_is_chosen(budget):
    fit = fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=budget))
    assert fit.estimate.total_gib <= MARGIN * budget
    if budget >= 48:
        assert not fit.memory.swaps and fit.memory.vae_tiling == "off"
    elif budget >= 32:
        assert fit.memory.blocks_to_swap == 32 and fit.memory.vae_tiling == "off"
    else:
        assert fit.memory.blocks_to_swap == 32 and fit.memory.vae_tiling == "on"
    assert f"--max-vram {budget}" in fit.reason


def test_smaller_budgets_get_smaller_tiles_and_the_impossible_is_said():
    tiles = [fit_memory(THREE_B, HD, 33, MemorySettings(max_vram_gib=b)).memory.vae_tile_size for b in (16, 12, 8)]
    assert tiles == sorted(tiles, reverse=True) and tiles[-1] < tiles[0]
    with pytest.raises(UsageError, match="--max-vram 4.*lower --batch-size or --resolution"):
        fit_memory(SEVEN_B, HD, 33, MemorySettings(max_vram_gib=4))


def test_the_cli_reports_the_choice_and_keeps_given_flags(tmp_path, capsys):
    from seedvr_cli.cli import main
    from seedvr_cli.weights.synthesize import write_checkpoint

    dit = write_checkpoint("tiny-3b", "fp16", tmp_path / "dit.safetensors", seed=0)
    vae = write_checkpoint("tiny-vae", "fp16", tmp_path / "vae.safetensors", seed=0)
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
