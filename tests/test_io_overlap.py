"""File I/O beside the device's work: frames read while models load and while the chunk before runs,
the output encoded beside the spill reads. Checked from the stage timeline (``parallel.timeline``)
that the runs record, and every output compared with ``run_serially``."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from seedvr_cli.parallel import RunFailed, RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.encoder_thread import EncoderThread
from seedvr_cli.parallel.engine import _Scheduler
from seedvr_cli.parallel.pool import WorkerSlot
from seedvr_cli.parallel.progress import RunResult
from seedvr_cli.parallel.fakes import ArraySink, FakeProcessorFactory, SyntheticSource, fake_chunks, run_serially
from seedvr_cli.parallel.timeline import TIMELINE_ENV

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def timeline(tmp_path, monkeypatch):
    """Turns the timeline on for this test (the workers inherit the variable when they start)."""
    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv(TIMELINE_ENV, str(path))

    def spans(stage: str) -> list[dict]:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted((s for s in lines if s["stage"] == stage), key=lambda s: s["start"])

    return spans


def _run(pool, source, tasks, workdir):
    sink = ArraySink()
    result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key="job", sink=sink,
                     options=RunOptions(durable=False))
    assert result.complete and sink.closed and not sink.aborted
    np.testing.assert_array_equal(sink.frames, run_serially(source, tasks, FakeProcessorFactory()))
    return result


# ---------------------------------------------------------------- workers


def test_the_first_chunk_is_read_while_the_models_load(tmp_path, timeline):
    source = SyntheticSource(18, height=6, width=5, read_delay_s=0.4)
    tasks = fake_chunks(18, size=9, overlap=3)
    with WorkerPool(parse_devices("cpu"), FakeProcessorFactory(startup_s=1.5)) as pool:
        _run(pool, source, tasks, tmp_path / "w")
    (load,) = timeline("load")
    first_read = next(s for s in timeline("read") if s["chunk"] == 0)
    assert first_read["end"] <= load["end"], "the first chunk's frames were read during the load, not after it"
    first_process = next(s for s in timeline("process") if s["chunk"] == 0)
    # Once ready, the worker started at once (before: the whole read of 0.4 s came after the load).
    assert first_process["start"] - load["end"] < 0.2


def test_a_lone_worker_reads_every_next_chunk_while_the_one_before_runs(tmp_path, timeline):
    source = SyntheticSource(30, height=6, width=5, read_delay_s=0.3)
    tasks = fake_chunks(30, size=9, overlap=3)  # 5 chunks
    with WorkerPool(parse_devices("cpu"), FakeProcessorFactory(delay_s=0.6)) as pool:
        _run(pool, source, tasks, tmp_path / "w")
    reads = {s["chunk"]: s for s in timeline("read")}
    processed = {s["chunk"]: s for s in timeline("process")}
    assert sorted(processed) == list(range(len(tasks)))
    for chunk in range(1, len(tasks)):
        # The last chunk too: the scheduler used to hold it back for whichever worker came free first.
        assert reads[chunk]["end"] <= processed[chunk - 1]["end"], f"chunk {chunk} was read after the one before"
    busy = sum(s["end"] - s["start"] for s in processed.values())
    span = processed[len(tasks) - 1]["end"] - processed[0]["start"]
    # Reads in series would add 4 x 0.3 s between the chunks; overlapped they add nothing but hand-offs.
    assert span - busy < 0.6, f"the device stood idle {span - busy:.2f} s between chunks"


def test_chunks_handed_to_a_worker_that_fails_to_load_go_to_the_others(tmp_path):
    source = SyntheticSource(40, height=6, width=5)
    tasks = fake_chunks(40, size=9, overlap=3)
    factory = FakeProcessorFactory(delay_s=0.05, fail_startup_on=("cpu:1",))
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        result = _run(pool, source, tasks, tmp_path / "w")
    # It was handed a chunk while loading; that chunk was never started, so no chunk is blamed.
    assert result.failures and {(f.device, f.kind, f.chunk) for f in result.failures} == {("cpu:1", "init", None)}


# ---------------------------------------------------------------- what the scheduler hands out


class _Pool:
    """Just what the scheduler's dispatch touches of a pool: slots, and a record of what was sent."""

    def __init__(self, slots) -> None:
        self.live_slots, self.sent = slots, []

    def new_job_id(self) -> int:
        return 1

    def send_task(self, slot, job_id, task, **_) -> None:
        slot.assigned.append((job_id, task.index))
        self.sent.append((slot.device.label, task.index))


def _dispatch(slots, pending: list[int]) -> list[tuple[str, int]]:
    pool = _Pool(slots)
    tasks = fake_chunks(60, size=9, overlap=3)
    scheduler = _Scheduler(pool, tasks, pending, SimpleNamespace(root=None), RunOptions(), RunResult(),
                           None, None, None, None)
    scheduler.dispatch()
    return pool.sent


