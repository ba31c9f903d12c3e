"""``seedvr upscale`` end to end on the CPU with tiny synthesized checkpoints, through the real entry point.

Every run that reaches the workers starts worker processes and loads models, so runs are few and
shared: a module-scoped folder run serves the alpha, 16-bit, partial-failure
and JSON-log checks; one pair of runs serves both the 1-vs-2-workers and the 16-bit video checks.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli, shared_path
from media_factory import make_image, make_video

from seedvr_cli.cli import main
from seedvr_cli.media.images import read_image
from seedvr_cli.pipeline.plan import plan_frame_size


def _run(capsys, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", *args)


def _models(checkpoints) -> list[str]:
    dit, vae = checkpoints
    return ["--model", str(dit), "--vae", str(vae), "--device", "cpu"]


def _video_facts(path: Path) -> dict:
    """Decoded frame count, frame rate, duration and audio packet count of a clip."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = video.average_rate
        duration = float(container.duration / av.time_base) if container.duration else None
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = [p for p in container.demux(audio=0) if p.size] if container.streams.audio else []
        audio_codec = container.streams.audio[0].codec_context.name if container.streams.audio else None
    return {"frames": frames, "fps": Fraction(fps), "duration": duration, "audio_packets": len(audio),
            "audio_codec": audio_codec, "size": (frames[0].shape[0], frames[0].shape[1])}


def _decode_deep(path: Path) -> tuple[np.ndarray, str]:
    """Every frame as 16-bit RGB (whatever the stored depth), and the stored pixel format."""
    with av.open(str(path)) as container:
        pix_fmt = container.streams.video[0].codec_context.pix_fmt
        frames = np.stack([f.to_ndarray(format="rgb48le") for f in container.decode(video=0)])
    return frames, pix_fmt


def _no_leftovers(folder: Path, expected: set[str]) -> None:
    """Nothing but the expected files: no work directory, temp file or partial output."""
    assert {p.name for p in folder.iterdir()} == expected


# ---------------------------------------------------------------- videos


def test_video_with_audio_keeps_frames_rate_duration_and_audio(tmp_path, capsys, checkpoints):
    (tmp_path / "in").mkdir()
    # Brackets as in many downloaded names: Rich must not take "[x264]" for markup and drop it.
    clip = make_video(tmp_path / "in" / "clip [x264].mp4", frames=17, width=64, height=48,
                      fps=Fraction(24000, 1001), audio="aac")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "clip_up.mp4"
    code, _, err = _run(capsys, str(clip), "-o", str(output), *_models(checkpoints), "--resolution", "64",
                        "--batch-size", "5", "--temporal-overlap", "2", "--prepend-frames", "2", "--verbose")
    assert code == 0, err
    # What the run is doing and where, and with --verbose where the time went.
    assert "devices: cpu:0" in err and "loading models ..." in err and "first window ..." in err
    assert "cpu:0 ready after" in err and "stages (summed over devices): " in err and "dit " in err
    assert "peak VRAM: none measured" in err
    source, result = _video_facts(clip), _video_facts(output)
    assert len(result["frames"]) == len(source["frames"]) == 17
    assert result["fps"] == source["fps"] == Fraction(24000, 1001)
    assert abs(result["duration"] - source["duration"]) <= 1 / float(source["fps"])
    assert result["audio_codec"] == "aac" and result["audio_packets"] == source["audio_packets"] > 0
    planned = plan_frame_size(48, 64, resolution=64, even=True).true
    assert result["size"] == planned and planned[0] % 2 == 0 and planned[1] % 2 == 0 and min(planned) == 64
    assert "summary:" in err and "17 frames" in err
    assert "clip [x264].mp4 ->" in err
    assert "17/17 frames" in err and "19/19" not in err  # progress counts output frames, not prepended ones
    _no_leftovers(out_dir, {"clip_up.mp4"})


