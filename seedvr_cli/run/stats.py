"""Per-device numbers for the run summary: each worker writes its peak VRAM and phase times to a
small JSON file, which the parent reads when the run ends (workers are separate processes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import ChunkFrames
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.run.processor import InputContext, SeedVRProcessor, SeedVRProcessorFactory


@dataclass(frozen=True)
class StatsRecordingFactory:
    """Wraps a factory so that each worker records its peak VRAM and phase times in ``stats_dir``."""

    factory: SeedVRProcessorFactory
    stats_dir: str

    def __call__(self, device: DeviceSpec):
        return _StatsRecordingProcessor(self.factory(device), Path(self.stats_dir) / f"{device.label.replace(':', '')}.json",
                                        device.label)


class _StatsRecordingProcessor:
    def __init__(self, inner: SeedVRProcessor, path: Path, label: str) -> None:
        self.inner, self.path, self.label = inner, path, label

    def process(self, task: ChunkTask, frames, context: InputContext) -> ChunkFrames:
        out = self.inner.process(task, frames, context)
        peak = torch.cuda.max_memory_allocated(self.inner.device) if self.inner.device.type == "cuda" else 0
        stats = {"device": self.label, "peak_vram_bytes": peak, "peak_phase": self.inner.times.peak_phase,
                 "phase_seconds": self.inner.times.seconds}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.path)
        return out

    @property
    def notes(self) -> list[str]:
        return self.inner.notes

    def close(self) -> None:
        self.inner.close()


def read_stats(stats_dir: str) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Peak VRAM (GiB) per device, seconds per phase summed over devices, and per device the phase
    its peak was reached in."""
    peaks: dict[str, float] = {}
    phases: dict[str, float] = {}
    peak_phases: dict[str, str] = {}
    for path in Path(stats_dir).glob("*.json"):
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if stats.get("peak_vram_bytes"):
            peaks[stats["device"]] = stats["peak_vram_bytes"] / 2**30
            if stats.get("peak_phase"):
                peak_phases[stats["device"]] = stats["peak_phase"]
        for phase, seconds in stats.get("phase_seconds", {}).items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    return peaks, phases, peak_phases