def _slot(label: str, *, ready=True, assigned=(), running=None) -> WorkerSlot:
    device = parse_devices(label)[0]
    return WorkerSlot(0, device, ready=ready, assigned=[(1, c) for c in assigned],
                      running=None if running is None else (1, running))


def test_a_loading_worker_is_handed_one_chunk():
    assert _dispatch([_slot("cpu", ready=False)], [0, 1, 2]) == [("cpu:0", 0)]


def test_a_lone_worker_gets_its_last_chunk_queued():
    assert _dispatch([_slot("cpu", assigned=[4], running=4)], [5]) == [("cpu:0", 5)]


def test_a_chunk_being_written_leaves_room_for_the_next_read():
    # Chunk 3 is processed and on its way to disk, chunk 4 runs: chunk 5 is read meanwhile.
    slot = _slot("cpu", assigned=[3, 4], running=4)
    assert slot.unprocessed == 1
    assert _dispatch([slot], [5, 6]) == [("cpu:0", 5)]
    # Not started yet, chunk 4 is still waiting in the queue: nothing more to read ahead.
    assert _dispatch([_slot("cpu", assigned=[3, 4], running=3)], [5, 6]) == []


# ---------------------------------------------------------------- the parent's encoder


class SlowSink(ArraySink):
    """Encodes in ``seconds`` per write; ``fail_on``: the write (1-based) that raises."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None) -> None:
        super().__init__()
        self.seconds, self.fail_on, self.writes = seconds, fail_on, 0
        self.thread_names: set[str] = set()

    def write(self, frames: np.ndarray) -> None:
        self.writes += 1
        self.thread_names.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.writes == self.fail_on:
            raise OSError(28, "No space left on device")
        super().write(frames)


def _batches(count: int) -> list[np.ndarray]:
    return [np.full((2, 3, 4, 3), index, dtype=np.uint8) for index in range(count)]


def test_encoding_runs_beside_the_reads_and_keeps_the_order():
    sink = SlowSink(seconds=0.25)
    encoder = EncoderThread(sink)
    started = time.perf_counter()
    for batch in _batches(6):
        time.sleep(0.25)  # reading a batch back from the spill files
        encoder.write(batch)
    encoder.close()
    wall = time.perf_counter() - started
    # In series: 6 x (0.25 + 0.25) = 3.0 s; side by side: 6 x 0.25 + the last encode = 1.75 s.
    assert wall < 2.4, f"{wall:.2f} s: reading waited for encoding"
    assert sink.closed and not sink.aborted and sink.thread_names == {"seedvr-encoder"}
    np.testing.assert_array_equal(sink.frames, np.concatenate(_batches(6)))


def test_at_most_one_batch_waits_beside_the_one_being_encoded():
    release = threading.Event()

    class StuckSink(ArraySink):
        def write(self, frames):
            release.wait()
            super().write(frames)

    encoder = EncoderThread(StuckSink(), depth=1)
    handed = []

    def feed():
        for batch in _batches(4):
            encoder.write(batch)
            handed.append(batch)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.5)
    assert len(handed) == 2, "one batch in the encoder, one queued, the third write waits"
    release.set()
    feeder.join(5)
    encoder.close()
    assert len(handed) == 4 and encoder.sink.closed


def test_an_encoder_error_is_raised_by_the_next_write_as_it_was():
    sink = SlowSink(fail_on=1)
    encoder = EncoderThread(sink)
    encoder.write(_batches(1)[0])
    with pytest.raises(OSError, match="No space left on device") as raised:
        for batch in _batches(50):
            encoder.write(batch)
            time.sleep(0.01)
    assert raised.value.errno == 28
    with pytest.raises(OSError, match="No space left"):
        encoder.close()
    encoder.abort()
    assert sink.aborted and not sink.closed and sink.writes == 1, "nothing is encoded after the failure"


def test_abort_drops_what_is_queued():
    sink = SlowSink(seconds=0.3)
    encoder = EncoderThread(sink)
    for batch in _batches(2):
        encoder.write(batch)
    encoder.abort()
    assert sink.aborted and not sink.closed and sink.writes == 1, "the queued batch was dropped, not encoded"
    with pytest.raises(RuntimeError, match="after the output was closed or aborted"):
        encoder.write(_batches(1)[0])


def test_a_failing_output_fails_the_run_in_one_line_keeping_finished_chunks(tmp_path):
    source = SyntheticSource(40, height=6, width=5)
    tasks = fake_chunks(40, size=9, overlap=3)
    sink = SlowSink(fail_on=2)
    with WorkerPool(parse_devices("cpu"), FakeProcessorFactory(delay_s=0.1)) as pool:
        with pytest.raises(RunFailed, match=r"(writing the output failed|the run stopped): .*No space left") as failed:
            run_job(pool, source=source, tasks=tasks, workdir=tmp_path / "w", key="job", sink=sink,
                    options=RunOptions(durable=False))
    assert sink.aborted and not sink.closed
    assert "\n" not in str(failed.value).strip()
    assert failed.value.result.workdir is not None, "finished chunks stay for a resume"
