"""``seedvr upscale --model flashvsr-...`` through the real entry point: the plan and VRAM estimate
of a dry run, the flags of the other engine refused, the registry, and a whole run on 1 and 2
CPU workers with the stand-in streamer in place of the models (test_flashvsr_streamer.py runs the real ones)."""

from __future__ import annotations

import functools
import json
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import run_cli
from media_factory import make_video
from model_standins import StandInStreamer

pytestmark = pytest.mark.timeout(300)


def _upscale(capsys, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", *args)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("fv") / "clip.mp4", frames=300, width=480, height=270)


def test_dry_run_shows_the_segments_sizes_and_vram(clip, tmp_path, capsys):
    code, _, err = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "flashvsr-v1.1-tiny",
                            "--no-download", "--devices", "cpu", "--dry-run")
    assert code == 0, err
    assert "flashvsr-v1.1-tiny (FlashVSR v1.1, tiny, decoder tcdecoder)" in err
    assert "FlashVSR-v1.1/TCDecoder.ckpt" in err and "Wan2.1_VAE" not in err
    # x4 is 1920x1080, cropped to multiples of 128; 125-frame segments sharing 2 frames.
    assert "300 frames 480x270 -> 1920x1024" in err and "3 segments in 3 chunks" in err
    assert "GiB weights + " in err and "modelled" in err
    code, out, _ = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "flashvsr-v1.0-full",
                            "--scale", "2", "--segment-frames", "61", "--segment-overlap", "5", "--no-download",
                            "--dry-run", "--log-format", "json")
    events = [json.loads(line) for line in out.splitlines()]
    [started] = [e for e in events if e["event"] == "job_started"]
    plan = started["plan"]
    assert plan["output_size"] == [512, 896] and plan["unit"] == "segment" and plan["windows"] == 6  # step 56
    assert any("FlashVSR/Wan2.1_VAE.pth" in e.get("text", "") for e in events)


def test_tiles_lower_the_estimate(clip, tmp_path, capsys):
    def estimate(*extra: str) -> float:
        code, _, err = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "flashvsr-v1.1-tiny",
                                "--no-download", "--devices", "cpu", "--dry-run", *extra)
        assert code == 0, err
        return float(err.split(" GiB VRAM per GPU")[0].rsplit("~", 1)[1])

    assert estimate("--dit-tiling", "on") < estimate()


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "flashvsr-v1.1-tiny", "--batch-size", "9"],
     ["--batch-size is a SeedVR2 setting", "flashvsr-v1.1-tiny"]),
    (["--model", "flashvsr-v1.1-full", "--resolution", "720"], ["--resolution is a SeedVR2 setting"]),
    (["--model", "flashvsr-v1.0-tiny", "--blocks-to-swap", "4"], ["--blocks-to-swap is a SeedVR2 setting"]),
    (["--model", "flashvsr-v1.0-tiny", "--chunk-windows", "2"], ["--chunk-windows is a SeedVR2 setting"]),
    (["--no-color-fix"], ["--no-color-fix is a FlashVSR setting", "flashvsr-v1.1-tiny"]),
    (["--sparse-ratio", "1.5"], ["--sparse-ratio is a FlashVSR setting"]),
    (["--model", "flashvsr-v1.1-tiny", "--scale", "2.5"], ["--scale 2.5", "whole factor"]),
    (["--model", "flashvsr-v1.1-tiny", "--scale", "8"], ["--scale 8", "2, 3, 4"]),
    (["--model", "flashvsr-v1.1-tiny", "--sparse-ratio", "3"], ["--sparse-ratio 3.0", "1.5 to 2.0"]),
    (["--model", "flashvsr-v1.1-tiny", "--local-range", "7"], ["--local-range 7", "9 or 11"]),
    (["--model", "flashvsr-v1.1-tiny", "--segment-overlap", "125"], ["--segment-overlap 125"]),
    (["--model", "flashvsr-v1.1-tiny", "--dit-tile-size", "100"], ["--dit-tile-size 100", "input pixels"]),
])
def test_flags_of_the_other_engine_and_bad_values_are_one_line(clip, tmp_path, capsys, args, words):
    code, _, err = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--dry-run", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    for word in words:
        assert word in err


