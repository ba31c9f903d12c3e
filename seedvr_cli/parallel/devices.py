"""Which compute devices get a worker: parsing ``--devices`` and listing what is visible.

Indices are *visible* CUDA ordinals, the numbering torch uses after ``CUDA_VISIBLE_DEVICES``.
Each worker process is later pinned to its one GPU by narrowing ``CUDA_VISIBLE_DEVICES`` in the
child (``worker_environment``), so a worker can never touch, or create a context on, another GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from seedvr_cli.errors import UsageError

_HINT = "use --devices all, a list such as 0,1, a range such as 0-3, or cpu (cpu,cpu for two CPU workers)"


@dataclass(frozen=True)
class DeviceSpec:
    """One worker slot: a visible CUDA device, or the n-th CPU worker."""

    kind: Literal["cuda", "cpu"]
    index: int

    @property
    def label(self) -> str:
        """Unique name of the worker slot in messages, results and progress (``cuda:1``, ``cpu:0``)."""
        return f"{self.kind}:{self.index}"

    @property
    def worker_torch_device(self) -> str:
        """The torch device string *inside* the worker, where only this GPU is visible."""
        return "cuda:0" if self.kind == "cuda" else "cpu"


def visible_cuda_count() -> int:
    """Number of CUDA devices torch can see in this process (after ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _visible_note() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (CUDA_VISIBLE_DEVICES={value})" if value is not None else ""


def _parse_index(text: str, spec: str) -> int:
    body = text[len("cuda:"):] if text.startswith("cuda:") else text
    if not body.isdigit():
        raise UsageError(f"--devices {spec}: '{text}' is not a device; {_HINT}")
    return int(body)


def parse_devices(spec: str, *, cuda_count: int | None = None) -> list[DeviceSpec]:
    """Turn a ``--devices`` value into worker slots, checked against the visible devices.

    Accepted: ``all`` (every visible GPU), ``auto`` (every visible GPU, else one CPU worker),
    ``0,1``, ``0-3``, ``cuda:1``, ``cpu``, ``cpu,cpu`` (one CPU worker per item). ``cuda_count``
    overrides the probe (tests).
    """
    text = spec.strip().lower()
    if not text:
        raise UsageError(f"--devices is empty; {_HINT}")
    needs_cuda = {item.strip() for item in text.split(",")} != {"cpu"}
    # CPU-only specs never import torch's CUDA probe (keeps `--devices cpu` cheap and GPU-free).
    count = (visible_cuda_count() if cuda_count is None else cuda_count) if needs_cuda else 0
    if text in ("all", "auto"):
        if count == 0:
            if text == "auto":
                return [DeviceSpec("cpu", 0)]
            raise UsageError(f"--devices all: no CUDA device is visible{_visible_note()}; use --devices cpu to run on the CPU")
        return [DeviceSpec("cuda", i) for i in range(count)]

    items = [item.strip() for item in text.split(",")]
    devices: list[DeviceSpec] = []
    cpu_workers = 0
    for item in items:
        if not item:
            raise UsageError(f"--devices {spec}: empty item; {_HINT}")
        if item in ("all", "auto"):
            raise UsageError(f"--devices {spec}: '{item}' cannot be combined with other devices; {_HINT}")
        if item == "cpu":
            devices.append(DeviceSpec("cpu", cpu_workers))
            cpu_workers += 1
            continue
        if "-" in item:
            first_text, _, last_text = item.partition("-")
            first, last = _parse_index(first_text, spec), _parse_index(last_text, spec)
            if last < first:
                raise UsageError(f"--devices {spec}: range '{item}' runs backwards; write {last}-{first}")
            indices = range(first, last + 1)
        else:
            indices = range(_parse_index(item, spec), _parse_index(item, spec) + 1)
        for index in indices:
            if index >= count:
                visible = ", ".join(str(i) for i in range(count)) or "none"
                raise UsageError(
                    f"--devices {spec}: GPU {index} is not visible{_visible_note()}; visible GPUs: {visible}"
                    + ("; use --devices cpu" if count == 0 else "")
                )
            device = DeviceSpec("cuda", index)
            if device in devices:
                raise UsageError(f"--devices {spec}: GPU {index} is listed twice; one worker per GPU")
            devices.append(device)
    if cpu_workers and len(devices) > cpu_workers:
        raise UsageError(f"--devices {spec}: mixes GPUs and CPU workers; a CPU worker would hold back the GPUs")
    return devices


def worker_environment(device: DeviceSpec) -> dict[str, str]:
    """Environment a worker sets before touching CUDA, so that only its own GPU is visible.

    The child inherits the parent's ``CUDA_VISIBLE_DEVICES``; the visible ordinal ``i`` is its
    i-th entry (which may be a UUID), or simply ``i`` when the variable is unset.
    """
    if device.kind == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    env = {}
    if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
        # Windows of one size allocate and free the same shapes over and over, but phases differ;
        # with fixed segments the cached blocks of one phase fragment the next one's, and under a
        # --max-vram cap that fails allocations the estimate allows (the 8 GiB row of the memory table).
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is None:
        return {**env, "CUDA_VISIBLE_DEVICES": str(device.index)}
    entries = [entry.strip() for entry in inherited.split(",") if entry.strip()]
    if device.index >= len(entries):
        raise UsageError(f"GPU {device.index} is not in CUDA_VISIBLE_DEVICES={inherited}")
    return {**env, "CUDA_VISIBLE_DEVICES": entries[device.index]}


def thread_environment(workers: int) -> dict[str, str]:
    """CPU threads per worker: the cores shared out, unless the user chose with ``OMP_NUM_THREADS``.

    Every worker's torch would otherwise start one thread per core, and N workers would fight over
    the cores in their CPU-side steps (colour conversion, copies, decoding).
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, workers)))}


def list_devices() -> list[tuple[str, str, str]]:
    """Printable rows ``(device, name, details)`` for ``--list-devices``: every visible GPU and the CPU."""
    import torch

    rows: list[tuple[str, str, str]] = []
    for index in range(visible_cuda_count()):
        props = torch.cuda.get_device_properties(index)
        rows.append(
            (
                f"cuda:{index}",
                props.name,
                f"{props.total_memory / 1024**3:.1f} GiB, sm_{props.major}{props.minor}{_visible_note()}",
            )
        )
    cores = os.cpu_count() or 1
    rows.append(("cpu", "CPU", f"{cores} cores; --devices cpu (cpu,cpu for two workers) runs without a GPU, slowly"))
    return rows
