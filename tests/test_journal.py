"""Work directories: input fingerprints, job keys, journal records, what counts as finished, restart."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.fakes import fake_chunks, weighted_chunk
from seedvr_cli.parallel.journal import (
    Journal,
    fingerprint_input,
    job_key,
    stale_workdirs,
    workdir_for,
)
from seedvr_cli.parallel.spill import ChunkFrames, write_spill


@pytest.fixture
def tasks():
    return fake_chunks(40, windows_per_chunk=2)


def test_fingerprint_follows_content_size_and_mtime(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 20000)  # 5 MB: first and last MiB hashed, middle not
    base = fingerprint_input(video)
    assert fingerprint_input(video) == base

    stat = video.stat()
    data = bytearray(video.read_bytes())
    data[-10] ^= 1
    video.write_bytes(bytes(data))
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_input(video) != base, "a change in the last MiB must show even with the same mtime"

    data[-10] ^= 1
    video.write_bytes(bytes(data))
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint_input(video) != base, "a touched file is treated as a new input"


def test_fingerprint_of_an_image_sequence_folder(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:04d}.png").write_bytes(b"x" * (10 + i))
    base = fingerprint_input(tmp_path)
    (tmp_path / "0003.png").write_bytes(b"y")
    assert fingerprint_input(tmp_path) != base


def test_key_covers_input_settings_and_plan(tasks):
    key = job_key("abc", {"model": "3b", "seed": 1}, tasks)
    assert job_key("abc", {"seed": 1, "model": "3b"}, tasks) == key
    assert job_key("abd", {"model": "3b", "seed": 1}, tasks) != key
    assert job_key("abc", {"model": "3b", "seed": 2}, tasks) != key
    other_plan = fake_chunks(40, windows_per_chunk=3)
    assert job_key("abc", {"model": "3b", "seed": 1}, other_plan) != key


def test_workdir_sits_beside_the_output(tmp_path):
    out = tmp_path / "out" / "clip_up.mp4"
    work = workdir_for(out, "f" * 64)
    assert work.parent == out.parent and work.name.startswith(".clip_up.mp4.seedvr-")
    work.mkdir(parents=True)
    assert stale_workdirs(out) == [work]


def _finish(journal, task, value=7):
    chunk = weighted_chunk(task, np.full((task.out_frames, 4, 4, 3), value, dtype=np.uint8))
    write_spill(journal.spill_path(task.index), chunk)
    journal.record(task.index, shape=chunk.shape, dtype="uint8", device="cpu:0", seconds=0.1)


def test_records_survive_reopening_and_bad_ones_are_redone(tmp_path, tasks):
    root = tmp_path / "work"
    journal = Journal.open(root, key="k1", tasks=tasks, meta={"fps": "30000/1001"})
    for task in tasks[:3]:
        _finish(journal, task)
    # A spill file without its record (the process died in between) is not finished.
    write_spill(journal.spill_path(3), weighted_chunk(tasks[3], np.zeros((tasks[3].out_frames, 4, 4, 3), np.uint8)))
    # A record whose spill file lost its tail is not finished either.
    spill = journal.spill_path(2)
    spill.write_bytes(spill.read_bytes()[:-5])

    reopened = Journal.open(root, key="k1", tasks=tasks)
    assert sorted(reopened.done()) == [0, 1]
    assert reopened.meta == {"fps": "30000/1001"}
    assert [(t.out_start, t.out_stop, t.weights, t.shared_head, t.shared_tail) for t in reopened.tasks()] == [
        (t.out_start, t.out_stop, t.weights, t.shared_head, t.shared_tail) for t in tasks
    ]
    record = json.loads(reopened.record_path(0).read_text())
    assert record["device"] == "cpu:0" and record["frames"] == tasks[0].out_frames


def test_a_record_with_the_wrong_frame_count_is_not_finished(tmp_path, tasks):
    journal = Journal.open(tmp_path / "w", key="k", tasks=tasks)
    chunk = ChunkFrames.whole(np.zeros((tasks[0].out_frames + 1, 2, 2, 3), np.uint8))
    write_spill(journal.spill_path(0), chunk)
    journal.record(0, shape=chunk.shape, dtype="uint8", device="cpu:0", seconds=0.0)
    assert journal.done() == {}


def test_other_job_in_the_same_directory_needs_restart(tmp_path, tasks):
    root = tmp_path / "work"
    journal = Journal.open(root, key="k1", tasks=tasks)
    _finish(journal, tasks[0])
    with pytest.raises(UsageError, match="--restart"):
        Journal.open(root, key="k2", tasks=tasks)
    fresh = Journal.open(root, key="k2", tasks=tasks, restart=True)
    assert fresh.done() == {} and fresh.key == "k2"
    fresh.remove()
    assert not root.exists()


def test_not_a_workdir(tmp_path):
    with pytest.raises(UsageError, match="not a seedvr work directory"):
        Journal.load(tmp_path)


def test_stale_workdirs_of_names_with_glob_characters(tmp_path):
    from seedvr_cli.parallel.journal import stale_workdirs

    output = tmp_path / "clip [final].mp4"
    kept = tmp_path / ".clip [final].mp4.seedvr-0123456789abcdef"
    kept.mkdir()
    (tmp_path / ".clip f.mp4.seedvr-0123456789abcdef").mkdir()  # what '[final]' would match as a class
    assert stale_workdirs(output) == [kept]


def test_folder_fingerprint_ignores_hidden_files(tmp_path):
    from seedvr_cli.parallel.journal import fingerprint_input

    (tmp_path / "0001.png").write_bytes(b"frame")
    before = fingerprint_input(tmp_path)
    (tmp_path / ".0001_upscaled.partial-1-0123abcd.png").write_bytes(b"partial output")
    (tmp_path / ".DS_Store").write_bytes(b"finder")
    assert fingerprint_input(tmp_path) == before
    (tmp_path / "0002.png").write_bytes(b"frame")
    assert fingerprint_input(tmp_path) != before


def test_half_written_chunks_of_dead_processes_are_removed_on_resume(tmp_path, tasks):
    import subprocess
    import sys

    from seedvr_cli.parallel import spill

    journal = Journal.open(tmp_path / "w", key="k", tasks=tasks)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)  # exited and reaped: no such process any more
    orphan = journal.root / f".chunk-000003.npy.{spill._HOST}-{dead_pid}.tmp"
    alive = journal.root / f".chunk-000004.npy.{spill._HOST}-{os.getpid()}.tmp"
    elsewhere = journal.root / f".chunk-000005.npy.another-machine-{dead_pid}.tmp"
    for path in (orphan, alive, elsewhere):
        path.write_bytes(b"half a chunk")
    write_spill(journal.spill_path(1), ChunkFrames.whole(np.zeros((2, 2, 2, 3), np.uint8)))
    assert set(journal.root.glob(".*.tmp")) == {orphan, alive, elsewhere}  # write_spill left none of its own

    Journal.open(tmp_path / "w", key="k", tasks=tasks)  # the resume
    assert not orphan.exists()
    assert alive.exists() and elsewhere.exists()  # a live writer, and another shard machine's file
    assert journal.spill_path(1).exists()
