"""Writers: write -> read keeps frames, timestamps, rate, audio packets, depth, alpha; files appear atomically."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import shared_path
from media_factory import make_image, make_video, pattern_frame

from seedvr_cli.errors import MediaError, UsageError, UserError
from seedvr_cli.media.probe import probe
from seedvr_cli.media.reader import open_reader
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.media.writer import open_writer


def _copy_through(source_path, out_path, settings=None, **kwargs):
    """Read every frame of a source and write it to ``out_path`` (what upscaling at 1x would do)."""
    reader = open_reader(source_path)
    with open_writer(out_path, settings or OutputSettings(), width=reader.width, height=reader.height, source=reader, **kwargs) as writer:
        for _, frames in reader.chunks(4):
            writer.write(frames)
    return reader, writer


def _packets(path, kind):
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        return [(bytes(p), p.pts) for p in container.demux(streams[0]) if p.size]


def _seconds(reader):
    return [p * reader.time_base for p in reader.pts]


def test_vfr_mp4_with_audio_round_trip(tmp_path):
    pts_ms = [0, 40, 80, 200, 240, 400, 410, 420, 500, 600]
    source = make_video(tmp_path / "vfr.mp4", frames=10, pts_ms=pts_ms, audio="aac", rotation=90)
    reader, writer = _copy_through(source, tmp_path / "out.mp4")
    assert writer.notes == []
    back = open_reader(tmp_path / "out.mp4")
    assert len(back) == 10
    assert _seconds(back) == _seconds(reader)  # exact rationals: VFR kept frame by frame
    assert [float(s) for s in _seconds(back)] == pytest.approx([p / 1000 for p in pts_ms])
    assert back.index.end_pts * back.time_base == reader.index.end_pts * reader.time_base
    assert back.rotation == 90 and back.fps == reader.fps
    source_audio, out_audio = _packets(source, "audio"), _packets(tmp_path / "out.mp4", "audio")
    assert len(out_audio) == len(source_audio) > 0
    assert [data for data, _ in out_audio] == [data for data, _ in source_audio]  # stream copy is bit-exact
    assert probe(tmp_path / "out.mp4").duration == pytest.approx(probe(source).duration, abs=1e-3)
    frames = back.read(0, 10).numpy().astype(int)
    assert np.abs(frames - reader.read(0, 10).numpy().astype(int)).mean() < 4  # h264 CRF 16


def test_shared_clip_keeps_rate_count_and_colour(tmp_path):
    source = shared_path("media", "Eyes_212x120.mp4")
    _copy_through(source, tmp_path / "eyes.mkv")
    info = probe(tmp_path / "eyes.mkv")
    assert (info.frame_count, info.fps, info.width, info.height) == (45, Fraction(25), 212, 120)
    assert info.duration == pytest.approx(1.8)
    assert info.color.names() == probe(source).color.names()


def _smooth_deep_frames(height: int, width: int, count: int) -> np.ndarray:
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    image = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                      np.broadcast_to((x + y) / 2, (height, width))], axis=-1)
    return np.stack([np.round((0.1 + 0.8 * image) * 65535).astype(np.uint16)] * count)


def test_ten_bit_h265_keeps_deep_values(tmp_path):
    frames = _smooth_deep_frames(128, 130, 3)
    eight_bit_error = np.abs((frames.astype(np.int64) + 128) // 257 * 257 - frames).mean()
    lossless = OutputSettings(codec="h265", pix_fmt="yuv444p10le", encoder_options={"x265-params": "lossless=1:log-level=error"})
    with open_writer(tmp_path / "ten.mkv", lossless, width=130, height=128, fps=24, deep=True) as writer:
        writer.write(torch.from_numpy(frames))
    back = open_reader(tmp_path / "ten.mkv").read(0, 3).numpy().astype(np.int64)
    error = np.abs(back - frames)
    # Only 10-bit YCbCr rounding is left: less than 8-bit rounding alone would cost, nowhere large.
    assert error.mean() < 0.6 * eight_bit_error and error.max() < 160

    with open_writer(tmp_path / "default.mp4", width=130, height=128, fps=24, deep=True) as writer:
        writer.write(frames)
    info = probe(tmp_path / "default.mp4")
    assert (info.codec, info.pix_fmt, info.bit_depth, info.frame_count) == ("hevc", "yuv420p10le", 10, 3)
    back = open_reader(tmp_path / "default.mp4").read(0, 3).numpy()
    assert back.dtype == np.uint16 and np.abs(back.astype(np.int64) - frames).mean() < 257


@pytest.mark.parametrize(("deep", "alpha"), [(False, False), (False, True), (True, False), (True, True)])
def test_ffv1_is_lossless(tmp_path, deep, alpha):
    frames = np.stack([pattern_frame(n, 21, 33, deep=deep, alpha=alpha) for n in range(3)])
    with open_writer(tmp_path / "x.mkv", OutputSettings(codec="ffv1"), width=33, height=21, deep=deep, alpha=alpha) as w:
        w.write(frames)
    back = open_reader(tmp_path / "x.mkv").read(0, 3).numpy()
    np.testing.assert_array_equal(back, frames)


def test_prores_4444_keeps_alpha(tmp_path):
    frames = np.stack([pattern_frame(n, 48, 64, alpha=True) for n in range(3)])
    with open_writer(tmp_path / "a.mov", OutputSettings(), width=64, height=48, alpha=True) as writer:
        writer.write(frames)
    info = probe(tmp_path / "a.mov")
    assert info.codec == "prores" and info.has_alpha
    back = open_reader(tmp_path / "a.mov").read(0, 3).numpy()
    assert back.shape == (3, 48, 64, 4)
    alpha_8bit = (back[..., 3].astype(np.int64) + 128) // 257
    assert np.abs(alpha_8bit - frames[..., 3]).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".tif", ".dpx"])
def test_sixteen_bit_rgba_image_sequence_is_exact(tmp_path, suffix):
    frames = np.stack([pattern_frame(n, 21, 33, deep=True, alpha=True) for n in range(3)])
    pattern = tmp_path / "out" / f"f_%04d{suffix}"
    with open_writer(str(pattern), width=33, height=21) as writer:
        writer.write(frames)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"f_{n:04d}{suffix}" for n in (1, 2, 3)]
    back = open_reader(str(pattern)).read(0, 3).numpy()
    np.testing.assert_array_equal(back, frames)


def test_sequence_source_keeps_file_names(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a1.png", "a2.png"):
        make_image(folder / name)
    reader = open_reader(folder, sequence=True)
    with open_writer(tmp_path / "done", OutputSettings(codec="png"), width=33, height=21, source=reader) as writer:
        writer.write(reader.read(0, 2))
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["a1.png", "a2.png"]


def test_single_image_round_trip_and_one_frame_only(tmp_path):
    rgba = pattern_frame(3, 21, 33, alpha=True)
    with open_writer(tmp_path / "one.png", width=33, height=21) as writer:
        writer.write(rgba[None])
    np.testing.assert_array_equal(open_reader(tmp_path / "one.png").read(0, 1).numpy()[0], rgba)
    writer = open_writer(tmp_path / "two.png", width=33, height=21)
    with pytest.raises(UsageError, match="one frame"):
        writer.write(np.stack([rgba, rgba]))
    assert not (tmp_path / "two.png").exists()


def test_abort_leaves_nothing(tmp_path):
    frames = np.stack([pattern_frame(n, 48, 64) for n in range(3)])
    writer = open_writer(tmp_path / "a.mp4", width=64, height=48, fps=25)
    writer.write(frames)
    assert not (tmp_path / "a.mp4").exists()
    assert all(p.name.startswith(".a.partial-") for p in tmp_path.iterdir())  # hidden while unfinished
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with open_writer(tmp_path / "b.mkv", width=64, height=48, fps=25) as writer:
            writer.write(frames)
            raise RuntimeError("the pipeline failed")
    assert list(tmp_path.iterdir()) == []
    seq = open_writer(str(tmp_path / "s" / "%03d.png"), width=64, height=48)
    seq.write(frames)
    seq.abort()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "a.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="--overwrite"):
        open_writer(target, width=64, height=48, fps=25)
    assert target.read_bytes() == b"precious"
    with open_writer(target, OutputSettings(overwrite=True), width=64, height=48, fps=25) as writer:
        writer.write(np.stack([pattern_frame(0, 48, 64)]))
    assert probe(target).frame_count == 1


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path):
    source = make_video(tmp_path / "src.mkv", frames=6, audio="pcm_u8", audio_rate=8000, subtitles=True)
    _, writer = _copy_through(source, tmp_path / "out.mp4")
    info = probe(tmp_path / "out.mp4")
    assert [a.codec for a in info.audio] == ["aac"] and info.subtitles == ()
    assert any("re-encoded to aac" in note for note in writer.notes)
    assert any("subtitle" in note and "dropped" in note for note in writer.notes)


def _first_times(path) -> dict[str, float]:
    """Seconds of the first packet of each stream type (AAC's first packet is its priming, before 0)."""
    firsts: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is not None and packet.stream.type not in firsts:
                firsts[packet.stream.type] = float(packet.pts * packet.time_base)
    return firsts


@pytest.mark.parametrize("codec, rate", [("pcm_u8", 8000), ("pcm_s16le", 48000)])
def test_reencoded_audio_stays_in_sync_with_video_that_starts_late(tmp_path, codec, rate):
    # Timestamps starting at 1 s (as in cut or broadcast files): the re-encoded audio must start
    # there too, not at 0 while the video keeps its 1 s.
    source = make_video(tmp_path / "src.mkv", frames=10, pts_ms=[1000 + 40 * i for i in range(10)],
                        audio=codec, audio_rate=rate, audio_start_s=1.0)
    _, writer = _copy_through(source, tmp_path / "out.mp4")
    assert any(f"({codec}) re-encoded to aac" in note for note in writer.notes)
    before, after = _first_times(source), _first_times(tmp_path / "out.mp4")
    assert after["video"] == pytest.approx(before["video"]) == pytest.approx(1.0)
    priming = 1024 / rate  # the AAC encoder's delay, undone by the player through the MP4 edit list
    assert after["audio"] == pytest.approx(before["audio"] - priming, abs=1e-3)


def test_pcm_is_copied_into_mov_and_mkv_and_reencoded_for_mp4(tmp_path):
    # FFmpeg's MP4 muxer refuses PCM without a channel layout (as Matroska stores it) at the very end.
    source = make_video(tmp_path / "src.mkv", frames=6, audio="pcm_s16le", audio_rate=48000)
    samples = b"".join(data for data, _ in _packets(source, "audio"))
    for name in ("out.mov", "out.mkv"):
        _, writer = _copy_through(source, tmp_path / name)
        # The same samples (MOV packs PCM into packets of its own size).
        assert b"".join(data for data, _ in _packets(tmp_path / name, "audio")) == samples
        assert writer.notes == []
    _, writer = _copy_through(source, tmp_path / "out.mp4")
    assert [a.codec for a in probe(tmp_path / "out.mp4").audio] == ["aac"]
    assert any(".mov or .mkv" in note for note in writer.notes)


def test_subtitles_copied_into_mkv_and_audio_can_be_dropped(tmp_path):
    source = make_video(tmp_path / "src.mkv", frames=6, audio="aac", subtitles=True)
    _copy_through(source, tmp_path / "subs.mkv")
    assert _packets(tmp_path / "subs.mkv", "subtitle") == _packets(source, "subtitle")
    _copy_through(source, tmp_path / "mute.mkv", OutputSettings(keep_audio=False))
    info = probe(tmp_path / "mute.mkv")
    assert info.audio == () and len(info.subtitles) == 1


def test_impossible_outputs_are_refused_with_the_fix(tmp_path):
    with pytest.raises(UsageError, match=r"\.mov"):
        open_writer(tmp_path / "a.mp4", OutputSettings(codec="prores"), width=64, height=48, fps=25)
    with pytest.raises(MediaError, match="even"):
        open_writer(tmp_path / "a.mp4", width=65, height=48, fps=25)
    with pytest.raises(MediaError, match="h264"):
        open_writer(tmp_path / "a.mkv", OutputSettings(codec="h265"), width=32, height=32, fps=25)
    with pytest.raises(UsageError, match="unknown video type"):
        open_writer(tmp_path / "a.xyz", width=64, height=48, fps=25)
    assert list(tmp_path.iterdir()) == []


def test_settings_defaults_and_validation(tmp_path):
    plain = OutputSettings().encoding_for(tmp_path / "a.mp4", deep=False, alpha=False)
    assert (plain.encoder, plain.pix_fmt, plain.options["crf"], plain.options["preset"]) == ("libx264", "yuv420p", "16", "medium")
    deep = OutputSettings().encoding_for(tmp_path / "a.mp4", deep=True, alpha=False)
    assert (deep.encoder, deep.pix_fmt) == ("libx265", "yuv420p10le")
    tuned = OutputSettings(codec="x265", crf=22, preset="slow", encoder_options=OutputSettings.parse_encoder_options(["tune=grain"]))
    enc = tuned.encoding_for(tmp_path / "a.mkv", deep=False, alpha=False)
    assert (enc.encoder, enc.options["crf"], enc.options["preset"], enc.options["tune"]) == ("libx265", "22", "slow", "grain")
    assert OutputSettings().encoding_for(tmp_path / "a.mov", deep=False, alpha=True).codec == "prores4444"
    with pytest.raises(UsageError, match="--overwrite and --skip-existing"):
        OutputSettings(overwrite=True, skip_existing=True)
    with pytest.raises(UsageError, match="--crf"):
        OutputSettings(crf=99)
    with pytest.raises(UsageError, match="unknown codec"):
        OutputSettings(codec="divx")
    with pytest.raises(UsageError, match="KEY=VALUE"):
        OutputSettings.parse_encoder_options(["oops"])
    with pytest.raises(UsageError, match="--crf applies"):
        OutputSettings(codec="ffv1", crf=10).encoding_for(tmp_path / "a.mkv", deep=False, alpha=False)
    with pytest.raises(UsageError, match="--pix-fmt"):
        OutputSettings(codec="h264", pix_fmt="rgb48le").encoding_for(tmp_path / "a.mp4", deep=False, alpha=False)


def test_audio_is_interleaved_while_writing_mkv(tmp_path):
    # Regression: with FFV1 in Matroska the audio was only muxed at close, so the muxer kept every
    # video packet in memory (main-process RSS grew with the length of the video).
    source = make_video(tmp_path / "src.mp4", frames=48, width=64, height=48, audio="aac")
    with open_reader(source) as reader:
        writer = open_writer(tmp_path / "out.mkv", OutputSettings(codec="ffv1"), width=64, height=48, source=reader)
        frames = reader.read(0, 48)
        for start in range(0, 48, 8):
            writer.write(frames[start:start + 8])
        pending = writer._passthrough._pending  # the first source audio packet not muxed yet
        writer.close()
    # 48 frames at 25 fps end at 1.92 s: the audio must already be muxed about that far (the bug
    # left it at the start, so the muxer had to hold all the video).
    assert pending is None or float(pending.pts * pending.time_base) > 1.5
    assert len(_packets(tmp_path / "out.mkv", "audio")) == len(_packets(source, "audio"))


def test_partial_files_of_dead_runs_are_removed(tmp_path):
    # A run killed mid-write leaves its hidden partial output; the next writer of that output
    # (the resumed run) removes it, but never one whose writing process is still alive.
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".out.partial-{int(dead.stdout)}-0123abcd.mkv"
    orphan.write_bytes(b"left by a killed run")
    alive = tmp_path / f".out.partial-{os.getppid()}-89abcdef.mkv"
    alive.write_bytes(b"another live run")
    writer = open_writer(tmp_path / "out.mkv", OutputSettings(codec="ffv1"), width=64, height=48)
    writer.abort()
    assert not orphan.exists()
    assert alive.exists()


def test_overwriting_a_sequence_leaves_no_frames_of_a_longer_earlier_run(tmp_path):
    folder = tmp_path / "frames"
    frames = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    with open_writer(folder / "%04d.png", OutputSettings(), width=8, height=8) as writer:
        writer.write(frames)
    (folder / "notes.txt").write_text("the user's own file")
    with open_writer(folder / "%04d.png", OutputSettings(overwrite=True), width=8, height=8) as writer:
        writer.write(frames[:3])
    assert sorted(p.name for p in folder.iterdir()) == ["0001.png", "0002.png", "0003.png", "notes.txt"]