def test_shared_clip_upscales_whole(tmp_path, capsys, checkpoints):
    """The issue's "a clip from shared/media upscales on the CPU": all 45 frames, 10-bit H.265 out."""
    eyes = shared_path("media", "Eyes_212x120.mp4")
    output = tmp_path / "eyes.mp4"
    code, _, err = _run(capsys, str(eyes), "-o", str(output), *_models(checkpoints), "--resolution", "64",
                        "--batch-size", "5", "--10bit")
    assert code == 0, err
    source, result = _video_facts(eyes), _video_facts(output)
    assert len(result["frames"]) == len(source["frames"]) == 45
    assert result["fps"] == source["fps"] == 25
    assert abs(result["duration"] - source["duration"]) <= 1 / 25
    assert result["audio_packets"] == source["audio_packets"]  # the source has none: none invented
    assert result["size"] == plan_frame_size(120, 212, resolution=64, even=True).true
    deep, pix_fmt = _decode_deep(output)
    assert pix_fmt == "yuv420p10le"
    # Real 10-bit values, not 8-bit ones shifted up: some decoded levels fall between 8-bit steps.
    assert np.any(deep % 257 != 0)
    _no_leftovers(tmp_path, {"eyes.mp4"})


def test_frame_range_to_png_sequence(tmp_path, capsys, checkpoints):
    """--frames picks the right input frames; a video written as images keeps its odd planned width."""
    import cv2

    clip = make_video(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    code, _, err = _run(capsys, str(clip), "-o", str(tmp_path / "frames" / "%04d.png"), *_models(checkpoints),
                        "--resolution", "64", "--batch-size", "5", "--frames", "3:10")
    assert code == 0, err
    written = sorted((tmp_path / "frames").iterdir())
    assert len(written) == 7
    planned = plan_frame_size(48, 64, resolution=64, even=False).true
    assert planned[1] % 2 == 1
    source = _video_facts(clip)["frames"]
    for number, path in enumerate(written):
        image = read_image(path, deep=False, alpha=False)
        assert image.shape == (*planned, 3)
        # Colour correction carries the input's low frequencies: each output is closest to its own input frame.
        small = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
        distances = [np.abs(small - frame).mean() for frame in source]
        assert int(np.argmin(distances)) == 3 + number


@pytest.fixture(scope="module")
def worker_count_runs(tmp_path_factory, checkpoints):
    """The same lossless 16-bit FFV1 job with one and with two CPU workers."""
    folder = tmp_path_factory.mktemp("workers")
    clip = make_video(folder / "clip.mkv", frames=13, width=64, height=48, codec="ffv1", pix_fmt="yuv420p10le")
    results = {}
    for devices in ("cpu", "cpu,cpu"):
        output = folder / f"out_{devices.replace(',', '_')}.mkv"
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", *_worker_count_args(clip, output, checkpoints), "--devices", devices,
                  "--log-format", "json"])
        results[devices] = (exit_info.value.code, output)
    return clip, results


def test_two_workers_give_bit_identical_output(worker_count_runs):
    _, results = worker_count_runs
    (code_one, one), (code_two, two) = results["cpu"], results["cpu,cpu"]
    assert code_one == 0 and code_two == 0
    frames_one, _ = _decode_deep(one)
    frames_two, _ = _decode_deep(two)
    assert frames_one.shape[0] == 13
    assert np.array_equal(frames_one, frames_two)


def _worker_count_args(clip: Path, output: Path, checkpoints) -> list[str]:
    return [str(clip), "-o", str(output), *_models(checkpoints), "--resolution", "64", "--batch-size", "5",
            "--temporal-overlap", "2", "--codec", "ffv1", "--10bit"]


