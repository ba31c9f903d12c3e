"""The worker pool on real GPUs: each worker sees only its GPU; 1 GPU and 2 GPUs give the same bytes, faster.

Run on a GPU machine with ``pytest -m gpu tests/test_parallel_gpu.py -s``; the measured numbers are
printed (wall time, speed-up, main-process RSS, per-GPU memory).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.fakes import HashSink, SyntheticSource, TorchConvFactory, fake_chunks

pytestmark = pytest.mark.gpu


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


@dataclass(frozen=True)
class DeviceProbeFactory:
    """Records, from inside each worker, which GPUs it can see (then fails: nothing to process)."""

    log_dir: str

    def __call__(self, device: DeviceSpec):
        import torch

        props = torch.cuda.get_device_properties(0)
        report = {"count": torch.cuda.device_count(), "uuid": str(props.uuid), "torch_device": device.worker_torch_device}
        Path(self.log_dir, device.label).write_text(json.dumps(report))
        raise RuntimeError("probe only")


def test_each_worker_sees_only_its_own_gpu(tmp_path):
    import torch

    count = _gpu_count()
    if count < 1:
        pytest.skip("needs a GPU")
    source = SyntheticSource(1)
    tasks = fake_chunks(1, size=1, overlap=0)
    with WorkerPool(parse_devices("all"), DeviceProbeFactory(str(tmp_path))) as pool:
        with pytest.raises(Exception, match="every device failed"):
            run_job(pool, source=source, tasks=tasks, workdir=tmp_path / "w", key="k", sink=HashSink(),
                    options=RunOptions(device_max_failures=1))
    for index in range(count):
        report = json.loads((tmp_path / f"cuda:{index}").read_text())
        assert report["count"] == 1 and report["torch_device"] == "cuda:0"
        assert report["uuid"] == str(torch.cuda.get_device_properties(index).uuid)


class _Sampler:
    """Peak RSS of this process and peak used memory of each GPU (NVML), sampled every 50 ms."""

    def __init__(self, gpus: int) -> None:
        pynvml = pytest.importorskip("pynvml", reason="GPU memory is read through NVML (nvidia-ml-py)")

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
        self.rss = 0
        self.gpu = [0] * gpus
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.rss = max(self.rss, me.memory_info().rss)
            for i, handle in enumerate(self._handles):
                self.gpu[i] = max(self.gpu[i], self._nvml.nvmlDeviceGetMemoryInfo(handle).used)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _timed_run(devices: str, source, tasks, workdir: Path) -> dict:
    factory = TorchConvFactory(layers=12, channels=64)
    sink = HashSink("crc32")
    ready: list[float] = []
    started = time.monotonic()
    sampler = _Sampler(_gpu_count())
    with WorkerPool(parse_devices(devices), factory) as pool:
        result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key=devices, sink=sink,
                         options=RunOptions(durable=False),
                         progress=lambda e: ready.append(time.monotonic()) if e.kind == "ready" else None)
    wall = time.monotonic() - started
    sampler.stop()
    assert result.complete and result.clean
    return {
        "hash": sink.hexdigest(),
        "wall_s": wall,
        "after_ready_s": started + wall - min(ready),
        "rss_gib": sampler.rss / 2**30,
        "gpu_gib": [g / 2**30 for g in sampler.gpu],
    }


def test_two_gpus_match_one_gpu_and_are_faster(tmp_path):
    if _gpu_count() < 2:
        pytest.skip("needs two GPUs")
    frames = int(os.environ.get("SEEDVR_GPU_TEST_FRAMES", "240"))
    source = SyntheticSource(frames, height=540, width=960)  # 1920x1080 out
    tasks = fake_chunks(frames, size=13, overlap=3, windows_per_chunk=2)
    one = _timed_run("0", source, tasks, tmp_path / "one")
    two = _timed_run("0,1", source, tasks, tmp_path / "two")
    speedup = one["wall_s"] / two["wall_s"]
    print(f"\n{frames} frames 960x540 -> 1920x1080, {len(tasks)} chunks")
    for name, run in (("1 GPU", one), ("2 GPUs", two)):
        print(f"{name}: wall {run['wall_s']:.1f} s ({run['after_ready_s']:.1f} s after the first worker was ready), "
              f"{frames / run['wall_s']:.1f} fps, main RSS {run['rss_gib']:.2f} GiB, "
              f"GPU memory used {', '.join(f'{g:.1f}' for g in run['gpu_gib'])} GiB")
    print(f"speed-up {speedup:.2f}x wall, {one['after_ready_s'] / two['after_ready_s']:.2f}x after ready")
    assert one["hash"] == two["hash"], "1 GPU and 2 GPUs must give identical bytes"
    assert speedup > 1.5
