"""Named sets of ``seedvr upscale`` flag values, read from ``configs/presets/NAME.json`` or from a
user's own JSON file in the same format (``{"description": ..., "settings": {flag: value}}``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seedvr_cli.errors import UsageError
from seedvr_cli.resources import configs_dir, read_json

# Flags a preset may set (the ``seedvr upscale`` parameter names).
PRESET_KEYS = frozenset({
    "model", "vae", "dtype", "resolution", "max_resolution", "scale", "batch_size", "temporal_overlap",
    "prepend_frames", "color_correction", "input_noise_scale", "latent_noise_scale", "seed", "codec", "crf",
    "max_vram", "vram", "blocks_to_swap", "swap_io_components", "vae_tiling", "vae_tile_size", "vae_tile_overlap",
    "vae_tile_statistics", "vae_offload_device", "dit_tiling", "dit_tile_size", "dit_tile_overlap",
})


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict[str, Any]
    source: Path | None = None  # the file it was read from


def preset_names() -> list[str]:
    folder = configs_dir() / "presets"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def preset_descriptions() -> dict[str, str]:
    """Every installed preset's description, by name (for ``--help``); unreadable files say so."""
    descriptions = {}
    for name in preset_names():
        try:
            descriptions[name] = str(read_json(f"presets/{name}.json").get("description", ""))
        except (OSError, ValueError, AttributeError):
            descriptions[name] = "(unreadable preset file)"
    return descriptions


def load_preset(name: str) -> Preset:
    """The installed preset ``name``, or the preset in the JSON file ``name`` points at."""
    names = preset_names()
    if name in names:
        source = configs_dir() / "presets" / f"{name}.json"
    elif name.endswith(".json") or Path(name).expanduser().is_file():
        source = Path(name).expanduser()
        if not source.is_file():
            raise UsageError(f"--profile {name}: no such file; give an existing JSON file or one of "
                             f"{', '.join(names) or '(none installed)'}")
    else:
        raise UsageError(f"--profile {name}: unknown profile; choose one of {', '.join(names) or '(none installed)'} "
                         "or give the path of a JSON file in their format")
    try:
        data = json.loads(source.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"--profile {source}: cannot read it as JSON ({err}); see configs/README.md for the format") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings", {}), dict):
        raise UsageError(f"--profile {source}: expected an object with \"settings\": {{flag: value, ...}} "
                         "(see configs/README.md)")
    settings = dict(data.get("settings", {}))
    unknown = sorted(set(settings) - PRESET_KEYS)
    if unknown:
        raise UsageError(f"preset {source.stem} ({source}) sets unknown keys: {', '.join(unknown)}; "
                         f"a preset may set {', '.join(sorted(PRESET_KEYS))}")
    return Preset(source.stem, str(data.get("description", "")), settings, source)