@pytest.fixture(scope="module")
def killed_and_resumed(worker_count_runs, checkpoints):
    """The 1-worker job run in a real process, SIGKILLed half-way, then re-run in this one."""
    import io
    import signal
    import subprocess
    import sys

    import psutil
    from conftest import REPO_ROOT

    clip, _ = worker_count_runs
    output = clip.parent / "resumed.mkv"
    args = [*_worker_count_args(clip, output, checkpoints), "--devices", "cpu"]
    process = subprocess.Popen([sys.executable, "-m", "seedvr_cli", "upscale", *args, "--log-format", "json"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    workers = []
    try:
        for line in process.stdout:
            event = json.loads(line)
            # Killed once frames reach the encoder (its hidden partial file exists) but work is left.
            if event.get("frames_written") and event["chunks_done"] < event["chunks_total"]:
                workers = psutil.Process(process.pid).children(recursive=True)
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    # The workers notice their parent is gone and exit by themselves: no orphans holding a GPU.
    _, orphans = psutil.wait_procs(workers, timeout=20)
    for orphan in orphans:
        orphan.kill()
    kept = sorted(p.name for p in clip.parent.iterdir() if p.name.startswith(".resumed"))

    stderr, saved = io.StringIO(), sys.stderr
    sys.stderr = stderr
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", *args])
    finally:
        sys.stderr = saved
    return {"workers": workers, "orphans": orphans, "kept": kept, "code": exit_info.value.code,
            "err": stderr.getvalue(), "output": output}


def test_killed_run_resumes_to_identical_output(worker_count_runs, killed_and_resumed):
    _, results = worker_count_runs
    run = killed_and_resumed
    assert run["workers"] and not run["orphans"]
    assert any(name.startswith(".resumed.mkv.seedvr-") for name in run["kept"])  # the journal survived the kill
    assert run["code"] == 0, run["err"]
    resumed = [line for line in run["err"].splitlines() if "chunks resumed" in line]
    assert resumed and not resumed[0].strip().startswith("0 of"), run["err"]
    frames, _ = _decode_deep(run["output"])
    expected, _ = _decode_deep(results["cpu"][1])
    assert np.array_equal(frames, expected)
    assert not list(run["output"].parent.glob(".resumed.mkv.seedvr-*"))  # journal removed on success


def test_resumed_run_leaves_no_partial_file(killed_and_resumed):
    folder = killed_and_resumed["output"].parent
    assert killed_and_resumed["code"] == 0
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".resumed")]


def test_deep_video_stays_deep(worker_count_runs):
    clip, results = worker_count_runs
    frames, pix_fmt = _decode_deep(results["cpu"][1])
    assert pix_fmt == "gbrp16le"  # FFV1 with --10bit: lossless, 16 bits per channel
    assert np.any(frames % 257 != 0)


