"""Free memory of the GPUs a run will use, read in the parent without creating a CUDA context.

``--vram auto`` fits the run to what the workers will find free, but the parent never initialises
CUDA (a context costs ~0.5 GiB on every GPU it touches, and forked workers must not inherit one).
NVML, the library behind ``nvidia-smi``, answers without a context; it ships with the driver, so
it is loaded with ctypes rather than adding a Python dependency for four calls.

NVML numbers GPUs in PCI bus order and knows nothing of ``CUDA_VISIBLE_DEVICES``; CUDA numbers
them fastest first. Visible indices are mapped through ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs);
where the orders could differ (mixed GPU models without ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) or the
mapping is unclear (MIG), the smallest free memory of all GPUs stands for each device: a fit that
is too careful beats one that runs out of memory.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GPUMemory:
    free: int  # bytes
    total: int


class MemorySource(Protocol):
    def count(self) -> int: ...

    def by_index(self, index: int) -> GPUMemory: ...

    def by_uuid(self, uuid: str) -> GPUMemory: ...

    def name(self, index: int) -> str: ...


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class NVML:
    """The four NVML calls we need. Raises OSError when the library or a call fails."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        self._check(self.lib.nvmlInit_v2())

    def _check(self, status: int) -> None:
        if status != 0:
            raise OSError(f"NVML call failed with status {status}")

    def count(self) -> int:
        count = ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        return count.value

    def _handle(self, index: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)))
        return handle

    def _memory(self, handle: ctypes.c_void_p) -> GPUMemory:
        memory = _Memory()
        self._check(self.lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)))
        return GPUMemory(free=memory.free, total=memory.total)

    def by_index(self, index: int) -> GPUMemory:
        return self._memory(self._handle(index))

    def by_uuid(self, uuid: str) -> GPUMemory:
        handle = ctypes.c_void_p()
        self._check(self.lib.nvmlDeviceGetHandleByUUID(uuid.encode(), ctypes.byref(handle)))
        return self._memory(handle)

    def name(self, index: int) -> str:
        buffer = ctypes.create_string_buffer(96)
        self._check(self.lib.nvmlDeviceGetName(self._handle(index), buffer, ctypes.c_uint(96)))
        return buffer.value.decode(errors="replace")

    def close(self) -> None:
        self.lib.nvmlShutdown()


def visible_gpu_memory(visible: list[int], source: MemorySource, environ: dict[str, str]) -> list[GPUMemory]:
    """Memory of each visible CUDA index in ``visible``, as the workers will see it."""
    mask = environ.get("CUDA_VISIBLE_DEVICES")
    count = source.count()
    if mask is None:
        same_order = (environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
                      or len({source.name(i) for i in range(count)}) <= 1)
        if same_order:
            return [source.by_index(i) for i in visible]
        return [_smallest(source, count)] * len(visible)
    entries = [entry.strip() for entry in mask.split(",") if entry.strip()]
    found = []
    for index in visible:
        entry = entries[index] if index < len(entries) else ""
        if entry.isdigit() and int(entry) < count:
            found.append(source.by_index(int(entry)))
        elif entry.startswith("GPU-"):
            found.append(source.by_uuid(entry))
        else:  # MIG instances and anything else: be careful
            return [_smallest(source, count)] * len(visible)
    return found


def _smallest(source: MemorySource, count: int) -> GPUMemory:
    return min((source.by_index(i) for i in range(count)), key=lambda memory: memory.free)


def read_gpu_memory(visible: list[int]) -> list[GPUMemory] | None:
    """Free and total memory of the visible CUDA devices ``visible``; None where NVML cannot say."""
    try:
        nvml = NVML()
    except (OSError, AttributeError):
        return None
    try:
        return visible_gpu_memory(visible, nvml, dict(os.environ))
    except (OSError, AttributeError):
        return None
    finally:
        nvml.close()
