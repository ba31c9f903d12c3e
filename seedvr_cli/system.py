"""Facts about the running system: library versions, compute devices, processes."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]
    bf16: bool


@dataclass(frozen=True)
class SystemInfo:
    versions: dict[str, str]
    python: str
    platform: str
    cuda_runtime: str | None
    devices: list[DeviceInfo] = field(default_factory=list)


_LIBRARIES = ("seedvr-cli", "torch", "triton", "av", "safetensors", "gguf", "huggingface_hub",
              "numpy", "opencv-python-headless", "typer", "rich")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_system_info() -> SystemInfo:
    import torch

    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            devices.append(
                DeviceInfo(
                    index=index,
                    name=props.name,
                    total_bytes=total,
                    free_bytes=free,
                    capability=(props.major, props.minor),
                    bf16=props.major >= 8,
                )
            )
    return SystemInfo(
        versions={name: _version(name) for name in _LIBRARIES},
        python=platform.python_version(),
        platform=platform.platform(),
        cuda_runtime=torch.version.cuda,
        devices=devices,
    )


def render_system_info(info: SystemInfo):
    from rich.table import Table

    table = Table(title="seedvr-cli", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("python", f"{info.python} ({info.platform})")
    for name, version in info.versions.items():
        table.add_row(name, version)
    table.add_row("CUDA runtime", info.cuda_runtime or "none (CPU-only build of torch)")
    if not info.devices:
        table.add_row("devices", "no CUDA device visible: runs use --device cpu (slow)")
    for dev in info.devices:
        gib = 1024**3
        table.add_row(
            f"cuda:{dev.index}",
            f"{dev.name}, sm_{dev.capability[0]}{dev.capability[1]}, "
            f"{dev.free_bytes / gib:.1f} of {dev.total_bytes / gib:.1f} GiB free, "
            f"bf16 {'yes' if dev.bf16 else 'no'}",
        )
    return table


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still exists (one of another user's counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