# ---------------------------------------------------------------- a folder of images


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, checkpoints):
    """Two good images (RGBA 8-bit, RGB 16-bit) with a corrupt file between them, on two workers, JSON logs."""
    root = tmp_path_factory.mktemp("folder")
    inputs, outputs = root / "in", root / "out"
    inputs.mkdir()
    rgba = make_image(inputs / "a_rgba.png", width=64, height=48, alpha=True)
    deep = make_image(inputs / "c_deep.png", width=48, height=64, deep=True)
    (inputs / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    # Two workers for one-frame inputs: fewer frames than devices, and a pool that serves every file.
    args = [str(inputs), "-o", str(outputs), *_models(checkpoints), "--devices", "cpu,cpu", "--resolution", "80",
            "--batch-size", "5", "--log-format", "json"]
    return root, args, {"rgba": rgba, "deep": deep}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def folder_result(folder_run):
    import io
    import sys

    root, args, sources = folder_run
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", *args])
    finally:
        sys.stdout, sys.stderr = saved
    return exit_info.value.code, stdout.getvalue(), stderr.getvalue()


def test_folder_with_a_corrupt_file_writes_the_good_ones_and_exits_3(folder_run, folder_result):
    root, _, _ = folder_run
    code, out, _ = folder_result
    assert code == 3
    assert sorted(p.name for p in (root / "out").iterdir()) == ["a_rgba_upscaled.png", "c_deep_upscaled.png"]
    events = _json_lines(out)
    [summary] = [e for e in events if e["event"] == "summary"]
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    [failed] = [e for e in events if e["event"] == "job_finished" and e["status"] == "failed"]
    assert failed["input"].endswith("b_broken.png") and failed["message"]
    # The broken file sits between the good ones: the run goes on with the same workers after it.
    finished = [Path(e["input"]).name for e in events if e["event"] == "job_finished"]
    assert finished == ["a_rgba.png", "b_broken.png", "c_deep.png"]
    assert any(e["event"] == "progress" for e in events)


def test_rgba_image_keeps_alpha_at_planned_size(folder_run, folder_result):
    root, _, sources = folder_run
    assert folder_result[0] == 3
    image = read_image(root / "out" / "a_rgba_upscaled.png", deep=False, alpha=True)
    planned = plan_frame_size(48, 64, resolution=80, even=False).true
    assert image.shape == (*planned, 4)
    alpha = image[..., 3]
    # The source alpha is a diagonal ramp: the upscaled one must still vary, darkest top-left.
    assert alpha.min() < 40 and alpha.max() > 215 and alpha[0, 0] < alpha[-1, -1]


def test_sixteen_bit_png_gives_sixteen_bit_png(folder_run, folder_result):
    root, _, _ = folder_run
    assert folder_result[0] == 3
    output = root / "out" / "c_deep_upscaled.png"
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name in ("rgb48be", "rgb48le", "rgba64be", "rgba64le")
    image = read_image(output, deep=True, alpha=False)
    assert image.dtype == np.uint16 and image.shape[:2] == plan_frame_size(64, 48, resolution=80, even=False).true
    assert np.any(image % 257 != 0)  # no 8-bit step on the way


def test_rerun_skips_existing_and_refuses_to_overwrite(folder_run, folder_result, capsys):
    root, args, _ = folder_run
    assert folder_result[0] == 3
    written = {p: p.stat().st_mtime_ns for p in (root / "out").iterdir()}
    code, out, _ = _run(capsys, *args, "--skip-existing")
    events = _json_lines(out)
    [summary] = [e for e in events if e["event"] == "summary"]
    assert (summary["done"], summary["failed"], summary["skipped"]) == (0, 1, 2)
    assert code == 3  # the corrupt file still fails
    assert {p: p.stat().st_mtime_ns for p in (root / "out").iterdir()} == written

    # Nothing left to do needs no model: a missing one is neither looked for nor downloaded.
    code, _, err = _run(capsys, str(root / "in" / "a_rgba.png"), "-o", str(root / "out" / "a_rgba_upscaled.png"),
                        "--skip-existing", "--model", "/nonexistent/dit.safetensors", "--no-download")
    assert code == 0, err
    assert "skipped" in err and "1 skipped" in err

    code, out, err = _run(capsys, *args[:-2])  # text logs this time
    assert code in (1, 2)
    text = " ".join(err.split())
    assert "a_rgba_upscaled.png: already exists" in text and "--overwrite" in text and "Traceback" not in err
    assert err.startswith("error: ") and err.count("error:") == 1
    assert {p: p.stat().st_mtime_ns for p in (root / "out").iterdir()} == written


# ---------------------------------------------------------------- no model needed


def test_dry_run_estimates_vram_from_the_checkpoint_headers(tmp_path, capsys, checkpoints):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    common = [str(clip), "-o", str(tmp_path / "out.mkv"), *_models(checkpoints), "--batch-size", "5", "--dry-run"]
    code, _, err = _run(capsys, *common, "--resolution", "1080")
    plain = float(err.split(" GiB VRAM per GPU")[0].rsplit("~", 1)[1])
    code, _, err = _run(capsys, *common, "--resolution", "1080", "--vae-tiling", "on")
    tiled = float(err.split(" GiB VRAM per GPU")[0].rsplit("~", 1)[1])
    assert code == 0 and 0 < tiled < plain


def test_dry_run_prints_the_plan_without_loading_models(tmp_path, capsys):
    clip = make_video(tmp_path / "clip.mp4", frames=17, width=64, height=48)
    code, _, err = _run(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "/nonexistent/dit.safetensors",
                        "--vae", "/nonexistent/vae.safetensors", "--no-download", "--resolution", "96",
                        "--batch-size", "5", "--dry-run")
    assert code == 0, err
    assert "64x48 -> 128x96" in err and "17 frames" in err and "4 windows" in err and "out.mp4" in err
    assert "1 planned (dry run)" in err
    assert "VRAM not estimated (model unknown)" in err  # missing files given by path
    assert not (tmp_path / "out.mp4").exists()

    code, out, _ = _run(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "/nonexistent/dit.safetensors",
                        "--no-download", "--resolution", "96", "--batch-size", "9", "--temporal-overlap", "2",
                        "--dry-run", "--log-format", "json")
    assert code == 0
    events = _json_lines(out)
    [started] = [e for e in events if e["event"] == "job_started"]
    assert started["output"].endswith("out.mp4")
    assert started["plan"]["frames"] == 17 and started["plan"]["output_size"] == [96, 128]
    assert started["plan"]["windows"] == 3  # 9-frame windows advancing by 7 over 17 frames
    [summary] = [e for e in events if e["event"] == "summary"]
    assert summary["failed"] == 0 and summary["done"] == 0


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["missing.mp4"], 1, ["missing.mp4", "no such file"]),
        (["clip.mp4", "--batch-size", "20"], 2, ["17", "21"]),
        (["clip.mp4", "--temporal-overlap", "5", "--batch-size", "5"], 2, ["--temporal-overlap"]),
        (["clip.mp4", "--devices", "cuda:7"], None, ["cuda:7"]),
        (["junk.mp4"], 1, ["junk.mp4"]),
        (["clip.mp4", "--model", "{vae}"], 1, ["is a SeedVR2 VAE checkpoint, not a DIT", "--vae"]),
        (["clip.mp4", "-o", "junk.mp4/out.mp4"], 1, ["junk.mp4: cannot create the output folder"]),
        (["clip.mp4", "--attention", "fast"], 2, ["--attention fast: use auto, sdpa, flash, flex"]),
    ],
)
def test_bad_input_is_one_line_with_the_right_exit_code(tmp_path, capsys, monkeypatch, checkpoints, args, code, words):
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 300)
    defaults = [*_models(checkpoints), "--resolution", "64", *([] if "--batch-size" in args else ["--batch-size", "5"])]
    args = [arg.replace("{vae}", str(checkpoints[1])) for arg in args]
    exit_code, _, err = _run(capsys, *defaults, *args)
    assert exit_code == code if code is not None else exit_code in (1, 2)
    assert "Traceback" not in err
    text = " ".join(err.split())  # Rich wraps long lines at the console width (see the test below)
    for word in words:
        assert word in text
    if any("junk.mp4" in arg for arg in args):
        # A single input that fails as a file, not as a request: the summary names it, nothing is written.
        assert f"failed: {args[0]}" in text and not list(tmp_path.glob("*_upscaled*"))
    else:
        assert err.startswith("error: ") and err.count("error:") == 1, err


