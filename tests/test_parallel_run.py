"""The engine end to end with real spawned CPU workers and fake processors.

Every output is compared bit for bit with ``run_serially``: the whole clip in one process,
chunk after chunk, blended by plain accumulation.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel import (
    RunFailed,
    RunOptions,
    WorkerPool,
    assemble,
    parse_devices,
    run_job,
    shard_indices,
)
from seedvr_cli.parallel.fakes import (
    ArraySink,
    Fault,
    FakeProcessorFactory,
    SyntheticSource,
    fake_chunks,
    run_serially,
)
from seedvr_cli.parallel.journal import Journal

# A scheduling bug shows as a hang: fail fast instead of at the suite's global timeout.
pytestmark = pytest.mark.timeout(120)


def clip(frames: int, **kw):
    source = SyntheticSource(frames, height=6, width=5, **kw)
    return source, fake_chunks(frames, size=9, overlap=3, windows_per_chunk=2)


def run(pool, source, tasks, workdir, *, key="job", options=RunOptions(durable=False), events=None):
    sink = ArraySink()
    result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key=key, sink=sink, options=options,
                     progress=None if events is None else events.append)
    assert sink.closed and not sink.aborted
    return result, sink.frames


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    build_log = tmp_path_factory.mktemp("builds")
    with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory(delay_s=0.01, build_log=str(build_log))) as pool:
        pool.build_log = build_log
        # Both workers ready before the first test: otherwise the first one up may finish a short
        # clip alone and "both workers took chunks" would measure start-up order, not scheduling.
        pool.start()
        deadline = time.monotonic() + 60
        while not all(slot.ready for slot in pool.live_slots) and time.monotonic() < deadline:
            pool.poll(0.1)
        yield pool


def test_one_and_two_workers_give_identical_output(two_workers, tmp_path):
    source, tasks = clip(120)
    expected = run_serially(source, tasks, FakeProcessorFactory())
    events = []
    result, two = run(two_workers, source, tasks, tmp_path / "w2", events=events)
    with WorkerPool(parse_devices("cpu"), FakeProcessorFactory()) as pool:
        _, one = run(pool, source, tasks, tmp_path / "w1")

    assert two.shape == (120, 12, 10, 3)
    np.testing.assert_array_equal(two, expected)
    np.testing.assert_array_equal(one, expected)
    assert result.complete and result.clean and result.chunks_processed == len(tasks) and result.workdir is None
    assert not (tmp_path / "w2").exists(), "the work directory is removed on success"
    assert {e.device for e in events if e.kind == "chunk"} == {"cpu:0", "cpu:1"}, "both workers took chunks"
    final = events[-1]
    assert final.kind == "finished" and final.frames_done == final.frames_written == 120 and final.fps > 0
    written = [e.frames_written for e in events]
    assert written == sorted(written), "frames are written in order, as they become final"


def test_short_inputs_reuse_the_loaded_workers(two_workers, tmp_path):
    for frames in (1, 3, 0):  # a single image, fewer frames than workers, nothing at all
        source, tasks = clip(frames)
        result, out = run(two_workers, source, tasks, tmp_path / f"w{frames}")
        assert result.complete and result.frames_written == frames
        if frames:
            np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))
    source, tasks = clip(30, dtype="uint16")
    _, out = run(two_workers, source, tasks, tmp_path / "w16")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))
    assert len(list(two_workers.build_log.iterdir())) == 2, "each worker built its processor once, for every input"


def test_crashed_workers_are_reported_and_their_chunks_retried(tmp_path):
    faults = (Fault("raise", chunk=2), Fault("exit", chunk=4), Fault("kill", chunk=6))
    factory = FakeProcessorFactory(faults=faults, fault_dir=str(tmp_path / "faults"))
    source, tasks = clip(100)
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        result, out = run(pool, source, tasks, tmp_path / "w",
                          options=RunOptions(durable=False, device_max_failures=4, keep_workdir=True))
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))
    failures = sorted(result.failures, key=lambda f: f.chunk)
    assert [(f.chunk, f.kind) for f in failures] == [(2, "exception"), (4, "exit"), (6, "exit")]
    assert "injected failure on chunk 2" in failures[0].summary()
    assert "code 3" in failures[1].detail and "SIGKILL" in failures[2].detail
    assert failures[0].frames == (tasks[2].out_start, tasks[2].out_stop)
    assert result.complete and not result.dropped_devices
    done = Journal.load(result.workdir).done()
    for failure in result.failures:
        assert done[failure.chunk].device != failure.device, "a failed chunk is retried on the other worker"


def test_a_failing_device_is_dropped_and_the_rest_finish(tmp_path):
    # The healthy worker is slow enough that the failing one, however late it gets ready, is handed
    # chunks before the clip is done (without that the test measured start-up order, not the policy).
    factory = FakeProcessorFactory(delay_s=0.01, device_delays=(("cpu:0", 0.4),),
                                   faults=(Fault("raise", device="cpu:1", times=0),), fault_dir=str(tmp_path / "faults"))
    source, tasks = clip(100)
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        result, out = run(pool, source, tasks, tmp_path / "w")
        # Skipped for this input only: its worker is alive and would serve the next input.
        assert [s.device.label for s in pool.live_slots] == ["cpu:0", "cpu:1"]
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))
    assert result.dropped_devices == ["cpu:1"]
    # Two failures skip it; the chunks it already held (the one running, the one read ahead, one more
    # read ahead while a failed one was being reported) may fail there too before it stops.
    assert {f.device for f in result.failures} == {"cpu:1"} and 2 <= len(result.failures) <= 5


def test_a_chunk_failing_everywhere_stops_the_run_keeping_finished_work(tmp_path):
    source, tasks = clip(100)
    failing = FakeProcessorFactory(faults=(Fault("raise", chunk=5, times=0),), fault_dir=str(tmp_path / "faults"))
    sink = ArraySink()
    with WorkerPool(parse_devices("cpu,cpu"), failing) as pool:
        with pytest.raises(RunFailed) as info:
            run_job(pool, source=source, tasks=tasks, workdir=tmp_path / "w", key="job", sink=sink,
                    options=RunOptions(durable=False))
        # The next file of a folder still runs on both workers, although each failed this input's
        # bad chunk as often as the default limit allows (the devices were skipped for it only).
        short_source, short_tasks = clip(30)
        result, out = run(pool, short_source, short_tasks, tmp_path / "next")
        assert result.complete and len(pool.live_slots) == 2
        np.testing.assert_array_equal(out, run_serially(short_source, short_tasks, FakeProcessorFactory()))
    message = str(info.value)
    assert f"chunk 5 (frames {tasks[5].out_start}-{tasks[5].out_stop - 1}) failed 2 times" in message
    assert "cpu:0" in message and "cpu:1" in message and "re-run the same command to resume" in message
    assert sink.aborted and not sink.closed
    kept = Journal.load(tmp_path / "w").done()
    assert 5 not in kept and len(kept) >= 5, "chunks finished before the failure stay journaled"

    with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory()) as pool:
        result, out = run(pool, source, tasks, tmp_path / "w")
    assert result.chunks_resumed == len(kept) and result.chunks_processed == len(tasks) - len(kept)
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))


def test_workers_that_cannot_start_fail_the_run_clearly(tmp_path):
    source, tasks = clip(20)
    with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory(fail_startup=True)) as pool:
        with pytest.raises(RunFailed, match="every device failed.*injected failure while loading") as failed:
            run(pool, source, tasks, tmp_path / "w")
    # Nothing finished, so nothing to resume: no empty work directory and no "re-run to resume" hint.
    assert failed.value.result.workdir is None and not (tmp_path / "w").exists()
    assert "resume" not in str(failed.value)


def test_shards_assembled_equal_the_full_run(two_workers, tmp_path):
    source, tasks = clip(150)
    parts = []
    for shard in range(2):  # as if on two machines, each with its own part directory
        workdir = tmp_path / f"part{shard}"
        options = RunOptions(durable=False, chunks=shard_indices(tasks, shard, 2))
        result = run_job(two_workers, source=source, tasks=tasks, workdir=workdir, key="job", sink=None,
                         options=options, meta={"fps": "24/1"})
        assert not result.complete and result.workdir == workdir
        parts.append(workdir)
    assert Journal.load(parts[1]).meta == {"fps": "24/1"}

    with pytest.raises(UsageError, match="chunks are not finished"):
        assemble(parts[:1], ArraySink())
    sink = ArraySink()
    result = assemble(parts, sink)
    assert result.complete and sink.closed and result.frames_written == 150
    np.testing.assert_array_equal(sink.frames, run_serially(source, tasks, FakeProcessorFactory()))
    assert not any(p.exists() for p in parts)


def test_a_slow_device_takes_fewer_chunks(tmp_path):
    factory = FakeProcessorFactory(device_delays=(("cpu:0", 0.02), ("cpu:1", 0.25)))
    source, tasks = clip(270)  # 22 chunks
    events = []
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        result, out = run(pool, source, tasks, tmp_path / "w", events=events)
    by_device = [e.device for e in events if e.kind == "chunk"]
    # An equal split would give the slow worker half; the queue gives it what it can do meanwhile
    # (a bit more than its speed alone would: the fast one may run only max_in_flight chunks ahead).
    print(f"chunks done: cpu:0 {by_device.count('cpu:0')}, cpu:1 (12x slower) {by_device.count('cpu:1')}")
    assert by_device.count("cpu:0") >= 2 * by_device.count("cpu:1")
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))


def test_a_hung_worker_is_stopped_and_its_chunk_retried(tmp_path):
    factory = FakeProcessorFactory(faults=(Fault("hang", chunk=1),), fault_dir=str(tmp_path / "faults"))
    source, tasks = clip(60)
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        result, out = run(pool, source, tasks, tmp_path / "w", options=RunOptions(durable=False, chunk_timeout_s=1.0))
    assert [(f.chunk, f.kind) for f in result.failures] == [(1, "timeout")]
    assert "no result after 1 s" in result.failures[0].summary()
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))


def test_when_every_chunk_is_journaled_no_worker_is_started(two_workers, tmp_path):
    source, tasks = clip(50)
    run_job(two_workers, source=source, tasks=tasks, workdir=tmp_path / "w", key="job", sink=None,
            options=RunOptions(durable=False, chunks=range(len(tasks))))  # e.g. killed while encoding
    unusable = WorkerPool(parse_devices("cpu"), FakeProcessorFactory(fail_startup=True))
    result, out = run(unusable, source, tasks, tmp_path / "w")
    assert result.chunks_resumed == len(tasks) and result.chunks_processed == 0
    assert not any(slot.process for slot in unusable.slots)
    np.testing.assert_array_equal(out, run_serially(source, tasks, FakeProcessorFactory()))
