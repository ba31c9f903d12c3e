"""Outputs that look finished but are not: ``seedvr upscale`` must fail them, in the exit code and the JSON events.

NaN checkpoints, cut-off containers, gaps in image sequences and full disks, end to end on the CPU
with tiny synthesized checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from media_factory import make_video



def _run(capsys, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", *args)


def _models(dit: Path, vae: Path) -> list[str]:
    return ["--model", str(dit), "--vae", str(vae), "--device", "cpu", "--resolution", "32", "--batch-size", "5"]


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _finished(out: str) -> dict[str, dict]:
    return {Path(e["input"]).name: e for e in _events(out) if e["event"] == "job_finished"}


# ---------------------------------------------------------------- NaN weights


def _nan_copy(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` with every floating-point weight replaced by NaN (as a damaged download might be)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(checkpoint), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            tensors[name] = tensor.clone().fill_(float("nan"))
    save_file(tensors, str(out), metadata=metadata)
    return out


def test_nan_checkpoint_fails_the_file_naming_the_checkpoint(tmp_path, capsys, checkpoints):
    dit, vae = checkpoints
    bad_dit = _nan_copy(dit, dit.parent / "nan3b.safetensors")
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=32, height=32)
    output = tmp_path / "clip_up.mp4"
    code, out, err = _run(capsys, str(clip), "-o", str(output), *_models(bad_dit, vae), "--log-format", "json",
                          "--max-retries", "0")
    assert code == 1, err
    finished = _finished(out)["clip.mp4"]
    assert finished["status"] == "failed"
    assert "DiT produced NaN or infinite values" in finished["message"]
    assert str(bad_dit) in finished["message"]
    assert "CheckpointError" not in finished["message"]  # the worker's one line, not a traceback's
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no work folder left either


# ---------------------------------------------------------------- cut-off containers


def _cut_mkv(path: Path, frames: int = 30) -> Path:
    """A Matroska clip whose header announces ``frames`` frames, cut off after about 60 % of its bytes."""
    make_video(path, frames=frames, width=32, height=32)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def test_cut_off_input_fails_its_file_unless_allowed(tmp_path, capsys, checkpoints):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "good.mp4", frames=5, width=32, height=32)
    _cut_mkv(folder / "cut.mkv")
    code, out, err = _run(capsys, str(folder), "-o", str(tmp_path / "out"), *_models(*checkpoints),
                          "--log-format", "json")
    assert code == 3, err  # some files of the folder failed
    finished = _finished(out)
    assert finished["good.mp4"]["status"] == "done"
    assert finished["cut.mkv"]["status"] == "failed"
    assert "announces 30 frames but only" in finished["cut.mkv"]["message"]
    assert "--allow-short-input" in finished["cut.mkv"]["message"]
    assert not (tmp_path / "out" / "cut_upscaled.mkv").exists()

    code, out, err = _run(capsys, str(folder / "cut.mkv"), "-o", str(tmp_path / "short.mkv"),
                          *_models(*checkpoints), "--log-format", "json", "--allow-short-input")
    assert code == 0, err
    finished = _finished(out)["cut.mkv"]
    assert finished["status"] == "done" and 0 < finished["frames"] < 30
    assert any("announces 30 frames" in note for note in finished["notes"])
    assert any(e["event"] == "message" and e["text"].startswith("warning:") for e in _events(out))


def test_cut_off_single_input_exits_1(tmp_path, capsys, checkpoints):
    clip = _cut_mkv(tmp_path / "cut.mkv")
    code, _, err = _run(capsys, str(clip), *_models(*checkpoints), "--dry-run")
    assert code == 1
    assert "announces 30 frames" in err and "--allow-short-input" in err
    code, _, err = _run(capsys, str(clip), *_models(*checkpoints), "--dry-run", "--allow-short-input")
    assert code == 0, err


# ---------------------------------------------------------------- full disks


def test_full_disk_is_announced_then_named_and_the_work_folder_freed(tmp_path, capsys, checkpoints, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    import av

    from seedvr_cli.media.writer import VideoWriter
    from seedvr_cli.run.space import mount_point

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))

    def full_disk(self, packets):
        av.error.err_check(-errno.ENOSPC, str(self._temp))

    monkeypatch.setattr(VideoWriter, "_mux", full_disk)
    clip = make_video(tmp_path / "clip.mp4", frames=9, width=32, height=32)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, str(clip), "-o", str(out / "clip_up.mp4"), *_models(*checkpoints),
                             "--log-format", "json")
    assert code == 1, err
    events = _events(stdout)
    warnings = [e["text"] for e in events if e["event"] == "message" and e["text"].startswith("warning:")]
    started = next(i for i, e in enumerate(events) if e["event"] == "progress")
    assert warnings and events.index(next(e for e in events if e.get("text") == warnings[0])) < started
    assert "4.9 KiB free" in warnings[0] and "0.0 GiB" not in warnings[0]
    failed = _finished(stdout)["clip.mp4"]
    assert failed["status"] == "failed"
    message = failed["message"]
    assert f"the disk {mount_point(out)} holding {out} is full" in message
    assert "needs about" in message and "--codec" not in message and "re-run" not in message
    assert list(out.iterdir()) == []  # no work folder keeps the disk full, no partial output


# ---------------------------------------------------------------- gaps in image sequences


def test_sequence_gap_is_named_and_output_frames_keep_their_numbers(tmp_path, capsys, checkpoints):
    from media_factory import make_image

    frames = tmp_path / "frames"
    frames.mkdir()
    for number in (1, 2, 3, 5, 6, 9):
        make_image(frames / f"{number:04d}.png", width=32, height=32)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, str(frames / "%04d.png"), "-o", str(out / "%04d.png"), *_models(*checkpoints),
                             "--log-format", "json")
    assert code == 0, err
    finished = _finished(stdout)["%04d.png"]
    assert finished["frames"] == 6
    assert any("3 frame number(s) missing from the sequence (4, 7-8)" in note for note in finished["notes"])
    assert any(e["event"] == "message" and "missing from the sequence" in e["text"] for e in _events(stdout))
    assert sorted(p.name for p in out.iterdir()) == ["0001.png", "0002.png", "0003.png", "0005.png", "0006.png",
                                                      "0009.png"]
