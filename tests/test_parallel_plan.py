"""The chunk plan and the streaming assembler, in one process (no workers)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from seedvr_cli.config import parse_shard
from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.assembler import Assembler
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.fakes import (
    ArraySink,
    FakeProcessorFactory,
    SyntheticSource,
    fake_chunks,
    fake_windows,
    run_serially,
    weighted_chunk,
)
from seedvr_cli.parallel.spill import ChunkFrames, SpillReader, as_frames, write_spill
from seedvr_cli.parallel.tasks import (
    owned_frames,
    plan_chunks,
    shard_indices,
    validate_tasks,
)
from seedvr_cli.pipeline.blend import blend_weights, fold_shares
from seedvr_cli.pipeline.temporal import TemporalPlan, plan_windows


def _reference_fold(plan: TemporalPlan, frame: int) -> dict[int, float]:
    """numz's order, frame by frame: each window entering scales everything written before it."""
    shares: dict[int, float] = {}
    for k in plan.windows_covering(frame):
        earlier = float(blend_weights(plan.overlap, plan.blend)[frame - plan.windows[k].start]) if shares else 0.0
        shares = {w: share * earlier for w, share in shares.items()} | {k: 1.0 - earlier}
    return shares


def test_fold_shares_scales_every_earlier_span_still_covering_the_frame():
    weights = {2: [0.75, 0.25], 3: [0.5, 0.5, 0.5]}
    s0, s1, s2 = fold_shares([(0, 4), (2, 6), (3, 8)], weights.__getitem__)
    np.testing.assert_array_equal(s0, [1, 1, 0.75, 0.125])
    np.testing.assert_array_equal(s1, [0.25, 0.375, 0.5, 0.5])
    np.testing.assert_array_equal(s2, [0.5, 0.5, 0.5, 1, 1])
    with pytest.raises(ValueError):
        fold_shares([(0, 4), (5, 8)], weights.__getitem__)  # a gap


def _random_plan(rng: random.Random) -> TemporalPlan:
    batch = 4 * rng.randint(1, 6) + 1
    return plan_windows(rng.randint(1, 90), batch_size=batch, overlap=rng.randint(0, batch - 1),
                        prepend=rng.choice([0, 3]), blend=rng.choice(["crossfade", "reference"]))


def test_window_shares_follow_numz_fold_and_sum_to_one():
    """Any overlap, above half a window too: the plan's shares are numz's fold, bit for bit."""
    rng = random.Random(5)
    for _ in range(60):
        plan = _random_plan(rng)
        for frame in range(plan.timeline_length):
            contributions = plan.timeline_contributions(frame)
            assert {c.window: c.weight for c in contributions} == _reference_fold(plan, frame)
            assert sum(c.weight for c in contributions) == pytest.approx(1.0, abs=1e-12)


def test_chunk_shares_are_the_sums_of_their_windows_shares():
    rng = random.Random(6)
    for _ in range(60):
        plan = _random_plan(rng)
        per_chunk = rng.randint(1, 4)
        tasks = plan_chunks(plan.windows, windows_per_chunk=per_chunk, shares=plan.chunk_shares)
        validate_tasks(tasks)
        coverage = np.zeros(plan.timeline_length)
        for task in tasks:
            mine = {w.index for w in task.windows}
            for frame in range(task.out_start, task.out_stop):
                expected = sum(c.weight for c in plan.timeline_contributions(frame) if c.window in mine)
                assert task.weights[frame - task.out_start] == pytest.approx(expected, abs=1e-12)
            coverage[task.out_start:task.out_stop] += task.weights
        np.testing.assert_allclose(coverage, 1.0, atol=1e-12)


@pytest.mark.parametrize("frames", [1, 5, 9, 10, 37, 200])
@pytest.mark.parametrize("per_chunk", [1, 3])
def test_plan_covers_every_frame_and_marks_the_frames_it_shares(frames, per_chunk):
    tasks = fake_chunks(frames, size=9, overlap=4, windows_per_chunk=per_chunk)
    validate_tasks(tasks)
    coverage = np.zeros(frames, np.float64)
    for task in tasks:
        coverage[task.out_start:task.out_stop] += task.weights
    np.testing.assert_allclose(coverage, 1.0, atol=1e-12)
    assert [w for t in tasks for w in t.windows] == fake_windows(frames, size=9, overlap=4)
    assert sum(owned_frames(tasks, k) for k in range(len(tasks))) == frames
    # Chunk boundaries are the windows' own overlaps: the chunk split adds no frames of its own.
    for a, b in zip(tasks, tasks[1:]):
        assert a.out_stop - b.out_start == 4
        assert a.shared_tail == b.shared_head == 4
    if tasks:
        assert tasks[0].shared_head == 0 and tasks[-1].shared_tail == 0