def test_flashvsr_tile_flags_do_not_trip_seedvr2s_limits(clip, tmp_path, capsys):
    # 128 input pixels is a fine FlashVSR tile, though SeedVR2's DiT tiles start at 256 output pixels.
    code, _, err = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "flashvsr-v1.1-tiny",
                            "--dit-tiling", "on", "--dit-tile-size", "128", "--dit-tile-overlap", "16",
                            "--no-download", "--devices", "cpu", "--dry-run")
    assert code == 0, err


def test_help_names_the_models_and_the_flashvsr_flags(capsys):
    code, out, _ = run_cli(capsys, "upscale", "--help")
    assert code == 0
    text = " ".join(out.split())
    for words in ("flashvsr-v1.1-tiny-long", "--sparse-ratio", "--kv-ratio", "--local-range", "--no-color-fix",
                  "--segment-overlap", "--segment-frames"):
        assert words in text


def test_models_list_and_download_know_both_versions(capsys, monkeypatch, tmp_path):
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    entries = {entry["name"]: entry for entry in json.loads(out)}
    for version, repo in (("", "JunhaoZhuang/FlashVSR"), ("-v1.1", "JunhaoZhuang/FlashVSR-v1.1")):
        for file in ("diffusion_pytorch_model_streaming_dmd.safetensors", "LQ_proj_in.ckpt", "TCDecoder.ckpt",
                     "Wan2.1_VAE.pth"):
            entry = entries[f"FlashVSR{version}/{file}"]
            assert entry["repo"] == repo and entry["path"] == file
    fetched = []

    def fake_download(entry, **kwargs):
        fetched.append(entry.name)
        return tmp_path / entry.path

    monkeypatch.setattr("seedvr_cli.weights.download.download", fake_download)
    monkeypatch.setattr("seedvr_cli.weights.download.find_local", lambda entry, model_dir=None: None)
    code, _, err = run_cli(capsys, "models", "download", "flashvsr-v1.1-tiny-long", "--to", str(tmp_path))
    assert code == 0, err
    assert fetched == ["FlashVSR-v1.1/diffusion_pytorch_model_streaming_dmd.safetensors",
                       "FlashVSR-v1.1/LQ_proj_in.ckpt", "FlashVSR-v1.1/TCDecoder.ckpt", "posi_prompt.pth"]
    # The prompt embedding is listed too, with the GitHub address it is fetched from.
    prompt = entries["posi_prompt.pth"]
    assert prompt["repo"] == "OpenImagingLab/FlashVSR" and prompt["path"].endswith("prompt_tensor/posi_prompt.pth")
    assert prompt["url"].startswith("https://github.com/OpenImagingLab/FlashVSR/")


@pytest.fixture(scope="module")
def stand_in_runs(tmp_path_factory):
    """One clip with audio through ``seedvr upscale --model flashvsr-v1.1-tiny`` on 1 and on 2 CPU
    workers, the stand-in streamer in place of the models (the files are empty placeholders)."""
    from seedvr_cli.cli import main
    from seedvr_cli.run.flashvsr_models import FlashVSRFiles
    from seedvr_cli.run.flashvsr_processor import FlashVSRProcessorFactory

    folder = tmp_path_factory.mktemp("fv_run")
    clip = make_video(folder / "clip.mp4", frames=45, width=40, height=36, fps=Fraction(24, 1), audio="aac")
    files = FlashVSRFiles(*(folder / name for name in ("dit.safetensors", "lq.ckpt", "tc.ckpt", "posi_prompt.pth")))
    for path in (files.dit, files.lq_proj, files.decoder, files.prompt):
        path.write_bytes(b"placeholder")
    patch = pytest.MonkeyPatch()
    patch.setattr("seedvr_cli.run.upscale.resolve_flashvsr_files", lambda settings, model: files)
    patch.setattr("seedvr_cli.run.upscale.FlashVSRProcessorFactory",
                  functools.partial(FlashVSRProcessorFactory, streamer=StandInStreamer()))
    results = {}
    try:
        for devices in ("cpu", "cpu,cpu"):
            output = folder / f"out_{devices.replace(',', '_')}.mkv"
            with pytest.raises(SystemExit) as exit_info:
                main(["upscale", str(clip), "-o", str(output), "--model", "flashvsr-v1.1-tiny", "--devices", devices,
                      "--segment-frames", "21", "--segment-overlap", "4", "--codec", "ffv1", "--compare"])
            results[devices] = (exit_info.value.code, output)
    finally:
        patch.undo()
    return clip, results