def test_long_error_stays_one_line(tmp_path, capsys):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    code, _, err = _run(capsys, str(clip), "--batch-size", "20", "--dry-run")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err


def _sequence_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        make_image(folder / name, width=64, height=48)
    return folder


def test_folder_sequence_default_output(tmp_path, capsys, checkpoints):
    frames = _sequence_folder(tmp_path / "frames", [f"f{number:03d}.png" for number in range(1, 4)])
    code, _, err = _run(capsys, str(frames), "--sequence", "--fps", "24", *_models(checkpoints),
                        "--resolution", "64", "--batch-size", "5")
    assert code == 0, err
    written = sorted((tmp_path / "frames_upscaled").iterdir())
    assert [p.name for p in written] == ["f001.png", "f002.png", "f003.png"]
    planned = plan_frame_size(48, 64, resolution=64, even=False).true
    assert read_image(written[0], deep=False, alpha=False).shape[:2] == planned


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(spec, reporter):
        raise KeyboardInterrupt

    monkeypatch.setattr("seedvr_cli.run.upscale.run_upscale", interrupted)
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    code, _, err = _run(capsys, str(clip), "--devices", "cpu")
    assert code == 130
    assert "interrupted" in err and "run the same command again to resume" in " ".join(err.split())


def test_frames_of_a_folder_sequence_keep_their_file_names(tmp_path, capsys, checkpoints):
    frames = _sequence_folder(tmp_path / "shots", [f"s{number:03d}.png" for number in range(1, 6)])
    code, _, err = _run(capsys, str(frames), "--sequence", "--frames", "1:4", *_models(checkpoints),
                        "--resolution", "48", "--batch-size", "5")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "shots_upscaled").iterdir()) == ["s002.png", "s003.png", "s004.png"]


def test_an_output_another_run_is_working_on_is_refused(tmp_path, capsys, checkpoints):
    from seedvr_cli.parallel.outputlock import OutputLock

    clip = make_video(tmp_path / "clip.mp4", frames=5, width=32, height=24)
    output = tmp_path / "clip_up.mp4"
    with OutputLock(output):
        code, _, err = _run(capsys, str(clip), "-o", str(output), *_models(checkpoints), "--resolution", "32",
                            "--batch-size", "5", "--restart")
    assert code != 0
    text = " ".join(err.split())
    assert "clip_up.mp4: another seedvr process" in text and "Traceback" not in err
    _no_leftovers(tmp_path, {"clip.mp4"})


# ---------------------------------------------------------------- memory


