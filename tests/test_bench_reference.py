"""scripts/bench.py --reference-float32: fast and plain runs each compared with a float32 run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def run_bench(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["bench.py", *args])
    code = bench.main()
    return code, capsys.readouterr().out


def test_reference_float32_compares_each_run_with_a_float32_run(checkpoints, monkeypatch, capsys, one_torch_thread):
    _, vae = checkpoints
    code, out = run_bench(monkeypatch, capsys, "--vae", str(vae), "--vae-only", "--device", "cpu", "--dtype", "bf16",
                          "--frames", "5", "--batch-size", "5", "--height", "16", "--width", "24",
                          "--resolution", "32", "--repeats", "1", "--compare-plain", "--reference-float32", "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for run in ("current", "plain"):
        diff = result[f"{run}_vs_float32"]
        # bf16 against float32: a real difference, measured on all five frames.
        assert diff["frames"] == 5 and diff["max_abs_error"] > 0 and 20 < diff["psnr_db"] < 100
    assert "fast vs float32" in out and "plain vs float32" in out
    assert result["conv_rings"] is False  # the CLI's default: the lean cache


def test_conv_rings_reach_the_vae(checkpoints, monkeypatch, capsys, one_torch_thread):
    from seedvr_cli.models.vae import CausalCache

    caches = []
    original = CausalCache.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        caches.append(self)

    monkeypatch.setattr(CausalCache, "__init__", recording)
    _, vae = checkpoints
    code, out = run_bench(monkeypatch, capsys, "--vae", str(vae), "--vae-only", "--device", "cpu", "--frames", "5",
                          "--batch-size", "5", "--height", "16", "--width", "24", "--resolution", "32",
                          "--repeats", "1", "--conv-rings", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["conv_rings"] is True
    assert caches and all(cache.rings is not None for cache in caches)


def test_kernel_rounding_once_reaches_frame_group_norm(checkpoints, monkeypatch, capsys, one_torch_thread):
    from seedvr_cli.models.vae import FrameGroupNorm

    monkeypatch.setattr(FrameGroupNorm, "kernel_rounds_norm", FrameGroupNorm.kernel_rounds_norm)
    assert FrameGroupNorm.kernel_rounds_norm is True
    _, vae = checkpoints
    code, out = run_bench(monkeypatch, capsys, "--vae", str(vae), "--vae-only", "--device", "cpu", "--frames", "5",
                          "--batch-size", "5", "--height", "16", "--width", "24", "--resolution", "32",
                          "--repeats", "1", "--kernel-rounding", "once", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["kernel_rounding"] == "once"
    assert FrameGroupNorm.kernel_rounds_norm is False


def test_reference_float32_needs_vae_only(checkpoints, monkeypatch, capsys):
    _, vae = checkpoints
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--vae", str(vae), "--model", "x.safetensors", "--reference-float32")
    assert "--reference-float32 needs --vae-only" in capsys.readouterr().err


def test_cli_wall_times_the_cli_on_the_same_clip(checkpoints, monkeypatch, capsys, tmp_path, one_torch_thread):
    from media_factory import make_video

    dit, vae = checkpoints
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=24, height=16)
    common = ["--model", str(dit), "--vae", str(vae), "--input", str(clip), "--device", "cpu", "--frames", "5",
              "--batch-size", "5", "--resolution", "32", "--repeats", "1", "--json"]
    code, out = run_bench(monkeypatch, capsys, *common, "--cli-wall")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    # A whole interpreter, imports, the models loaded and the file written: more than the window alone.
    assert result["cli_process_wall_s"] > 0.5
    assert f"CLI process wall on {clip}" in out
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--vae", str(vae), "--vae-only", "--cli-wall")
