"""Readers: read(a, b) equals the same slice of a full decode; dtypes, values, sequences, pts."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from conftest import shared_path
from media_factory import make_image, make_video

from seedvr_cli.errors import MediaError
from seedvr_cli.media.reader import VideoReader, open_reader


def _reference_decode(path, *, deep: bool = False, alpha: bool = False) -> np.ndarray:
    """Every frame by a plain sequential PyAV decode, converted the same way the reader converts."""
    from seedvr_cli.media.pixels import frame_to_array

    with av.open(str(path)) as container:
        return np.stack([frame_to_array(f, deep=deep, alpha=alpha) for f in container.decode(video=0)])


def _check_random_slices(reader, full: np.ndarray, *, seed: int, count: int = 12) -> None:
    rng = np.random.default_rng(seed)
    n = len(reader)
    pairs = [(0, n), (n - 1, n), (0, 1)] + [tuple(sorted(rng.integers(0, n + 1, size=2))) for _ in range(count)]
    # Backwards, forwards and repeated ranges exercise both seeking and continued decoding.
    for a, b in pairs:
        got = reader.read(int(a), int(b)).numpy()
        assert got.shape[0] == b - a
        np.testing.assert_array_equal(got, full[a:b], err_msg=f"slice [{a}, {b})")


@pytest.mark.parametrize("name", ["Eyes_212x120.mp4", "Mustache_640x360.mp4"])
def test_shared_clips_random_slices(name):
    path = shared_path("media", name)
    full = _reference_decode(path)
    with open_reader(path) as reader:
        assert (len(reader), reader.dtype, reader.channels) == (45, torch.uint8, 3)
        assert reader.read(0, 45).shape == (45, reader.height, reader.width, 3)
        _check_random_slices(reader, full, seed=len(name))


def test_vfr_clip_slices_and_pts(tmp_path):
    pts_ms = [0, 40, 80, 200, 240, 400, 410, 420, 500, 600, 640, 700, 900]
    path = make_video(tmp_path / "vfr.mkv", frames=len(pts_ms), pts_ms=pts_ms, options={"g": "4", "bf": "2"})
    reader = open_reader(path)
    assert [float(p * reader.time_base) for p in reader.pts] == pytest.approx([p / 1000 for p in pts_ms])
    assert reader.index.is_vfr
    _check_random_slices(reader, _reference_decode(path), seed=3, count=20)


def test_ten_bit_reads_full_range_uint16(tmp_path):
    path = make_video(tmp_path / "ten.mp4", frames=8, codec="libx265", pix_fmt="yuv420p10le", width=66, height=64)
    reader = open_reader(path)
    frames = reader.read(0, len(reader))
    assert frames.dtype == torch.uint16 and reader.deep
    values = frames.numpy()
    # Full-range convention: a white block of the test pattern lands near 65535, not near 1023.
    assert values.max() > 60000
    _check_random_slices(reader, _reference_decode(path, deep=True), seed=5)


def test_prores_4444_reads_rgba(tmp_path):
    path = make_video(tmp_path / "alpha.mov", frames=5, codec="prores_ks", pix_fmt="yuva444p10le",
                      options={"profile": "4", "alpha_bits": "16"})
    from media_factory import pattern_frame

    frames = open_reader(path).read(0, 5).numpy()
    assert frames.shape == (5, 48, 64, 4) and frames.dtype == np.uint16
    expected_alpha = pattern_frame(0, 48, 64, deep=True, alpha=True)[..., 3].astype(np.int64)
    # The clip's alpha went through a 10-bit plane (steps of 64) and back out of the 12-bit decoder;
    # ProRes codes alpha losslessly, so quantisation of about one 10-bit step is all there is.
    error = np.abs(frames[0, ..., 3].astype(np.int64) - expected_alpha)
    assert error.max() <= 96 and error.mean() < 40


def test_index_reuse_skips_scan_and_agrees(tmp_path):
    path = make_video(tmp_path / "a.mp4", frames=15)
    first = open_reader(path)
    second = VideoReader(path, index=first.index)
    np.testing.assert_array_equal(first.read(4, 9).numpy(), second.read(4, 9).numpy())


def test_raw_stream_without_pts_reads_in_decode_order(tmp_path):
    path = make_video(tmp_path / "raw.h264", frames=9)
    reader = open_reader(path)
    assert len(reader) == 9
    _check_random_slices(reader, _reference_decode(path), seed=9, count=5)


def test_out_of_range_is_an_error(tmp_path):
    reader = open_reader(make_video(tmp_path / "a.mp4", frames=4))
    with pytest.raises(IndexError):
        reader.read(2, 5)
    assert reader.read(2, 2).shape[0] == 0


def test_single_images(tmp_path):
    rgba16 = make_image(tmp_path / "deep.png", deep=True, alpha=True)
    reader = open_reader(tmp_path / "deep.png")
    got = reader.read(0, 1)
    assert got.dtype == torch.uint16 and got.shape == (1, 21, 33, 4)
    np.testing.assert_array_equal(got[0].numpy(), rgba16)  # 16-bit PNG is lossless
    gray = make_image(tmp_path / "gray.png", gray=True)
    got = open_reader(tmp_path / "gray.png").read(0, 1)[0].numpy()
    assert got.shape == (21, 33, 3)
    np.testing.assert_array_equal(got, gray)


def test_shared_rgba_png():
    reader = open_reader(shared_path("media", "Sadhu_320x478.png"))
    frames = reader.read(0, 1)
    assert frames.shape == (1, 478, 320, 4) and frames.dtype == torch.uint8
    assert int(frames[..., 3].min()) < 255  # there is real transparency to keep


def test_sequence_pattern_and_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    images = {}
    for number in (9, 10, 1, 2):
        from media_factory import pattern_frame
        from seedvr_cli.media.images import encode_image

        images[number] = pattern_frame(number, 20, 30)
        (folder / f"shot_{number}.png").write_bytes(encode_image(images[number], ".png"))
    reader = open_reader(folder, sequence=True, fps=12)
    assert len(reader) == 4 and reader.fps == 12
    order = [1, 2, 9, 10]  # natural order, not 1, 10, 2, 9
    np.testing.assert_array_equal(reader.read(0, 4).numpy(), np.stack([images[n] for n in order]))
    np.testing.assert_array_equal(reader.read(2, 3).numpy()[0], images[9])
    assert list(reader.pts) == [0, 1, 2, 3] and reader.time_base == pytest.approx(1 / 12)
    pattern_reader = open_reader(str(folder / "shot_%d.png"))
    np.testing.assert_array_equal(pattern_reader.read(3, 4).numpy()[0], images[10])


def test_sequence_with_a_different_size_is_refused(tmp_path):
    from seedvr_cli.media.images import encode_image

    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "0001.png").write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8), ".png"))
    (folder / "0002.png").write_bytes(encode_image(np.zeros((8, 10, 3), np.uint8), ".png"))
    reader = open_reader(folder, sequence=True)
    with pytest.raises(MediaError, match="0002.png"):
        reader.read(0, 2)


def test_edit_list_clip_reads_what_a_decoder_shows(tmp_path):
    path = make_video(tmp_path / "cut.mp4", frames=12, pts_ms=[-80, -40] + [40 * n for n in range(10)], options={"g": "4"})
    reader = open_reader(path)
    full = _reference_decode(path)
    assert len(reader) == len(full) == 10
    _check_random_slices(reader, full, seed=11, count=10)