def test_blockswap_gives_the_same_pixels_and_is_checked_against_the_model(tmp_path, capsys, checkpoints):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=24, height=16)
    common = [str(clip), "--resolution", "32", "--batch-size", "5", "--codec", "ffv1", "--no-resume",
              *_models(checkpoints)]
    plain, swapped = tmp_path / "plain.mkv", tmp_path / "swapped.mkv"
    assert _run(capsys, *common, "-o", str(plain))[0] == 0
    # Every block of the tiny 3B and its input/output layers streamed from host memory.
    assert _run(capsys, *common, "-o", str(swapped), "--blocks-to-swap", "4", "--swap-io-components")[0] == 0
    assert np.array_equal(_decode_deep(plain)[0], _decode_deep(swapped)[0])
    # The VAE waiting in host memory while the DiT runs changes no pixel either.
    offloaded = tmp_path / "offloaded.mkv"
    assert _run(capsys, *common, "-o", str(offloaded), "--vae-offload-device", "cpu")[0] == 0
    assert np.array_equal(_decode_deep(plain)[0], _decode_deep(offloaded)[0])
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--vae-offload-device", "gpu")
    assert code == 2 and "--vae-offload-device gpu: use none or cpu" in err
    # Nor does the DiT waiting in host memory while the VAE codes, alone or under BlockSwap.
    for name, extra in (("dit_off.mkv", ()), ("dit_off_swapped.mkv", ("--blocks-to-swap", "2"))):
        assert _run(capsys, *common, "-o", str(tmp_path / name), "--dit-offload-device", "cpu", *extra)[0] == 0
        assert np.array_equal(_decode_deep(plain)[0], _decode_deep(tmp_path / name)[0])
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--dit-offload-device", "cuda:1")
    assert code == 2 and "--dit-offload-device cuda:1: use none or cpu" in err
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--blocks-to-swap", "99")
    assert code == 2 and "--blocks-to-swap 99" in err and "has 4 blocks" in err
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--blocks-to-swap", "-1")
    assert code == 2 and "--blocks-to-swap -1" in err
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--max-vram", "0")
    assert code == 2 and "--max-vram 0" in err


def test_attention_choice_reaches_the_worker_and_a_missing_one_falls_back(tmp_path, capsys, checkpoints):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=24, height=16)
    code, out, err = _run(capsys, str(clip), "-o", str(tmp_path / "out.mkv"), "--resolution", "32", "--batch-size", "5",
                          "--codec", "ffv1", *_models(checkpoints), "--attention", "flash")
    assert code == 0
    assert "--attention flash is not available (the varlen flash kernels need a CUDA GPU" in " ".join((out + err).split())


def test_vae_tiling_codes_in_tiles_and_is_part_of_the_resume_key(tmp_path, capsys, checkpoints):
    from seedvr_cli.config import JobSpec, MemorySettings

    clip = make_video(tmp_path / "clip.mp4", frames=5, width=48, height=32)
    common = [str(clip), "--resolution", "128", "--batch-size", "5", "--codec", "ffv1", "--no-resume",
              *_models(checkpoints)]
    plain, tiled = tmp_path / "plain.mkv", tmp_path / "tiled.mkv"
    assert _run(capsys, *common, "-o", str(plain))[0] == 0
    assert _run(capsys, *common, "-o", str(tiled), "--vae-tiling", "on", "--vae-tile-size", "64",
                "--vae-tile-overlap", "32")[0] == 0
    a, b = _decode_deep(plain)[0], _decode_deep(tiled)[0]
    assert a.shape == b.shape and not np.array_equal(a, b)
    # Tiles on their own statistics (the reference's tiling) give other pictures than shared ones.
    own = tmp_path / "own.mkv"
    assert _run(capsys, *common, "-o", str(own), "--vae-tiling", "on", "--vae-tile-size", "64",
                "--vae-tile-overlap", "32", "--vae-tile-statistics", "own")[0] == 0
    assert not np.array_equal(_decode_deep(own)[0], b)
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--vae-tiling", "on", "--vae-tile-size", "64",
                        "--vae-tile-overlap", "64")
    assert code == 2 and "--vae-tile-overlap 64" in err
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.mkv"), "--vae-tiling", "on",
                        "--vae-tile-statistics", "mine")
    assert code == 2 and "--vae-tile-statistics mine: use shared or own" in err
    untiled, with_tiles = JobSpec(("x",)), JobSpec(("x",), memory=MemorySettings(vae_tiling="on"))
    assert untiled.pixel_settings() != with_tiles.pixel_settings()
    assert (JobSpec(("x",), memory=MemorySettings(vae_tiling="on", vae_tile_statistics="own")).pixel_settings()
            != with_tiles.pixel_settings())
    assert JobSpec(("x",), memory=MemorySettings(blocks_to_swap=3)).pixel_settings() == untiled.pixel_settings()