def _decode(path):
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        audio = len(container.streams.audio)
    return frames, audio


def test_a_whole_run_on_one_and_two_workers_gives_the_same_pixels(stand_in_runs):
    clip, results = stand_in_runs
    (code_one, one), (code_two, two) = results["cpu"], results["cpu,cpu"]
    assert code_one == 0 and code_two == 0
    frames_one, audio = _decode(one)
    frames_two, _ = _decode(two)
    assert frames_one.shape == (45, 128, 128, 3) and audio == 1  # every frame, at 4x cropped to 128, audio kept
    np.testing.assert_array_equal(frames_one, frames_two)
    # --compare: the input as FlashVSR sees it (x4, cropped) left of the output.
    compared, _ = _decode(one.with_name("out_cpu_compare.mkv"))
    assert compared.shape == (45, 128, 256, 3)
    np.testing.assert_array_equal(compared[:, :, 128:], frames_one)
    from seedvr_cli.media.reader import open_reader
    from seedvr_cli.run.flashvsr_plan import lq_like_output
    from seedvr_cli.run.side_by_side import input_like_output

    with open_reader(str(clip)) as reader:
        inputs = np.asarray(reader.read(0, 45))
    as_model_sees = lq_like_output(4)(inputs, frames_one).astype(int)
    plain = input_like_output(inputs, frames_one).astype(int)
    left = compared[:, :, :128].astype(int)
    assert np.abs(left - as_model_sees).mean() < 0.5 * np.abs(left - plain).mean()
    assert sorted(p.name for p in one.parent.iterdir()) == [
        "clip.mp4", "dit.safetensors", "lq.ckpt", "out_cpu.mkv", "out_cpu_compare.mkv", "out_cpu_cpu.mkv",
        "out_cpu_cpu_compare.mkv", "posi_prompt.pth", "tc.ckpt"]


def test_the_prompt_embedding_is_found_beside_the_dit_else_fetched_else_named(tmp_path, monkeypatch):
    from seedvr_cli.config import ModelSettings
    from seedvr_cli.errors import CheckpointError
    from seedvr_cli.run import flashvsr_models

    monkeypatch.setenv("SEEDVR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SEEDVR_MODEL_DIR", raising=False)
    dit = tmp_path / "models" / "diffusion_pytorch_model_streaming_dmd.safetensors"
    dit.parent.mkdir()
    dit.write_bytes(b"")
    settings = ModelSettings()
    fetched = []

    def fake_fetch(entry, **kwargs):
        fetched.append(entry.name)
        path = tmp_path / "cache" / "posi_prompt.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"prompt")
        return path

    monkeypatch.setattr(flashvsr_models, "fetch_registered_file", fake_fetch)
    with pytest.raises(CheckpointError, match="seedvr models download flashvsr-prompt") as err:
        flashvsr_models.find_prompt(settings, dit, download=False)
    assert "\n" not in str(err.value) and str(dit.parent / "posi_prompt.pth") in str(err.value)
    assert flashvsr_models.find_prompt(settings, dit, download=True) == tmp_path / "cache" / "posi_prompt.pth"
    assert fetched == ["posi_prompt.pth"]
    beside = dit.parent / "posi_prompt.pth"
    beside.write_bytes(b"local")
    assert flashvsr_models.find_prompt(settings, dit, download=True) == beside and fetched == ["posi_prompt.pth"]


