"""``seedvr upscale --preview N`` and ``--compare`` on the CPU with tiny synthesized model_args.

One full run to a lossless PNG sequence is the reference: a preview's right half must be the frame
the full run writes, its left half the input frame scaled to the output size. Runs are shared
between tests through module-scoped fixtures (each run starts workers and loads models).
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli
from media_factory import make_video

from seedvr_cli.cli import main
from seedvr_cli.media.images import read_image
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.run.side_by_side import input_like_output

# Windows of 5 frames crossfaded over 2, after 2 prepended frames: output frame 4 is timeline frame
# 6, shared by two windows; output frame 8 (timeline 10) lies inside one window only.
_WINDOWS = ["--resolution", "32", "--batch-size", "5", "--temporal-overlap", "2", "--prepend-frames", "2"]
_SHARED_FRAME, _INNER_FRAME = 4, 8


@pytest.fixture(scope="module")
def model_args(checkpoints) -> list[str]:
    dit, vae = checkpoints
    return ["--model", str(dit), "--vae", str(vae), "--device", "cpu"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", *args)


def _decode(path: Path) -> tuple[np.ndarray, Fraction]:
    with av.open(str(path)) as container:
        rate = Fraction(container.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return frames, rate


def _audio_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(audio=0) if p.size) if container.streams.audio else 0


# ---------------------------------------------------------------- --preview


@pytest.fixture(scope="module")
def previews(tmp_path_factory, model_args):
    """The full run of a clip to a PNG sequence, and previews of two of its frames with the same -o
    (the first with chunks of three windows and JSON events, kept as ``runs["events"]``)."""
    folder = tmp_path_factory.mktemp("preview")
    clip = make_video(folder / "clip.mp4", frames=11, width=32, height=24)
    pattern = str(folder / "full" / "%04d.png")
    runs = {}
    shared = ["--preview", str(_SHARED_FRAME), "--chunk-windows", "3", "--log-format", "json"]
    for name, extra in (("full", []), ("shared", shared), ("inner", ["--preview", str(_INNER_FRAME)])):
        before = {p.name for p in folder.iterdir()}
        with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()) as stdout:
            main(["upscale", str(clip), "-o", pattern, *model_args, *_WINDOWS, *extra])
        runs[name] = exit_info.value.code
        if name == "shared":
            runs["shared_new_files"] = {p.name for p in folder.iterdir()} - before
            runs["events"] = _json_events(stdout.getvalue())
    return folder, clip, runs


def _json_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _check_preview(folder: Path, clip: Path, number: int) -> None:
    picture = read_image(folder / f"full_preview_{number}.png", deep=False, alpha=False)
    written = read_image(folder / "full" / f"{number + 1:04d}.png", deep=False, alpha=False)
    height, width, _ = written.shape
    assert picture.shape == (height, 2 * width, 3)
    left, right = picture[:, :width], picture[:, width:]
    # The frame the full run writes (overlapping windows may be summed in another order).
    assert np.abs(right.astype(int) - written.astype(int)).max() <= 1
    # Left: the input frame itself, scaled to the output size, not one of its neighbours.
    source, _ = _decode(clip)
    distances = [np.abs(left.astype(int) - input_like_output(frame[None], written[None])[0].astype(int)).mean()
                 for frame in source]
    assert int(np.argmin(distances)) == number and distances[number] < 1


def test_preview_of_a_frame_shared_by_two_windows_is_the_full_runs_frame(previews):
    folder, clip, runs = previews
    assert runs["full"] == 0 and runs["shared"] == 0
    _check_preview(folder, clip, _SHARED_FRAME)


def test_preview_of_a_frame_inside_one_window_is_the_full_runs_frame(previews):
    folder, clip, runs = previews
    assert runs["inner"] == 0
    _check_preview(folder, clip, _INNER_FRAME)


def test_preview_writes_only_its_png(previews):
    folder, _, runs = previews
    # No output, no work directory left: the PNG beside the output's folder is all that is new.
    assert runs["shared_new_files"] == {f"full_preview_{_SHARED_FRAME}.png"}


def test_preview_runs_only_the_windows_of_its_frame(previews):
    _, _, runs = previews
    windows = plan_windows(11, batch_size=5, overlap=2, prepend=2).windows
    holding = [w for w in windows if w.start <= 2 + _SHARED_FRAME < w.stop]
    assert len(holding) == 2 and len(windows) > 3
    progress = [e for e in runs["events"] if e["event"] == "progress"]
    # --chunk-windows 3 does not make a preview compute the neighbours of the frame's two windows.
    assert progress and {e["chunks_total"] for e in progress} == {2}
    assert any(f"2 of {len(windows)} windows" in e.get("text", "") for e in runs["events"])


def test_preview_is_not_overwritten_without_overwrite(previews, capsys, model_args):
    folder, clip, _ = previews
    target = folder / f"full_preview_{_INNER_FRAME}.png"
    before = target.read_bytes()
    target.write_bytes(b"keep me")
    try:
        code, _, err = _run(capsys, str(clip), "-o", str(folder / "full" / "%04d.png"), *model_args, *_WINDOWS,
                            "--preview", str(_INNER_FRAME))
        assert code == 1
        assert target.read_bytes() == b"keep me"
        assert "already exists; pass --overwrite" in err and str(target) in err
    finally:
        target.write_bytes(before)


def test_preview_past_the_last_frame_is_one_line(tmp_path, capsys, model_args):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=32, height=32)
    code, _, err = _run(capsys, str(clip), *model_args, "--preview", "5")
    assert code == 1
    line = next(line for line in err.splitlines() if "--preview 5" in line)
    assert "0 to 4" in line
    assert {p.name for p in tmp_path.iterdir()} == {"clip.mp4"}


@pytest.mark.parametrize("args, words", [
    (["--preview", "-1"], "0 or more"),
    (["--preview", "3", "--dry-run"], "leave out --dry-run"),
    (["--preview", "3", "--compare"], "leave out --compare"),
    (["--compare", "--shard", "0/2"], "--compare needs the whole output"),
])
def test_flags_that_cannot_go_together_are_usage_errors(tmp_path, capsys, args, words):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=32, height=32)
    code, _, err = _run(capsys, str(clip), *args)
    assert code == 2
    assert words in err


# ---------------------------------------------------------------- --compare


@pytest.fixture(scope="module")
def compared(tmp_path_factory, model_args):
    """A clip with audio upscaled losslessly (FFV1) with --compare."""
    folder = tmp_path_factory.mktemp("compare")
    clip = make_video(folder / "clip.mkv", frames=9, width=32, height=24, fps=Fraction(24000, 1001), audio="aac")
    output = folder / "up.mkv"
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "-o", str(output), *model_args, *_WINDOWS, "--codec", "ffv1", "--compare"])
    return folder, clip, output, exit_info.value.code


def test_compare_puts_each_input_frame_beside_its_output_frame(compared):
    folder, clip, output, code = compared
    assert code == 0
    frames, rate = _decode(output)
    pairs, pairs_rate = _decode(folder / "up_compare.mkv")
    source, source_rate = _decode(clip)
    assert len(pairs) == len(frames) == len(source) == 9
    assert pairs_rate == rate == source_rate
    width = frames.shape[2]
    assert pairs.shape[1:] == (frames.shape[1], 2 * width, 3)
    # Lossless both: the right half is the output (within the colour conversions' rounding).
    assert np.abs(pairs[:, :, width:].astype(int) - frames.astype(int)).max() <= 2
    scaled = input_like_output(source, frames)
    for number, pair in enumerate(pairs):
        distances = [np.abs(pair[:, :width].astype(int) - frame.astype(int)).mean() for frame in scaled]
        assert int(np.argmin(distances)) == number  # prepended frames do not shift the input side


def test_compare_keeps_the_audio(compared):
    folder, clip, _, _ = compared
    assert _audio_packets(folder / "up_compare.mkv") == _audio_packets(clip) > 0


def test_compare_leaves_no_work_files(compared):
    folder, *_ = compared
    assert {p.name for p in folder.iterdir()} == {"clip.mkv", "up.mkv", "up_compare.mkv"}


def test_existing_comparison_is_refused_and_no_output_is_left(tmp_path, capsys, model_args):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=32, height=32)
    (tmp_path / "up_compare.mp4").write_bytes(b"keep me")
    code, _, err = _run(capsys, str(clip), "-o", str(tmp_path / "up.mp4"), *model_args, "--compare")
    assert code == 1
    assert "up_compare.mp4: already exists" in err
    assert (tmp_path / "up_compare.mp4").read_bytes() == b"keep me"
    assert {p.name for p in tmp_path.iterdir()} == {"clip.mp4", "up_compare.mp4"}
