"""Ctrl-C, SIGTERM and SIGHUP stop a run through one handler: workers stopped together, finished
chunks kept, partial files and temporary folders removed, exit 128 + signal with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from seedvr_cli.cli import main
from seedvr_cli.cli.stopsignals import Stopped, stop_on_signals

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(240)


# ---------------------------------------------------------------- the handler


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(1)  # the handler runs at the next bytecode; never reached when it raises


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_each_stop_signal_raises_the_same_interrupt(signum, code):
    with pytest.raises(KeyboardInterrupt) as stop, stop_on_signals():
        _signal_self(signum)
    assert isinstance(stop.value, Stopped) and stop.value.exit_code == code


def test_a_second_signal_does_not_cut_the_clean_up_short():
    cleaned = False
    with pytest.raises(Stopped) as stop, stop_on_signals():
        try:
            _signal_self(signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while cleaning up
            time.sleep(0.2)
            cleaned = True
    assert cleaned and stop.value.signum == signal.SIGTERM


def test_handlers_are_restored_and_ignored_signals_stay_ignored():
    before_term = signal.getsignal(signal.SIGTERM)
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not before_term
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing raised
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGTERM) is before_term
    finally:
        signal.signal(signal.SIGHUP, previous_hup)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_upscale_stopped_by_a_signal_exits_128_plus_it_in_one_line(tmp_path, capsys, monkeypatch, signum, code):
    from media_factory import make_video

    def stopped(spec, reporter):
        _signal_self(signum)

    monkeypatch.setattr("seedvr_cli.run.upscale.run_upscale", stopped)
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "--devices", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted ("), err
    assert "run the same command again to resume" in lines[0]


def test_other_commands_stopped_by_sigterm_exit_143(capsys, monkeypatch):
    def stopped(*args, **kwargs):
        _signal_self(signal.SIGTERM)

    monkeypatch.setattr("seedvr_cli.weights.download.find_local", stopped)
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "list"])
    assert exit_info.value.code == 143
    assert "interrupted (SIGTERM)" in capsys.readouterr().err


# ---------------------------------------------------------------- workers and journal

DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from seedvr_cli.cli.stopsignals import Stopped, stop_on_signals
    from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
    from seedvr_cli.parallel.fakes import FakeProcessorFactory, RawFileSink, SyntheticSource, fake_chunks

    if __name__ == "__main__":
        out, workdir = Path(sys.argv[1]), Path(sys.argv[2])
        source = SyntheticSource(90, height=6, width=5)
        tasks = fake_chunks(90, size=9, overlap=3, windows_per_chunk=2)
        try:
            with stop_on_signals():
                with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory(delay_s=0.4)) as pool:
                    run_job(pool, source=source, tasks=tasks, workdir=workdir, key="job", sink=RawFileSink(out))
        except Stopped as stop:
            print(f"interrupted ({stop})", file=sys.stderr)
            sys.exit(stop.exit_code)
    """
)


@pytest.mark.parametrize("whole_group", [False, True], ids=["kill-parent", "group-like-systemd"])
def test_sigterm_stops_workers_together_and_keeps_the_journal(tmp_path, whole_group):
    """``kill`` and Docker signal the parent only; systemd and Slurm the whole group. Either way the
    parent stops the workers (they ignore the signal, as they ignore Ctrl-C) and cleans up."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out, workdir = tmp_path / "out.raw", tmp_path / ".out.raw.seedvr-job"
    run = subprocess.Popen([sys.executable, str(script), str(out), str(workdir)],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(workdir.glob("chunk-*.json"))) < 2:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # The workers, forked by the fork server (not the server itself or the resource tracker).
        workers = [p for p in psutil.Process(run.pid).children(recursive=True) if p.ppid() != run.pid]
        if whole_group:
            os.killpg(run.pid, signal.SIGTERM)
        else:
            run.send_signal(signal.SIGTERM)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        stderr = run.stderr.read().decode()
        run.stderr.close()
    _, alive = psutil.wait_procs(workers, timeout=2)
    for process in alive:
        process.kill()
    assert run.returncode == 143, stderr
    assert stderr.strip() == "interrupted (SIGTERM)", stderr
    assert workers and not alive, "workers outlived the run"
    assert not out.exists() and not (tmp_path / ".out.raw.partial").exists(), "the partial output is dropped"
    assert len(list(workdir.glob("chunk-*.json"))) >= 2, "finished chunks stay journaled"


# ---------------------------------------------------------------- a real `seedvr upscale`


def test_sigterm_mid_run_cleans_up_and_the_rerun_resumes(tmp_path, capsys, checkpoints):
    """SIGTERM to a real run (as ``kill`` or Docker send it): 143 and one line, no partial output,
    no lock file, no temporary folder, no worker left; the finished chunks resume."""
    import json

    import av
    from conftest import REPO_ROOT
    from media_factory import make_video

    dit, vae = checkpoints
    work = tmp_path / "work"
    work.mkdir()
    clip = make_video(work / "clip.mp4", frames=40)
    output = work / "up.mkv"
    args = [str(clip), "-o", str(output), "--model", str(dit), "--vae", str(vae), "--devices", "cpu",
            "--resolution", "64", "--batch-size", "5", "--temporal-overlap", "2", "--chunk-windows", "1",
            "--codec", "ffv1"]
    temp = tmp_path / "tmp"
    temp.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "seedvr_cli", "upscale", *args, "--log-format", "json"],
                           cwd=REPO_ROOT, env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stdout:
            event = json.loads(line)
            # Frames reached the encoder (its partial file exists) and work is left.
            if event.get("frames_written") and event["chunks_done"] < event["chunks_total"]:
                break
        workers = [p for p in psutil.Process(run.pid).children(recursive=True) if p.ppid() != run.pid]
        # The encoder runs on a thread of its own: it opens the partial file a moment after the
        # frames were handed to it (and reported as written).
        deadline = time.monotonic() + 30
        while not list(work.glob(".up.partial-*")) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        assert list(work.glob(".up.partial-*")) and list(temp.glob("seedvr-stats-*"))
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        after = [json.loads(line) for line in run.stdout.read().splitlines() if line.strip()]
        stderr = run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()
        run.stderr.close()
    _, alive = psutil.wait_procs(workers, timeout=2)
    for process in alive:
        process.kill()
    assert run.returncode == 143, stderr
    interrupted = [e for e in after if "interrupted" in e.get("text", "")]
    assert len(interrupted) == 1 and after[-1] is interrupted[0] and stderr == "", (after, stderr)
    assert interrupted[0]["text"].startswith("interrupted (SIGTERM); finished chunks are kept")
    assert workers and not alive, "workers outlived the run"
    kept = sorted(p.name for p in work.iterdir())
    assert [name for name in kept if name.startswith(".up.mkv.seedvr-") and not name.endswith(".lock")], kept
    assert not [name for name in kept if "partial" in name or name.endswith(".lock")], kept
    assert list(temp.iterdir()) == [], "temporary folders stayed"

    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0, err
    resumed = [line.strip() for line in err.splitlines() if "chunks resumed" in line]
    assert resumed and not resumed[0].startswith("0 of"), err
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 40
    assert sorted(p.name for p in work.iterdir()) == ["clip.mp4", "up.mkv"]