def test_preview_is_the_full_runs_frame_beside_the_input_as_flashvsr_sees_it(stand_in_runs, tmp_path, capsys):
    from seedvr_cli.media.images import read_image
    from seedvr_cli.media.reader import open_reader
    from seedvr_cli.run.flashvsr_models import FlashVSRFiles
    from seedvr_cli.run.flashvsr_plan import lq_like_output
    from seedvr_cli.run.flashvsr_processor import FlashVSRProcessorFactory

    clip, results = stand_in_runs
    full, _ = _decode(results["cpu"][1])
    files = FlashVSRFiles(*(tmp_path / name for name in ("dit.safetensors", "lq.ckpt", "tc.ckpt", "posi_prompt.pth")))
    for path in (files.dit, files.lq_proj, files.decoder, files.prompt):
        path.write_bytes(b"placeholder")
    output = tmp_path / "out.mkv"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("seedvr_cli.run.upscale.resolve_flashvsr_files", lambda settings, model: files)
        patch.setattr("seedvr_cli.run.upscale.FlashVSRProcessorFactory",
                      functools.partial(FlashVSRProcessorFactory, streamer=StandInStreamer()))
        # Frame 18 is shared by the segments 0-20 and 17-37 (of three): both run, the third does not.
        code, _, err = _upscale(capsys, str(clip), "-o", str(output), "--model", "flashvsr-v1.1-tiny", "--devices",
                                "cpu", "--segment-frames", "21", "--segment-overlap", "4", "--codec", "ffv1",
                                "--preview", "18")
    assert code == 0, err
    assert "frame 18: 2 of 3 segments" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["out_preview_18.png"]
    assert not output.exists()
    picture = read_image(tmp_path / "out_preview_18.png", deep=False, alpha=False)
    assert picture.shape == (128, 256, 3)
    # The right half is the full run's frame (to a level where the two segments' partials are summed).
    assert np.abs(picture[:, 128:].astype(int) - full[18]).max() <= 1
    with open_reader(str(clip)) as reader:
        original = np.asarray(reader.read(18, 19))
    np.testing.assert_array_equal(picture[:, :128], lq_like_output(4)(original, full[18:19])[0])


def test_vram_auto_tiles_the_dit_to_fit_the_budget_and_keeps_tiles_given_by_hand(clip, tmp_path, capsys):
    base = (str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "flashvsr-v1.1-tiny", "--no-download",
            "--dry-run", "--log-format", "json")

    def run(*extra: str) -> tuple[list[str], list[dict]]:
        code, out, err = _upscale(capsys, *base, *extra)
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        return [e.get("text", "") for e in events if e["event"] == "message"], events

    messages, events = run("--max-vram", "12")
    [line] = [m for m in messages if m.startswith("--vram auto")]
    assert "--max-vram 12" in line and "DiT tiles of 128 input px" in line  # 125-frame segments at 1920x1024
    [started] = [e for e in events if e["event"] == "job_started"]
    assert started["plan"]["estimated_vram_gib"] <= 0.9 * 12
    messages, _ = run("--max-vram", "40")
    assert any("no memory saver needed" in m for m in messages)
    # Tiles given by hand are the user's: --vram auto leaves them alone.
    messages, _ = run("--max-vram", "12", "--dit-tiling", "off")
    assert not any(m.startswith("--vram auto") for m in messages)
    messages, _ = run("--max-vram", "12", "--vram", "manual")
    assert not any(m.startswith("--vram auto") for m in messages)
    code, _, err = _upscale(capsys, *base, "--max-vram", "4")
    assert code == 2 and "even with DiT tiles of 64 input px" in err and "--segment-frames" in err