def test_dry_run_names_the_model_its_format_and_the_devices(tmp_path, capsys, monkeypatch, checkpoints):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SEEDVR_MODEL_DIR", raising=False)
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    code, _, err = _run(capsys, str(clip), *_models(checkpoints), "--resolution", "64", "--dry-run")
    text = " ".join(err.split())
    assert code == 0, err
    assert f"would use model {checkpoints[0]} (tiny-3b fp16), vae {checkpoints[1]} (tiny-vae fp16)" in text
    assert "devices: cpu:0" in text
    code, _, err = _run(capsys, str(clip), "--model", "7b-fp8-mixed", "--resolution", "64", "--dry-run",
                        "--devices", "0,1")
    text = " ".join(err.split())
    assert code == 0, err
    assert ("model seedvr2_ema_7b_fp8_e4m3fn_mixed_block35_fp16.safetensors (7b fp8_e4m3fn_mixed; not here yet, "
            "downloaded on first use)") in text
    if not torch_cuda_count():
        assert "devices: none usable on this machine (--devices 0,1: GPU 0 is not visible" in text


def torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_auto_devices_on_a_cpu_only_machine_warn_of_hours_with_an_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("seedvr_cli.parallel.devices.visible_cuda_count", lambda: 0)
    long_clip = make_video(tmp_path / "long.mp4", frames=400, width=32, height=24)
    code, _, err = _run(capsys, str(long_clip), "--resolution", "1080", "--dry-run")
    text = " ".join(err.split())
    assert code == 0, err
    assert "devices: cpu:0 (--devices auto: no GPU is visible)" in text
    assert "warning: no GPU is visible, so --devices auto runs on the CPU" in text
    hours = float(text.split("will take at least ~")[1].split(" h")[0])
    assert hours >= 1.0
    # Chosen on purpose, or short enough: no warning.
    code, _, err = _run(capsys, str(long_clip), "--resolution", "1080", "--dry-run", "--devices", "cpu")
    assert code == 0 and "warning" not in err
    code, _, err = _run(capsys, str(long_clip), "--resolution", "1080", "--dry-run", "--frames", "0:20")
    assert code == 0 and "warning" not in err


def test_dit_tiling_runs_end_to_end_and_is_part_of_the_resume_key(tmp_path, capsys, checkpoints):
    from seedvr_cli.config import JobSpec, MemorySettings

    photo = tmp_path / "photo.png"
    make_image(photo, width=48, height=32)
    # 720x480 output: 30 x 45 tokens, 2 x 2 attention windows; 256 px tiles are one window each.
    common = [str(photo), "--resolution", "480", *_models(checkpoints)]
    plain, tiled = tmp_path / "plain.png", tmp_path / "tiled.png"
    assert _run(capsys, *common, "-o", str(plain))[0] == 0
    code, _, err = _run(capsys, *common, "-o", str(tiled), "--dit-tiling", "on", "--dit-tile-size", "256",
                        "--dit-tile-overlap", "16")
    assert code == 0, err
    a, b = read_image(plain, deep=False, alpha=False), read_image(tiled, deep=False, alpha=False)
    assert a.shape == b.shape == (480, 720, 3) and not np.array_equal(a, b)
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.png"), "--dit-tiling", "on",
                        "--dit-tile-size", "512", "--dit-tile-overlap", "512")
    assert code == 2 and "--dit-tile-overlap 512" in err
    code, _, err = _run(capsys, *common, "-o", str(tmp_path / "x.png"), "--dit-tiling", "maybe")
    assert code == 2 and "--dit-tiling maybe" in err
    untiled, with_tiles = JobSpec(("x",)), JobSpec(("x",), memory=MemorySettings(dit_tiling="on"))
    assert untiled.pixel_settings() != with_tiles.pixel_settings()
    assert with_tiles.pixel_settings() != JobSpec(
        ("x",), memory=MemorySettings(dit_tiling="on", dit_tile_size=1024)).pixel_settings()
