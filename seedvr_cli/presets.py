"""Named sets of ``seedvr upscale`` flag values, read from ``configs/presets/NAME.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seedvr_cli.errors import UsageError
from seedvr_cli.resources import configs_dir, read_json

# Flags a preset may set (the ``seedvr upscale`` parameter names).
PRESET_KEYS = frozenset({
    "model", "vae", "dtype", "resolution", "max_resolution", "scale", "batch_size", "temporal_overlap",
    "prepend_frames", "color_correction", "input_noise_scale", "latent_noise_scale", "seed", "codec", "crf",
    "max_vram", "vram", "blocks_to_swap", "swap_io_components", "vae_tiling", "vae_tile_size", "vae_tile_overlap",
    "vae_offload_device",
})


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict[str, Any]


def preset_names() -> list[str]:
    folder = configs_dir() / "presets"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load_preset(name: str) -> Preset:
    names = preset_names()
    if name not in names:
        raise UsageError(f"--profile {name}: unknown profile; choose one of {', '.join(names) or '(none installed)'}")
    data = read_json(f"presets/{name}.json")
    settings = dict(data.get("settings", {}))
    unknown = sorted(set(settings) - PRESET_KEYS)
    if unknown:
        raise UsageError(f"preset {name} ({configs_dir() / 'presets' / (name + '.json')}) sets unknown keys: "
                         f"{', '.join(unknown)}")
    return Preset(name, str(data.get("description", "")), settings)
