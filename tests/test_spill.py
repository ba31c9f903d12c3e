"""Spill files: head partials, final body, tail partials, back to back; what a processor may return."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seedvr_cli.parallel.fakes import fake_chunks
from seedvr_cli.parallel.spill import ChunkFrames, SpillReader, as_frames, read_spill_header, write_spill


def _chunk(head: int, body: int, tail: int, dtype=np.uint16) -> ChunkFrames:
    rng = np.random.default_rng(head * 100 + body * 10 + tail)
    return ChunkFrames(
        rng.random((head, 3, 2, 3), dtype=np.float32),
        rng.integers(0, np.iinfo(dtype).max + 1, size=(body, 3, 2, 3)).astype(dtype),
        rng.random((tail, 3, 2, 3), dtype=np.float32),
    )


def test_round_trip_reads_partials_and_final_frames_by_chunk_index(tmp_path):
    chunk = _chunk(2, 3, 1)
    path = tmp_path / "c.npy"
    write_spill(path, chunk)
    reader = SpillReader(path)
    assert reader.shape == (6, 3, 2, 3) and reader.frames == 6 and reader.dtype == np.uint16
    assert (reader.head, reader.tail) == (2, 1)
    assert reader.frame_bytes == 3 * 2 * 3 * 2 and reader.partial_frame_bytes == 3 * 2 * 3 * 4
    np.testing.assert_array_equal(reader.read_body(2, 5), chunk.body)
    np.testing.assert_array_equal(reader.read_body(3, 4), chunk.body[1:2])
    np.testing.assert_array_equal(reader.read_partials(0, 2), chunk.head)
    np.testing.assert_array_equal(reader.read_partials(5, 6), chunk.tail)
    for wrong in ((1, 3), (4, 6)):
        with pytest.raises(ValueError, match="not all"):
            reader.read_partials(*wrong)
        with pytest.raises(ValueError, match="not all"):
            reader.read_body(*wrong)
    reader.close()
    assert read_spill_header(path) == ((6, 3, 2, 3), np.dtype(np.uint16))
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


def test_a_chunk_of_shared_frames_only_keeps_its_dtype_and_reads_across_head_and_tail(tmp_path):
    chunk = _chunk(2, 0, 2, np.uint8)
    write_spill(tmp_path / "c.npy", chunk)
    reader = SpillReader(tmp_path / "c.npy")
    assert reader.dtype == np.uint8 and reader.shape == (4, 3, 2, 3)
    np.testing.assert_array_equal(reader.read_partials(1, 3), np.concatenate([chunk.head[1:], chunk.tail[:1]]))
    reader.close()


@pytest.mark.parametrize("keep", [0.5, -5])
def test_truncated_files_are_refused(tmp_path, keep):
    path = tmp_path / "c.npy"
    write_spill(path, _chunk(1, 4, 1))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(ValueError):
        read_spill_header(path)


def test_processor_output_is_checked_against_the_task():
    alone = fake_chunks(9)[0]  # one window, no neighbours
    shared = fake_chunks(20)[1]  # overlaps both neighbours
    frames = np.zeros((alone.out_frames, 2, 2, 3), np.uint8)
    assert as_frames(frames, alone).body.shape == frames.shape
    assert as_frames(torch.from_numpy(frames), alone).head.dtype == np.float32
    with pytest.raises(ValueError, match="partial sums"):
        as_frames(np.zeros((shared.out_frames, 2, 2, 3), np.uint8), shared)
    good = _chunk(shared.shared_head, shared.out_frames - shared.shared_head - shared.shared_tail,
                  shared.shared_tail, np.uint8)
    assert as_frames(good, shared).shape == (shared.out_frames, 3, 2, 3)
    bad = [
        ChunkFrames(good.head[1:], np.concatenate([good.body, good.body[:1]]), good.tail),  # head too short
        ChunkFrames(good.head, good.body[1:], good.tail),  # a frame missing
        ChunkFrames(good.head.astype(np.float64), good.body, good.tail),  # not float32
        ChunkFrames(good.head, good.body.astype(np.int16), good.tail),  # not uint8/uint16
        ChunkFrames(good.head[:, :1], good.body, good.tail),  # another frame size
    ]
    for chunk in bad:
        with pytest.raises(ValueError):
            as_frames(chunk, shared)
