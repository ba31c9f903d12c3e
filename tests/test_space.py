"""Disk space: the estimate of a run from its plan, the warning before it starts, a full disk named."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import av
import numpy as np
import pytest

from seedvr_cli.errors import MediaError
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.parallel.spill import spill_bytes
from seedvr_cli.parallel.tasks import plan_chunks
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.run.space import (
    SpaceNeed,
    disk_full_message,
    estimate_space,
    format_bytes,
    is_disk_full,
    mount_point,
    space_warning,
)

_Usage = namedtuple("_Usage", "total used free")
_FRAME = (48, 64, 3)


def _tasks(frames: int = 40):
    temporal = plan_windows(frames, batch_size=5, overlap=1)
    return plan_chunks(temporal.windows, windows_per_chunk=2, shares=temporal.chunk_shares)


def _estimate(tasks, **changes):
    args = dict(frame=_FRAME, deep=False, resume=True, in_flight=4, already=0, output="out.mkv",
                settings=OutputSettings(codec="ffv1"), frames=40)
    return estimate_space(tasks, None, **{**args, **changes})


def test_format_bytes_never_rounds_small_amounts_to_zero():
    assert format_bytes(5000) == "4.9 KiB"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(1.5 * 2**30) == "1.5 GiB" and format_bytes(120 * 2**30) == "120 GiB"
    assert format_bytes(12) == "12 B"


def test_estimate_counts_every_chunk_with_resume_and_the_ones_in_flight_without():
    tasks = _tasks()
    sizes = [spill_bytes(t, _FRAME, np.dtype(np.uint8)) for t in tasks]
    assert len(tasks) > 4
    assert _estimate(tasks).work == sum(sizes)
    assert _estimate(tasks, already=sizes[0]).work == sum(sizes) - sizes[0]  # resumed chunks are on the disk
    assert _estimate(tasks, resume=False).work == 4 * max(sizes)
    assert _estimate(tasks, deep=True).work > _estimate(tasks).work


def test_estimate_of_the_output_follows_the_codec():
    tasks = _tasks()
    raw = 40 * int(np.prod(_FRAME))
    assert _estimate(tasks).output == raw  # lossless FFV1: counted raw
    assert 0 < _estimate(tasks, settings=OutputSettings(codec="h264"), output="out.mp4").output < raw
    shard = estimate_space(tasks, [0, 1], frame=_FRAME, deep=False, resume=True, in_flight=4, already=0, output=None,
                           settings=OutputSettings(), frames=40)
    assert shard.output == 0 and shard.work == sum(spill_bytes(t, _FRAME, np.dtype(np.uint8)) for t in tasks[:2])


def test_warning_names_the_disk_and_real_amounts(tmp_path, monkeypatch):
    need = SpaceNeed(work=3 * 2**20, output=2**20)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(10**9, 10**9 - 5000, 5000))
    warning = space_warning(tmp_path / "not-made-yet", need, resume=True)
    assert warning is not None and "0.0 GiB" not in warning
    assert "4.9 KiB free" in warning and "about 4.0 MiB (work folder 3.0 MiB + output 1.0 MiB)" in warning
    assert f"disk {mount_point(tmp_path)}" in warning and "--no-resume" in warning
    assert "--no-resume" not in space_warning(tmp_path, need, resume=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(10**12, 0, 10**12))
    assert space_warning(tmp_path, need, resume=True) is None


def test_disk_full_is_recognised_raised_or_reported_as_text(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert is_disk_full("chunk 3 failed 2 times (on cuda:0): OSError: [Errno 28] No space left on device")
    assert not is_disk_full(OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert not is_disk_full("writing the output failed: encoding failed")
    message = disk_full_message(tmp_path, SpaceNeed(2**30, 2**29), removed=tmp_path / ".work")
    assert str(mount_point(tmp_path)) in message and "1.5 GiB" in message and ".work was removed" in message


def test_writer_says_no_codec_hint_when_the_disk_is_full(tmp_path, monkeypatch):
    from seedvr_cli.media.writer import open_writer

    writer = open_writer(tmp_path / "out.mp4", width=32, height=32, fps=25)

    def full_disk(packets):
        av.error.err_check(-errno.ENOSPC, str(tmp_path / "out.mp4"))

    monkeypatch.setattr(writer, "_mux", full_disk)
    with pytest.raises(MediaError) as raised:
        writer.write(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    assert is_disk_full(str(raised.value)) and "--codec" not in str(raised.value)
    assert not (tmp_path / "out.mp4").exists()
