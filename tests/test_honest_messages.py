"""Refusals say what is really wrong: a checkpoint holding pickled code (never "corrupt, download it
again", never PyTorch's advice to load it with ``weights_only=False``), an input that is a pipe or
a device (not "no such file"), and an MP4 cut off before its index (not "no video stream")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from media_factory import make_video

from seedvr_cli.cli import main
from seedvr_cli.errors import CheckpointError, MediaError
from seedvr_cli.media.probe import probe
from seedvr_cli.weights.readers import open_checkpoint
from seedvr_cli.weights.text_embedding import load_text_embedding


class _Payload:
    """Unpickling this would create ``marker``: proof of whether the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _upscale(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", *args])
    return exit_info.value.code, capsys.readouterr().err


def _assert_code_refused(message: str, path: Path, marker: Path) -> None:
    assert f"{path}: holds Python code (posix.mkdir) besides tensors; it was not loaded" in message
    for misleading in ("weights_only", "trust", "corrupt", "truncated", "download it again"):
        assert misleading not in message
    assert not marker.exists()


def test_a_checkpoint_with_pickled_code_is_called_that(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "dit.pth"
    torch.save({"vid_in.proj.weight": torch.zeros(4, 4), "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as error:
        open_checkpoint(path)
    _assert_code_refused(str(error.value), path, marker)


def test_a_text_embedding_with_pickled_code_is_called_that(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "pos_emb.pt"
    torch.save(_Payload(marker), path)
    with pytest.raises(CheckpointError) as error:
        load_text_embedding(path)
    _assert_code_refused(str(error.value), path, marker)


def test_cli_names_the_pickled_code_in_one_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    model = tmp_path / "dit.pth"
    torch.save({"weights": _Payload(marker)}, model)
    # The file stands in for all three model files: only the DiT is read before the refusal.
    code, err = _upscale(capsys, str(clip), "--model", str(model), "--vae", str(model), "--text-embedding",
                         str(model), "--device", "cpu", "--no-download")
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    _assert_code_refused(" ".join(err.split()), model, marker)


def test_a_truly_damaged_pth_is_still_called_corrupt(tmp_path):
    path = tmp_path / "dit.pth"
    torch.save({"vid_in.proj.weight": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        open_checkpoint(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="stream.mp4: not a regular file"):
        probe(fifo)  # would wait for a writer forever if opened
    code, err = _upscale(capsys, str(fifo), "--dry-run")
    assert code == 1 and "stream.mp4: not a regular file" in " ".join(err.split()), err
    assert "no such file" not in err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_not_a_regular_file(capsys):
    with pytest.raises(MediaError, match="/dev/zero: not a regular file"):
        probe("/dev/zero")
    code, err = _upscale(capsys, "/dev/zero", "--dry-run")
    assert code == 1 and "/dev/zero: not a regular file" in " ".join(err.split()), err


@pytest.mark.parametrize("keep", [10, 300, 500])  # bytes of the index (moov box) left
def test_an_mp4_cut_off_in_its_index_is_called_cut_off(tmp_path, keep):
    """Cut at these points the same file read as "no video stream", "no decoder" and "cannot be
    decoded"; the moov box sits at the end of the file as PyAV writes it."""
    whole = make_video(tmp_path / "whole.mp4", frames=12, width=64, height=48).read_bytes()
    index = whole.rindex(b"moov") - 4
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[:index + keep])
    with pytest.raises(MediaError) as error:
        probe(cut)
    message = str(error.value)
    assert message.startswith(f"{cut}: the file is cut off (its moov box lacks {len(whole) - index - keep} bytes)")
    assert "no video stream" not in message


def test_a_whole_mp4_and_a_non_mp4_are_unaffected(tmp_path):
    assert probe(make_video(tmp_path / "whole.mp4", frames=12, width=64, height=48)).frame_count == 12
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 300)  # no box structure: the old message stays
    with pytest.raises(MediaError, match="cannot be read as a video or image"):
        probe(junk)
