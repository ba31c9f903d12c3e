"""Leftovers of earlier runs: work folders of an output with other settings are listed (and removed
by --restart, saying so); temporary folders of killed runs are removed by the next run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_factory import make_video

from seedvr_cli.cli import main
from seedvr_cli.parallel.fakes import fake_chunks
from seedvr_cli.parallel.journal import Journal, workdir_for
from seedvr_cli.parallel.spill import as_frames, write_spill
from seedvr_cli.run.leftovers import notes_on_other_workdirs, remove_workdirs
from seedvr_cli.run.scratch import remove_orphaned_temp_dirs, run_temp_dir


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _interrupted_job(output: Path, key: str, finished: int) -> Path:
    """The work folder an interrupted run of ``output`` with job ``key`` leaves behind."""
    tasks = fake_chunks(30, overlap=0)  # chunks that share no frames: a plain array is a whole chunk
    journal = Journal.open(workdir_for(output, key), key=key, tasks=tasks)
    for task in tasks[:finished]:
        frames = np.zeros((task.out_stop - task.out_start, 2, 2, 3), np.uint8)
        write_spill(journal.spill_path(task.index), as_frames(frames, task), durable=False)
        journal.record(task.index, shape=frames.shape, dtype=str(frames.dtype), device="cpu", seconds=0.1)
    assert len(journal.done()) == finished
    return journal.root


def test_other_jobs_work_folders_are_listed_not_removed(tmp_path):
    output = tmp_path / "up.mkv"
    other = _interrupted_job(output, "a" * 64, finished=2)
    current = workdir_for(output, "b" * 64)
    notes = notes_on_other_workdirs(output, current)
    assert len(notes) == 1 and str(other) in notes[0] and "2 finished chunks" in notes[0] and "--restart" in notes[0]
    assert other.exists()
    assert notes_on_other_workdirs(output, other) == []  # its own job's folder is resumed, not noted


def test_restart_removes_every_work_folder_of_the_output_and_says_so(tmp_path):
    output = tmp_path / "up.mkv"
    first, second = _interrupted_job(output, "a" * 64, 1), _interrupted_job(output, "b" * 64, 3)
    unrelated = _interrupted_job(tmp_path / "other.mkv", "c" * 64, 1)
    lines = remove_workdirs(output)
    assert len(lines) == 2 and all(line.startswith("--restart: removed") for line in lines)
    assert "3 finished chunks" in " ".join(lines)
    assert not first.exists() and not second.exists() and unrelated.exists()


def test_temp_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with run_temp_dir("stats") as mine:
        dead = Path(mine).with_name(Path(mine).name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
        dead.mkdir()
        live = Path(mine).with_name(Path(mine).name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-") + "x")
        live.mkdir()
        other_host = tmp_path / f"seedvr-stats-{_dead_pid()}-00000000-abc"
        other_host.mkdir()
        stranger = tmp_path / "seedvr-notes"
        stranger.mkdir()
        assert remove_orphaned_temp_dirs() == [dead]
        assert Path(mine).exists() and live.exists() and other_host.exists() and stranger.exists()


@pytest.mark.timeout(300)
def test_upscale_lists_other_work_folders_and_cleans_killed_runs_temp_folders(tmp_path, capsys, monkeypatch,
                                                                              checkpoints):

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    with run_temp_dir("stats") as mine:
        orphan = Path(mine).with_name(Path(mine).name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
    orphan.mkdir()  # as a SIGKILLed run leaves it
    dit, vae = checkpoints
    work = tmp_path / "work"
    work.mkdir()
    clip = make_video(work / "clip.mp4", frames=5)
    output = work / "up.mkv"
    stale = _interrupted_job(output, "d" * 64, finished=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "-o", str(output), "--model", str(dit), "--vae", str(vae), "--devices", "cpu",
              "--resolution", "48", "--batch-size", "5", "--codec", "ffv1"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 0, err
    assert f"note: {stale} is kept from an earlier run of up.mkv" in err and stale.exists()
    assert f"removed {orphan}" in err and not orphan.exists()
    assert sorted(p.name for p in work.iterdir()) == sorted(["clip.mp4", "up.mkv", stale.name])
