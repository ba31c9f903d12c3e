"""A real run killed with SIGKILL mid-way resumes to the same bytes; main-process memory stays flat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.fakes import FakeProcessorFactory, HashSink, SyntheticSource, fake_chunks, run_serially

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)  # a hang fails fast

DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
    from seedvr_cli.parallel.fakes import FakeProcessorFactory, RawFileSink, SyntheticSource, fake_chunks

    if __name__ == "__main__":
        out, workdir, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
        source = SyntheticSource(90, height=6, width=5)
        tasks = fake_chunks(90, size=9, overlap=3, windows_per_chunk=2)
        with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory(delay_s=delay)) as pool:
            result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key="job", sink=RawFileSink(out))
        print(json.dumps({"resumed": result.chunks_resumed, "processed": result.chunks_processed,
                          "workdir": str(result.workdir)}))
    """
)


def test_resume_after_sigkill_gives_the_uninterrupted_output(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out, workdir = tmp_path / "out.raw", tmp_path / ".out.raw.seedvr-job"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), str(out), str(workdir)]

    victim = subprocess.Popen([*command, "0.25"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(workdir.glob("chunk-*.json"))) < 4:  # of 8 chunks
            assert victim.poll() is None, victim.stderr.read().decode()
            assert time.monotonic() < deadline, "the driver journaled no chunks"
            time.sleep(0.05)
        workers = psutil.Process(victim.pid).children(recursive=True)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        victim.stdout.close()
        victim.stderr.close()
    # Orphaned workers notice that their parent is gone and leave by themselves.
    _, alive = psutil.wait_procs(workers, timeout=20)
    for process in alive:
        process.kill()
    assert not alive, "workers outlived their killed parent"
    journaled = len(list(workdir.glob("chunk-*.json")))
    assert not out.exists(), "no output before the run completes"

    finished = subprocess.run([*command, "0"], env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    source = SyntheticSource(90, height=6, width=5)
    tasks = fake_chunks(90, size=9, overlap=3, windows_per_chunk=2)
    assert report["resumed"] >= journaled >= 4 and report["processed"] + report["resumed"] == len(tasks)
    assert report["processed"] > 0 and not workdir.exists(), "resumed, then the work directory was removed"

    expected = run_serially(source, tasks, FakeProcessorFactory())
    assert out.read_bytes() == expected.tobytes()


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_main_process_memory_does_not_grow_with_the_clip(tmp_path):
    frames = 4000
    source = SyntheticSource(frames, height=48, width=48)  # 96x96 out: 108 MiB of output in all
    tasks = fake_chunks(frames, size=21, overlap=4, windows_per_chunk=4)
    samples: list[tuple[int, float]] = []
    sink = HashSink()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((sink.count, _rss_mib()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    with WorkerPool(parse_devices("cpu,cpu"), FakeProcessorFactory()) as pool:
        sampler.start()
        try:
            result = run_job(pool, source=source, tasks=tasks, workdir=tmp_path / "w", key="long", sink=sink,
                             options=RunOptions(durable=False, resume=False, max_in_flight=4))
        finally:
            stop.set()
            sampler.join()
    assert result.complete and sink.count == frames
    assert not (tmp_path / "w").exists()

    # After the first tenth (buffers, thread stacks and imports settle), the curve must stay flat.
    settled = [rss for count, rss in samples if count >= frames // 10]
    early = [rss for count, rss in samples if frames // 10 <= count < frames // 4]
    assert len(settled) > 10 and early
    growth = max(settled) - min(early)
    output_mib = frames * 96 * 96 * 3 / 2**20
    print(f"RSS after 10%: {min(early):.1f} MiB, peak {max(settled):.1f} MiB, growth {growth:.1f} MiB "
          f"for {output_mib:.0f} MiB of output in {result.elapsed_s:.1f} s ({len(samples)} samples)")
    assert growth < 16, f"main-process RSS grew by {growth:.1f} MiB over the clip"


@pytest.mark.parametrize("resume", [True, False])
def test_uninterrupted_runs_with_and_without_resume_agree(tmp_path, resume):
    source = SyntheticSource(40, height=4, width=4)
    tasks = fake_chunks(40, windows_per_chunk=1)
    sink = HashSink()
    with WorkerPool(parse_devices("cpu"), FakeProcessorFactory()) as pool:
        run_job(pool, source=source, tasks=tasks, workdir=tmp_path / "w", key="k", sink=sink,
                options=RunOptions(resume=resume))
    expected = run_serially(source, tasks, FakeProcessorFactory())
    import hashlib

    assert sink.hexdigest() == hashlib.sha256(np.ascontiguousarray(expected).tobytes()).hexdigest()


def test_ctrl_c_stops_promptly_and_keeps_the_journal(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out, workdir = tmp_path / "out.raw", tmp_path / ".out.raw.seedvr-job"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its own process group, which then gets SIGINT as a terminal's Ctrl-C would deliver it.
    run = subprocess.Popen([sys.executable, str(script), str(out), str(workdir), "0.3"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(workdir.glob("chunk-*.json"))) < 2:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        workers = psutil.Process(run.pid).children(recursive=True)
        os.killpg(run.pid, signal.SIGINT)
        started = time.monotonic()
        run.wait(15)
        stopped_after = time.monotonic() - started
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        stderr = run.stderr.read().decode()
        run.stderr.close()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for process in alive:
        process.kill()
    assert "KeyboardInterrupt" in stderr and not alive
    print(f"stopped {stopped_after:.2f} s after Ctrl-C")
    assert stopped_after < 5, "Ctrl-C does not wait for running chunks"
    assert not out.exists() and not list(tmp_path.glob(".out.raw.partial")), "the partial output is dropped"
    assert len(list(workdir.glob("chunk-*.json"))) >= 2, "finished chunks stay journaled"