@pytest.mark.parametrize(("size", "overlap", "per_chunk"), [(5, 3, 1), (5, 4, 1), (9, 6, 2), (9, 8, 1)])
def test_shared_frames_never_exceed_the_chunk(size, overlap, per_chunk):
    """Above half a chunk, head and tail meet: every frame is shared, none twice."""
    tasks = fake_chunks(40, size=size, overlap=overlap, windows_per_chunk=per_chunk)
    validate_tasks(tasks)
    for k, task in enumerate(tasks):
        assert task.shared_head + task.shared_tail <= task.out_frames
        if 0 < k < len(tasks) - 1 and tasks[k - 1].out_stop >= tasks[k + 1].out_start:
            assert task.shared_head + task.shared_tail == task.out_frames


def test_single_image_and_empty_clip():
    (task,) = fake_chunks(1, size=1, overlap=0)
    assert (task.out_start, task.out_stop, task.weights) == (0, 1, (1.0,))
    assert (task.shared_head, task.shared_tail) == (0, 0)
    assert plan_chunks([], windows_per_chunk=1, shares=lambda *_: []) == []


def test_context_frames_are_clipped_to_the_clip():
    tasks = fake_chunks(30, windows_per_chunk=2, context=2)
    assert tasks[0].read_start == 0 and tasks[-1].read_stop == 30
    assert tasks[1].read_start == tasks[1].out_start - 2


@pytest.mark.parametrize(
    "windows",
    [[(1, 9)], [(0, 9), (10, 12)], [(0, 9), (5, 8)], [(0, 9), (0, 10)]],
)
def test_windows_that_do_not_advance_are_rejected(windows):
    with pytest.raises(ValueError):
        plan_chunks(windows, windows_per_chunk=1, shares=lambda _, start, stop: [1.0] * (stop - start))


def test_shards_partition_the_chunks():
    tasks = fake_chunks(100, windows_per_chunk=2)
    for count in (1, 2, 3, len(tasks), len(tasks) + 3):
        parts = [shard_indices(tasks, i, count) for i in range(count)]
        assert sorted(k for part in parts for k in part) == list(range(len(tasks)))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/2", "1/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def _spill_all(tmp_path, source, tasks, factory):
    processor, reader = factory(DeviceSpec("cpu", 0)), source.open()
    for task in tasks:
        out = processor.process(task, reader.read(task.read_start, task.read_stop), None)
        write_spill(tmp_path / f"{task.index}.npy", as_frames(out, task))
    return lambda k: SpillReader(tmp_path / f"{k}.npy")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_assembler_streams_in_order_whatever_the_arrival_order(tmp_path, dtype):
    source = SyntheticSource(60, height=4, width=6, dtype=dtype)
    factory = FakeProcessorFactory()
    tasks = fake_chunks(60, size=9, overlap=3, windows_per_chunk=2)
    open_chunk = _spill_all(tmp_path, source, tasks, factory)
    expected = run_serially(source, tasks, factory)

    order = list(range(len(tasks)))
    random.Random(3).shuffle(order)
    sink, released = ArraySink(), []
    # Tiny batches: every write boundary case is crossed.
    assembler = Assembler(tasks, open_chunk, sink, release=released.append, batch_bytes=3 * 8 * 12 * 3)
    for k in order:
        assembler.add(k)
        assembler.pump()
        # Only final frames are written: everything before the first unfinished chunk's start.
        first_missing = next((t for t in tasks if t.index not in order[: order.index(k) + 1]), None)
        assert assembler.frames_written == (first_missing.out_start if first_missing else 60)
    assert assembler.complete and sorted(released) == list(range(len(tasks)))
    out = sink.frames
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, expected)
    # A frame only one chunk covers is that chunk's own; a shared one really is a blend of two
    # chunks that disagree on it.
    first, second = open_chunk(0), open_chunk(1)
    np.testing.assert_array_equal(out[0], first.read_body(0, 1)[0])
    middle = tasks[1].out_start + 1
    earlier = first.read_partials(middle, middle + 1)[0] / tasks[0].weights[middle]
    later = second.read_partials(1, 2)[0] / tasks[1].weights[1]
    assert np.abs(earlier - later).max() > 2 / np.iinfo(dtype).max


