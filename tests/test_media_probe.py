"""probe(): facts of the shared media, of generated clips, images and sequences, and of bad files."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import shared_path
from media_factory import make_image, make_video

from seedvr_cli.errors import MediaError
from seedvr_cli.media.probe import probe


def _decoded_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_shared_eyes_clip():
    path = shared_path("media", "Eyes_212x120.mp4")
    info = probe(path)
    assert (info.kind, info.codec, info.width, info.height) == ("video", "h264", 212, 120)
    assert info.frame_count == 45 == _decoded_count(path)
    assert info.fps == Fraction(25) and info.vfr is False
    assert info.duration == pytest.approx(1.8)
    assert (info.pix_fmt, info.bit_depth, info.has_alpha) == ("yuv420p", 8, False)
    assert info.color.names() == {"primaries": "bt709", "transfer": "bt709", "matrix": "bt709", "range": "tv"}
    assert info.audio == () and info.subtitles == () and info.rotation == 0


def test_shared_mustache_clip():
    path = shared_path("media", "Mustache_640x360.mp4")
    info = probe(path)
    assert (info.width, info.height, info.frame_count, info.fps) == (640, 360, 45, Fraction(25))
    assert info.frame_count == _decoded_count(path)
    assert info.display_aspect_ratio == Fraction(16, 9)
    assert info.color.names()["matrix"] == "unknown"


def test_shared_sadhu_image():
    info = probe(shared_path("media", "Sadhu_320x478.png"))
    assert (info.kind, info.codec, info.width, info.height) == ("image", "png", 320, 478)
    assert (info.pix_fmt, info.bit_depth, info.has_alpha, info.frame_count) == ("rgba", 8, True, 1)


def test_vfr_clip_with_audio_and_rotation(tmp_path):
    pts_ms = [0, 40, 80, 200, 240, 400, 410, 420, 500, 600]
    path = make_video(tmp_path / "vfr.mp4", frames=10, pts_ms=pts_ms, audio="aac", rotation=90)
    info = probe(path)
    assert info.frame_count == 10 and info.vfr is True
    # The last frame starts at 0.6 s; containers differ on how long it lasts (B-frame delay, last step).
    assert 0.5 <= info.duration <= 0.7
    assert info.rotation == 90
    assert len(info.audio) == 1
    audio = info.audio[0]
    assert (audio.codec, audio.channels, audio.sample_rate) == ("aac", 2, 48000)


def test_ten_bit_h265_in_mkv_counts_packets(tmp_path):
    path = make_video(tmp_path / "ten.mkv", frames=9, codec="libx265", pix_fmt="yuv420p10le", width=66, height=64, subtitles=True)
    info = probe(path)
    assert (info.codec, info.pix_fmt, info.bit_depth) == ("hevc", "yuv420p10le", 10)
    assert (info.frame_count, info.frame_count_source) == (9, "packets")
    assert info.frame_count == _decoded_count(path)
    assert len(info.subtitles) == 1 and info.subtitles[0].codec in ("subrip", "srt")


def test_prores_4444_alpha(tmp_path):
    path = make_video(tmp_path / "alpha.mov", frames=4, codec="prores_ks", pix_fmt="yuva444p10le",
                      options={"profile": "4", "alpha_bits": "16"})
    info = probe(path)
    assert info.codec == "prores" and info.has_alpha and info.bit_depth >= 10


def test_edit_list_header_count_is_not_trusted(tmp_path):
    # Frames before time zero are cut by an edit list: the header still says 10, decoding gives 8.
    path = make_video(tmp_path / "cut.mp4", frames=10, pts_ms=[-80, -40, 0, 40, 80, 120, 160, 200, 240, 280])
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 10
    info = probe(path)
    assert (info.frame_count, info.frame_count_source) == (8, "index")
    assert _decoded_count(path) == 8


def test_raw_stream_without_timestamps_is_decode_counted(tmp_path):
    path = make_video(tmp_path / "raw.h264", frames=9)
    info = probe(path)
    assert (info.frame_count, info.frame_count_source) == (9, "decoded")


def test_odd_size(tmp_path):
    info = probe(make_video(tmp_path / "odd.mp4", frames=3, width=33, height=21, pix_fmt="yuv444p"))
    assert (info.width, info.height) == (33, 21)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("rgb8.png", {}, ("rgb24", 8, False)),
        ("rgba16.png", {"deep": True, "alpha": True}, ("rgba64be", 16, True)),
        ("gray.png", {"gray": True}, ("gray", 8, False)),
        ("gray16.tif", {"gray": True, "deep": True}, ("gray16le", 16, False)),
        ("rgb16.tif", {"deep": True}, ("rgb48le", 16, False)),
        ("photo.jpg", {}, (None, 8, False)),
        ("pic.webp", {}, (None, 8, False)),
        ("pic.bmp", {}, ("bgr24", 8, False)),
    ],
)
def test_images(tmp_path, name, kwargs, expected):
    path = tmp_path / name
    make_image(path, **kwargs)
    info = probe(path)
    pix_fmt, depth, alpha = expected
    assert (info.kind, info.width, info.height, info.frame_count) == ("image", 33, 21, 1)
    if pix_fmt:
        assert info.pix_fmt == pix_fmt
    assert (info.bit_depth, info.has_alpha) == (depth, alpha)


def test_sequence_by_pattern_and_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for number in (1, 2, 10):
        make_image(folder / f"f{number:04d}.png")
    info = probe(str(folder / "f%04d.png"), fps=24)
    assert (info.kind, info.frame_count, info.fps, info.frame_count_source) == ("sequence", 3, Fraction(24), "files")
    assert [p.name for p in info.files] == ["f0001.png", "f0002.png", "f0010.png"]
    info = probe(folder, sequence=True)
    assert info.frame_count == 3 and info.fps == 25


def test_bad_inputs_name_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match="junk.mp4"):
        probe(junk)
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "missing.mkv")
    with pytest.raises(MediaError, match="--sequence"):
        probe(tmp_path)
    with pytest.raises(MediaError, match="no file matches"):
        probe(str(tmp_path / "%05d.png"))


def test_json_ready_dict(tmp_path):
    import json

    data = probe(make_video(tmp_path / "a.mp4", frames=3)).to_dict()
    assert json.loads(json.dumps(data))["fps"] == "25/1"
    assert np.isclose(data["fps_float"], 25.0)


def test_millisecond_rounding_is_not_variable_rate(tmp_path):
    # Matroska stores 29.97 fps as steps of 33 and 34 ms: that is rounding, not VFR.
    info = probe(make_video(tmp_path / "ntsc.mkv", frames=12, fps=Fraction(30000, 1001)))
    assert info.vfr is False and info.fps == Fraction(30000, 1001)


def _cut(path, fraction: float):
    """A copy of ``path`` with only its first ``fraction`` of bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize(("name", "codec"), [("clip.mkv", "libx264"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4")])
def test_cut_off_container_is_short_of_what_it_announces(tmp_path, name, codec):
    """Matroska/WebM announce a duration, AVI a frame count: both promise the 30 frames that were written."""
    whole = probe(make_video(tmp_path / name, frames=30, codec=codec))
    assert (whole.frame_count, whole.promised_frames, whole.short) == (30, 30, False)
    cut = probe(_cut(tmp_path / name, 0.6))
    assert cut.promised_frames == 30 and 0 < cut.frame_count < 30 and cut.short
    assert cut.to_dict()["promised_frames"] == 30


def test_complete_clips_are_not_short(tmp_path):
    """Variable rate, audio longer than the video, 29.97 fps over 100 frames: nothing is missing."""
    clips = [make_video(tmp_path / "vfr.mkv", frames=10, pts_ms=[0, 30, 70, 100, 160, 200, 230, 300, 330, 400]),
             make_video(tmp_path / "audio.mkv", frames=10, audio="aac"),
             make_video(tmp_path / "ntsc.mkv", frames=100, fps=Fraction(30000, 1001)),
             make_video(tmp_path / "clip.mp4", frames=10)]
    for clip in clips:
        info = probe(clip)
        assert not info.short, (clip.name, info.frame_count, info.promised_frames)
