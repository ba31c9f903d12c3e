"""Free GPU memory for --vram auto, read without a CUDA context: device mapping and the CLI's use of it."""

from __future__ import annotations

import pytest
from media_factory import make_video

from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.gpu_memory import GPUMemory, read_gpu_memory, visible_gpu_memory

GIB = 2**30


class FakeNVML:
    """Three GPUs in PCI order; the middle one has the least free memory."""

    def __init__(self, names=("H200", "H200", "H200")) -> None:
        self.memory = [GPUMemory(100 * GIB, 141 * GIB), GPUMemory(20 * GIB, 141 * GIB), GPUMemory(60 * GIB, 141 * GIB)]
        self.names = names
        self.uuids = {"GPU-aaa": 0, "GPU-bbb": 1, "GPU-ccc": 2}

    def count(self) -> int:
        return len(self.memory)

    def by_index(self, index: int) -> GPUMemory:
        return self.memory[index]

    def by_uuid(self, uuid: str) -> GPUMemory:
        return self.memory[self.uuids[uuid]]

    def name(self, index: int) -> str:
        return self.names[index]


def test_visible_indices_follow_cuda_visible_devices():
    nvml = FakeNVML()
    assert visible_gpu_memory([0, 2], nvml, {}) == [nvml.memory[0], nvml.memory[2]]
    # Visible 0 is physical 2 and visible 1 is physical 0.
    assert visible_gpu_memory([0, 1], nvml, {"CUDA_VISIBLE_DEVICES": "2,0"}) == [nvml.memory[2], nvml.memory[0]]
    assert visible_gpu_memory([0], nvml, {"CUDA_VISIBLE_DEVICES": "GPU-bbb"}) == [nvml.memory[1]]


def test_unclear_mappings_take_the_smallest_free_memory():
    smallest = FakeNVML().memory[1]
    # Mixed GPU models: CUDA's fastest-first order may differ from NVML's PCI order.
    assert visible_gpu_memory([0], FakeNVML(("H200", "A100", "H200")), {}) == [smallest]
    assert visible_gpu_memory([0], FakeNVML(("H200", "A100", "H200")), {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) == [
        FakeNVML().memory[0]]
    assert visible_gpu_memory([0], FakeNVML(), {"CUDA_VISIBLE_DEVICES": "MIG-1234"}) == [smallest]


def test_without_nvml_there_is_no_answer(monkeypatch):
    import ctypes

    def no_library(*args, **kwargs):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert read_gpu_memory([0]) is None


def test_auto_fits_the_free_memory_of_the_gpus_without_max_vram(tmp_path, capsys, monkeypatch, checkpoints):
    import seedvr_cli.run.upscale as upscale
    from seedvr_cli.cli import main

    monkeypatch.setattr(upscale, "parse_devices", lambda spec: [DeviceSpec("cuda", 0), DeviceSpec("cuda", 1)])
    free = {0: 8 * GIB, 1: 2.5 * GIB}
    monkeypatch.setattr(upscale, "read_gpu_memory", lambda indices: [GPUMemory(int(free[i]), 24 * GIB) for i in indices])
    dit, vae = checkpoints
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "-o", str(tmp_path / "o.mkv"), "--model", str(dit), "--vae", str(vae),
              "--batch-size", "5", "--resolution", "1080", "--devices", "0,1", "--dry-run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 0
    # The smaller of the two, less a CUDA context's share (2.5 - 0.75 GiB).
    assert "--vram auto, 1.8 GiB free on cuda:1: BlockSwap of all 4 blocks" in err