def test_overlap_frames_are_rounded_once(tmp_path):
    """10.4 and 11.4 crossfaded half and half: 10.9 -> 11; rounding each first would give 10.5 -> 10."""
    tasks = fake_chunks(9, size=5, overlap=1)
    assert [(t.out_start, t.out_stop, t.shared_head, t.shared_tail) for t in tasks] == [(0, 5, 0, 1), (4, 9, 1, 0)]
    assert tasks[0].weights[4] == tasks[1].weights[0] == 0.5
    body = np.full((4, 2, 2, 3), 7, np.uint8)
    partial = np.full((1, 2, 2, 3), np.float32(0.5), np.float32)
    write_spill(tmp_path / "0.npy", ChunkFrames(partial[:0], body, partial * np.float32(10.4 / 255)))
    write_spill(tmp_path / "1.npy", ChunkFrames(partial * np.float32(11.4 / 255), body, partial[:0]))
    sink = ArraySink()
    assembler = Assembler(tasks, lambda k: SpillReader(tmp_path / f"{k}.npy"), sink)
    assembler.add(0)
    assembler.add(1)
    assembler.pump()
    assert sink.frames.shape == (9, 2, 2, 3)
    assert (sink.frames[4] == 11).all() and (np.delete(sink.frames, 4, axis=0) == 7).all()


def test_identical_chunk_outputs_blend_back_to_themselves(tmp_path):
    truth = np.random.default_rng(0).integers(0, 256, size=(50, 3, 3, 3)).astype(np.uint8)
    tasks = fake_chunks(50, size=9, overlap=5, windows_per_chunk=2)
    for task in tasks:
        write_spill(tmp_path / f"{task.index}.npy", weighted_chunk(task, truth[task.out_start:task.out_stop]))
    sink = ArraySink()
    assembler = Assembler(tasks, lambda k: SpillReader(tmp_path / f"{k}.npy"), sink)
    for task in tasks:
        assembler.add(task.index)
    assembler.pump()
    np.testing.assert_array_equal(sink.frames, truth)


def test_assembler_rejects_chunks_of_another_frame_size(tmp_path):
    tasks = fake_chunks(20)
    for task in tasks:
        side = 4 if task.index == 0 else 5
        frames = np.zeros((task.out_frames, side, side, 3), np.uint8)
        write_spill(tmp_path / f"{task.index}.npy", weighted_chunk(task, frames))
    assembler = Assembler(tasks, lambda k: SpillReader(tmp_path / f"{k}.npy"), ArraySink())
    for task in tasks:
        assembler.add(task.index)
    with pytest.raises(ValueError, match="chunk 1 has frames"):
        assembler.pump()


def test_assembler_rejects_chunks_that_do_not_split_the_shared_frames_off(tmp_path):
    tasks = fake_chunks(20)
    for task in tasks:
        write_spill(tmp_path / f"{task.index}.npy", ChunkFrames.whole(np.zeros((task.out_frames, 2, 2, 3), np.uint8)))
    assembler = Assembler(tasks, lambda k: SpillReader(tmp_path / f"{k}.npy"), ArraySink())
    assembler.add(0)
    with pytest.raises(ValueError, match="tail partials"):
        assembler.pump()


@pytest.mark.parametrize(("size", "overlap", "per_chunk"), [(5, 3, 1), (5, 4, 1), (9, 6, 2), (5, 3, 2)])
def test_overlaps_above_half_a_window_fold_three_or_more_chunks(tmp_path, size, overlap, per_chunk):
    tasks = fake_chunks(40, size=size, overlap=overlap, windows_per_chunk=per_chunk)
    source, factory = SyntheticSource(40, height=3, width=4), FakeProcessorFactory()
    open_chunk = _spill_all(tmp_path, source, tasks, factory)
    sink = ArraySink()
    assembler = Assembler(tasks, open_chunk, sink, batch_bytes=3 * 4 * 3 * 4 * 2)
    for k in reversed(range(len(tasks))):
        assembler.add(k)
        assembler.pump()
    np.testing.assert_array_equal(sink.frames, run_serially(source, tasks, factory))
