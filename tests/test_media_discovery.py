"""Input discovery and output naming for seedvr upscale (names only; no media is decoded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seedvr_cli.errors import UsageError, UserError
from seedvr_cli.media.discovery import Job, discover_jobs
from seedvr_cli.media.outputs import compare_output, preview_output
from seedvr_cli.media.settings import OutputSettings


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_single_file_defaults_beside_input(tmp_path):
    clip = _touch(tmp_path / "clip.mp4")
    assert discover_jobs([clip]) == [Job(str(clip), str(tmp_path / "clip_upscaled.mp4"), "video")]
    photo = _touch(tmp_path / "photo.jpg")
    assert discover_jobs([photo], settings=OutputSettings(suffix="_4x"))[0].output == str(tmp_path / "photo_4x.jpg")


def test_output_file_and_folder(tmp_path):
    clip = _touch(tmp_path / "clip.mov")
    assert discover_jobs([clip], tmp_path / "out" / "final.mkv")[0].output == str(tmp_path / "out" / "final.mkv")
    assert discover_jobs([clip], tmp_path / "out")[0].output == str(tmp_path / "out" / "clip_upscaled.mov")
    other = _touch(tmp_path / "other.mp4")
    with pytest.raises(UsageError, match="names one output"):
        discover_jobs([clip, other], tmp_path / "final.mp4")


def test_folder_is_recursive_and_mirrored(tmp_path):
    src = tmp_path / "src"
    for name in ("b/clip10.mp4", "b/clip2.mp4", "a.png", "notes.txt", ".hidden.mp4", "b/.c.partial-1234.mp4"):
        _touch(src / name)
    jobs = discover_jobs([src], tmp_path / "dst")
    assert [(Path(j.input).relative_to(src).as_posix(), Path(j.output).relative_to(tmp_path / "dst").as_posix(), j.kind) for j in jobs] == [
        ("a.png", "a_upscaled.png", "image"),
        ("b/clip2.mp4", "b/clip2_upscaled.mp4", "video"),  # natural order: 2 before 10
        ("b/clip10.mp4", "b/clip10_upscaled.mp4", "video"),
    ]


def test_folder_skips_earlier_results_and_the_output_folder(tmp_path):
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "a_upscaled.mp4")  # made by an earlier run
    _touch(tmp_path / "out" / "z.mp4")
    jobs = discover_jobs([tmp_path], tmp_path / "out", OutputSettings(overwrite=True))
    assert [Path(j.input).name for j in jobs] == ["a.mp4"]


def test_glob_and_sequences(tmp_path):
    for name in ("x1.mp4", "x2.mkv", "y.txt"):
        _touch(tmp_path / name)
    jobs = discover_jobs([str(tmp_path / "x*")])
    assert [Path(j.output).name for j in jobs] == ["x1_upscaled.mp4", "x2_upscaled.mkv"]
    with pytest.raises(UserError, match="matches no"):
        discover_jobs([str(tmp_path / "*.avi")])
    frames = tmp_path / "frames"
    _touch(frames / "000001.png")
    pattern = str(frames / "%06d.png")
    assert discover_jobs([pattern]) == [Job(pattern, str(tmp_path / "frames_upscaled" / "%06d.png"), "sequence")]
    assert discover_jobs([frames], sequence=True)[0] == Job(str(frames), str(tmp_path / "frames_upscaled"), "sequence")
    as_video = discover_jobs([pattern], settings=OutputSettings(codec="prores"))[0]
    assert as_video.output == str(tmp_path / "frames_upscaled.mov")


def test_codec_choice_moves_the_container(tmp_path):
    clip = _touch(tmp_path / "clip.mp4")
    assert discover_jobs([clip], settings=OutputSettings(codec="prores"))[0].output.endswith("clip_upscaled.mov")
    assert discover_jobs([clip], settings=OutputSettings(codec="ffv1"))[0].output.endswith("clip_upscaled.mkv")
    assert discover_jobs([clip], settings=OutputSettings(codec="png"))[0].output == str(tmp_path / "clip_upscaled" / "%06d.png")
    old = _touch(tmp_path / "old.avi")
    assert discover_jobs([old])[0].output.endswith("old_upscaled.mkv")


def test_existing_outputs_refused_skipped_or_overwritten(tmp_path):
    clip = _touch(tmp_path / "clip.mp4")
    _touch(tmp_path / "clip_upscaled.mp4")
    with pytest.raises(UserError, match=r"clip_upscaled\.mp4: already exists.*--overwrite.*--skip-existing"):
        discover_jobs([clip])
    assert discover_jobs([clip], settings=OutputSettings(skip_existing=True))[0].skip is True
    assert discover_jobs([clip], settings=OutputSettings(overwrite=True))[0].skip is False


def test_output_never_replaces_an_input(tmp_path):
    clip = _touch(tmp_path / "clip.mp4")
    with pytest.raises(UsageError, match="replace the input"):
        discover_jobs([clip], settings=OutputSettings(suffix="", overwrite=True))
    with pytest.raises(UsageError, match="replace the input"):
        discover_jobs([clip], clip, OutputSettings(overwrite=True))
    a, b = _touch(tmp_path / "v" / "a.avi"), _touch(tmp_path / "v" / "a.mkv")
    with pytest.raises(UsageError, match="both be written"):
        discover_jobs([a, b])
    # A sequence written into the folder it is read from could overwrite its own input frames.
    for number in range(3):
        _touch(tmp_path / "seq" / f"{number:04d}.png")
    pattern = str(tmp_path / "seq" / "%04d.png")
    with pytest.raises(UsageError, match="replace the input"):
        discover_jobs([pattern], pattern, OutputSettings(overwrite=True))
    with pytest.raises(UsageError, match="replace the input"):
        discover_jobs([tmp_path / "seq"], tmp_path / "seq" / "up_%04d.png", OutputSettings(overwrite=True), sequence=True)
    assert discover_jobs([pattern], tmp_path / "out" / "%04d.png")[0].output == str(tmp_path / "out" / "%04d.png")


def test_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        discover_jobs([tmp_path / "nope.mp4"])
    with pytest.raises(UserError, match="not a video or image"):
        discover_jobs([_touch(tmp_path / "doc.pdf")])
    with pytest.raises(UsageError):
        discover_jobs([])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no video or image found"):
        discover_jobs([empty])


def test_sequence_numbers_and_their_gaps():
    from seedvr_cli.media.images import missing_numbers, sequence_numbers

    assert sequence_numbers(["shot_0009.png", "shot_0010.png", "shot_0012.png"]) == [9, 10, 12]
    assert missing_numbers([9, 10, 12, 15]) == [11, 13, 14]
    assert sequence_numbers(["frame2x_10.png", "frame2x_11.png"]) == [10, 11]
    assert sequence_numbers(["a_1.png", "b_2.png"]) is None  # not one template: no numbering to keep
    assert sequence_numbers(["cover.png", "0001.png"]) is None


def test_side_output_names_sit_beside_the_output():
    assert compare_output("out/clip_up.mp4") == str(Path("out/clip_up_compare.mp4"))
    assert compare_output("out/frames_up/%06d.png") == str(Path("out/frames_up_compare/%06d.png"))
    assert compare_output("out/frames_up") == str(Path("out/frames_up_compare"))
    assert preview_output("out/clip_up.mp4", 120) == Path("out/clip_up_preview_120.png")
    # Beside an image sequence's folder, never among its frames.
    assert preview_output("out/frames_up/%06d.png", 7) == Path("out/frames_up_preview_7.png")
    assert preview_output("out/frames_up", 7) == Path("out/frames_up_preview_7.png")


def test_folder_rerun_skips_compare_and_preview_outputs(tmp_path):
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "a_upscaled.mp4")
    _touch(tmp_path / "a_upscaled_compare.mp4")
    _touch(tmp_path / "a_upscaled_preview_12.png")
    _touch(tmp_path / "b_preview_3.png")  # not ours: no --suffix before the tag
    jobs = discover_jobs([tmp_path], tmp_path / "out", OutputSettings(overwrite=True))
    assert [Path(j.input).name for j in jobs] == ["a.mp4", "b_preview_3.png"]
