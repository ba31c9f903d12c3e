"""Render-farm parts: ``seedvr upscale --shard I/N`` on each part, then ``seedvr assemble``.

The joined output must equal a single uninterrupted run, frame for frame (FFV1 is lossless), and
keep the audio; the parts' work directory is removed after a successful join.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import pytest
from media_factory import make_video

from seedvr_cli.cli import main


def _cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def _frames_digest(path: Path) -> tuple[int, str, int]:
    digest, count = hashlib.sha256(), 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest.update(frame.to_ndarray(format="rgb24").tobytes())
            count += 1
    with av.open(str(path)) as container:
        audio = sum(1 for p in container.demux(audio=0) if p.size) if container.streams.audio else 0
    return count, digest.hexdigest(), audio


def test_shards_then_assemble_equal_one_run(tmp_path):
    from seedvr_cli.weights.synthesize import write_checkpoint

    dit = write_checkpoint("tiny-3b", "fp16", tmp_path / "tiny3b.safetensors", seed=1)
    vae = write_checkpoint("tiny-vae", "fp16", tmp_path / "tinyvae.safetensors", seed=1)
    clip = make_video(tmp_path / "clip.mp4", frames=11, width=64, height=48, audio="aac")
    common = ["--model", str(dit), "--vae", str(vae), "--device", "cpu", "--resolution", "48",
              "--batch-size", "5", "--temporal-overlap", "1", "--prepend-frames", "2", "--codec", "ffv1"]

    assert _cli("upscale", str(clip), "-o", str(tmp_path / "full.mkv"), *common) == 0
    part = tmp_path / "part.mkv"
    assert _cli("upscale", str(clip), "-o", str(part), *common, "--shard", "0/2") == 0
    assert not part.exists()  # a shard leaves a part, not an output
    assert _cli("upscale", str(clip), "-o", str(part), *common, "--shard", "1/2") == 0
    workdirs = sorted(tmp_path.glob(".part.mkv.seedvr-*"))
    assert len(workdirs) == 1

    assert _cli("assemble", str(workdirs[0])) == 0
    full, joined = _frames_digest(tmp_path / "full.mkv"), _frames_digest(part)
    assert joined == full
    assert full[0] == 11 and full[2] > 0  # frames in = frames out (prepended ones removed), audio copied
    assert not workdirs[0].exists()


def test_assemble_refuses_missing_parts(tmp_path, capsys):
    from seedvr_cli.weights.synthesize import write_checkpoint

    dit = write_checkpoint("tiny-3b", "fp16", tmp_path / "tiny3b.safetensors", seed=1)
    vae = write_checkpoint("tiny-vae", "fp16", tmp_path / "tinyvae.safetensors", seed=1)
    clip = make_video(tmp_path / "clip.mp4", frames=9, width=64, height=48)
    part = tmp_path / "part.mp4"
    assert _cli("upscale", str(clip), "-o", str(part), "--model", str(dit), "--vae", str(vae), "--device", "cpu",
                "--resolution", "48", "--batch-size", "5", "--shard", "0/2") == 0
    workdir = next(tmp_path.glob(".part.mp4.seedvr-*"))
    capsys.readouterr()
    assert _cli("assemble", str(workdir)) == 2
    err = capsys.readouterr().err
    assert "not finished" in err and "Traceback" not in err
    assert not part.exists() and workdir.exists()  # nothing written, the finished part kept
    assert not list(tmp_path.glob(".part.mp4.partial*"))  # no temporary output left behind
