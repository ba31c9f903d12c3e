"""--devices parsing against the visible devices, the per-worker CUDA_VISIBLE_DEVICES, --list-devices rows."""

from __future__ import annotations

import pytest

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.devices import DeviceSpec, list_devices, parse_devices, thread_environment, worker_environment


def labels(spec: str, cuda_count: int) -> list[str]:
    return [d.label for d in parse_devices(spec, cuda_count=cuda_count)]


def test_lists_ranges_and_all():
    assert labels("all", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert labels("0,2", 4) == ["cuda:0", "cuda:2"]
    assert labels("1-3", 4) == ["cuda:1", "cuda:2", "cuda:3"]
    assert labels("0, cuda:3", 4) == ["cuda:0", "cuda:3"]
    assert labels("0-1,3", 4) == ["cuda:0", "cuda:1", "cuda:3"]


def test_cpu_workers_are_numbered_and_need_no_gpu():
    assert labels("cpu", 0) == ["cpu:0"]
    assert labels("cpu,cpu", 0) == ["cpu:0", "cpu:1"]
    assert labels("auto", 0) == ["cpu:0"]
    assert labels("auto", 2) == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu,cpu")[1] == DeviceSpec("cpu", 1)  # no CUDA probe involved


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        ("2", 2, "GPU 2 is not visible"),
        ("0-5", 2, "GPU 2 is not visible"),
        ("all", 0, "no CUDA device is visible"),
        ("0", 0, "use --devices cpu"),
        ("1,1", 2, "listed twice"),
        ("3-1", 4, "runs backwards"),
        ("gpu0", 2, "'gpu0' is not a device"),
        ("0,,1", 2, "empty item"),
        ("", 2, "empty"),
        ("all,0", 2, "cannot be combined"),
        ("0,cpu", 2, "mixes GPUs and CPU"),
    ],
)
def test_bad_specs_are_usage_errors_naming_the_problem(spec, count, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_devices(spec, cuda_count=count)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_error_names_the_visible_devices_and_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with pytest.raises(UsageError, match=r"CUDA_VISIBLE_DEVICES=4,6\); visible GPUs: 0, 1"):
        parse_devices("2", cuda_count=2)


def test_worker_environment_pins_one_physical_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "backend:native")  # the user's own allocator settings win
    assert worker_environment(DeviceSpec("cuda", 1)) == {"CUDA_VISIBLE_DEVICES": "1"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-8f2a,5")
    assert worker_environment(DeviceSpec("cuda", 0)) == {"CUDA_VISIBLE_DEVICES": "3"}
    assert worker_environment(DeviceSpec("cuda", 1)) == {"CUDA_VISIBLE_DEVICES": "GPU-8f2a"}
    assert worker_environment(DeviceSpec("cpu", 1)) == {"CUDA_VISIBLE_DEVICES": ""}
    assert DeviceSpec("cuda", 1).worker_torch_device == "cuda:0"


def test_gpu_workers_get_expandable_segments_unless_the_user_set_the_allocator(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert worker_environment(DeviceSpec("cuda", 0))["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in worker_environment(DeviceSpec("cpu", 0))


def test_list_devices_rows_are_printable():
    import torch

    rows = list_devices()
    assert rows[-1][0] == "cpu"
    assert len(rows) == torch.cuda.device_count() + 1
    assert all(len(row) == 3 and all(isinstance(cell, str) and cell for cell in row) for row in rows)


def test_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert thread_environment(2) == {"OMP_NUM_THREADS": "16"}
    assert thread_environment(64) == {"OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_environment(2) == {}
