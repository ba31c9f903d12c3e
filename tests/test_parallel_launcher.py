"""How workers start: forked from a fork server with torch imported (Linux), yet seeing the parent's
environment as it is when they start, and only their own devices."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.fakes import HashSink, SyntheticSource, fake_chunks
from seedvr_cli.parallel.launcher import start_worker_server, uses_fork_server, worker_context
from seedvr_cli.run.preload import WORKER_MODULES

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class EnvironmentProbeFactory:
    """Writes what a worker sees to ``log_dir/<device>.json``, then fails (there is nothing to process)."""

    log_dir: str

    def __call__(self, device: DeviceSpec):
        import sys

        torch_before = "torch" in sys.modules
        import torch

        report = {
            "mark": os.environ.get("SEEDVR_TEST_MARK"),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": torch.get_num_threads(),
            "parent": os.getppid(),
            "torch_was_imported": torch_before,
        }
        Path(self.log_dir, device.label.replace(":", "")).write_text(json.dumps(report))
        raise RuntimeError("probe only")


def test_workers_see_the_parents_environment_as_it_is_when_they_start(tmp_path, monkeypatch):
    start_worker_server(preload=WORKER_MODULES)  # as `seedvr upscale` does, before anything below is set
    monkeypatch.setenv("SEEDVR_TEST_MARK", "set after the server started")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice beats the per-worker share (1 here)
    with WorkerPool(parse_devices("cpu,cpu"), EnvironmentProbeFactory(str(tmp_path))) as pool:
        with pytest.raises(Exception, match="every device failed"):
            run_job(pool, source=SyntheticSource(1), tasks=fake_chunks(1, size=1, overlap=0),
                    workdir=tmp_path / "w", key="k", sink=HashSink(), options=RunOptions(device_max_failures=1))
    for label in ("cpu0", "cpu1"):
        report = json.loads((tmp_path / label).read_text())
        assert report["mark"] == "set after the server started"
        assert report["cuda_visible"] == ""
        assert report["threads"] == 2
        if uses_fork_server():
            # Forked from the server, not spawned by this process, with torch already imported.
            assert report["parent"] != os.getpid()
            assert report["torch_was_imported"]


def test_the_start_method_never_plain_fork():
    # A plain fork would copy a parent that may have initialised CUDA.
    assert worker_context().get_start_method() in ("forkserver", "spawn")


def test_a_fork_server_that_cannot_start_falls_back_to_spawn(monkeypatch):
    from multiprocessing import forkserver

    from seedvr_cli.parallel import launcher

    if not launcher.uses_fork_server():
        pytest.skip("workers are spawned on this platform anyway")

    def refuse():
        raise OSError("no room for the socket")

    monkeypatch.setattr(forkserver, "ensure_running", refuse)
    monkeypatch.setattr(launcher, "_server_failed", False)
    launcher.start_worker_server()
    assert worker_context().get_start_method() == "spawn"
