"""seedvr probe through the real entry point: tables, --json, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from media_factory import make_video

from seedvr_cli.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_table_for_each_shared_file(capsys):
    eyes = shared_path("media", "Eyes_212x120.mp4")
    sadhu = shared_path("media", "Sadhu_320x478.png")
    code, out, _ = _run(capsys, str(eyes), str(sadhu))
    assert code == 0
    assert "212x120" in out and "45" in out and "25/1" in out and "bt709" in out
    assert "320x478" in out and "rgba, 8-bit, alpha" in out


def test_json_is_machine_readable(capsys):
    mustache = shared_path("media", "Mustache_640x360.mp4")
    code, out, _ = _run(capsys, "--json", str(mustache))
    assert code == 0
    [entry] = json.loads(out)
    assert (entry["width"], entry["height"], entry["frame_count"], entry["fps"]) == (640, 360, 45, "25/1")


def test_audio_rotation_and_vfr_are_shown(tmp_path, capsys):
    clip = make_video(tmp_path / "v.mp4", frames=5, pts_ms=[0, 40, 100, 120, 300], audio="aac", rotation=90)
    code, out, _ = _run(capsys, str(clip))
    assert code == 0
    assert "variable rate" in out and "90 degrees" in out and "aac, 2 ch" in out


def test_unreadable_file_exits_1_with_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00" * 100)
    good = make_video(tmp_path / "ok.mp4", frames=2)
    code, out, err = _run(capsys, str(good), str(junk))
    assert code == 1
    assert "ok.mp4" in out  # the readable file is still reported
    assert "junk.mkv" in err and "Traceback" not in err
    code, out, err = _run(capsys, "--json", str(junk))
    assert code == 1 and "error" in json.loads(out)[0]


def test_usage_errors_exit_2(capsys):
    code, _, err = _run(capsys)
    assert code == 2 and "FILE" in err


def test_help_explains_every_option(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for flag, words in (("--json", "JSON"), ("--sequence", "image sequence"), ("--fps", "Frame rate")):
        assert flag in out and words in out


def test_image_sequence_with_fps(tmp_path, capsys):
    from media_factory import make_image

    for number in range(1, 4):
        make_image(tmp_path / f"{number:04d}.png")
    code, out, _ = _run(capsys, "--json", "--sequence", "--fps", "12", str(tmp_path))
    assert code == 0
    [entry] = json.loads(out)
    assert (entry["kind"], entry["frame_count"], entry["fps"], entry["duration"]) == ("sequence", 3, "12/1", 0.25)


def test_cut_off_video_is_shown_short(tmp_path, capsys):
    clip = make_video(tmp_path / "cut.mkv", frames=30)
    clip.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    code, out, _ = _run(capsys, str(clip))
    assert code == 0 and "but the container announces 30: the file looks cut off" in out
    code, out, _ = _run(capsys, "--json", str(clip))
    [entry] = json.loads(out)
    assert code == 0 and entry["promised_frames"] == 30
