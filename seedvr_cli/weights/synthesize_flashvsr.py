"""Random-weight FlashVSR checkpoints in the published layout (for tests and benchmarks, never a
real model): ``diffusion_pytorch_model_streaming_dmd.safetensors`` (streamed to disk one tensor at
a time, so the 1.4B DiT never sits in memory whole) and ``LQ_proj_in.ckpt`` (``torch.save`` of a
plain state dict, readable with ``weights_only=True``).

Names and shapes come from the modules built on the meta device. Versions 1.0 and 1.1 publish the
same names and shapes; the version only names the folder's contents. Values depend only on
(seed, tensor name), as for the SeedVR2 files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seedvr_cli.models.flashvsr.dit import FlashDiT
from seedvr_cli.models.flashvsr.dit_config import flash_dit_config
from seedvr_cli.models.flashvsr.lq_proj import LQProjector, lq_proj_config
from seedvr_cli.weights.flashvsr import DIT_FILE, LQ_PROJ_FILE
from seedvr_cli.weights.synthesize import Entry, _generator, _write_safetensors, random_tensor

FLASHVSR_VARIANTS = ("flashvsr-v1.0", "flashvsr-v1.1", "tiny-flashvsr-v1.0", "tiny-flashvsr-v1.1")
FLASHVSR_FORMATS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _parse(variant: str) -> tuple[str, str]:
    """(size, version) of a variant name: ("real" | "tiny", "v1.0" | "v1.1")."""
    if variant not in FLASHVSR_VARIANTS:
        raise ValueError(f"unknown FlashVSR variant {variant!r}; known: {', '.join(FLASHVSR_VARIANTS)}")
    return ("tiny" if variant.startswith("tiny-") else "real"), variant.rsplit("-", 1)[1]


def flashvsr_entries(variant: str) -> tuple[list[Entry], list[Entry]]:
    """State-dict entries (DiT, LQ projector) of ``variant``, in module order."""
    size, version = _parse(variant)
    with torch.device("meta"):
        dit = FlashDiT(flash_dit_config(size))
        projector = LQProjector(lq_proj_config(size), version)
    as_entries = lambda m: [Entry(name, tuple(t.shape)) for name, t in m.state_dict().items()]  # noqa: E731
    return as_entries(dit), as_entries(projector)


def _projector_value(entry: Entry, seed: int) -> torch.Tensor:
    # The channel norms' gammas are (C, 1, 1, 1): scales near 1, not a fan-in-scaled matrix.
    if entry.name.endswith(".gamma"):
        noise = torch.randn(entry.shape, generator=_generator(seed, entry.name, torch.device("cpu")))
        return 1.0 + 0.2 * noise
    return random_tensor(entry, seed)


def write_flashvsr_checkpoint(variant: str, out_dir: str | Path, *, fmt: str = "bf16", seed: int = 0,
                              device: str = "cpu") -> list[Path]:  # fmt: skip
    """Write both files of ``variant`` into ``out_dir``; existing files are never replaced."""
    if fmt not in FLASHVSR_FORMATS:
        raise ValueError(f"unknown FlashVSR format {fmt!r}; known: {', '.join(FLASHVSR_FORMATS)}")
    out_dir = Path(out_dir)
    dit_path, proj_path = out_dir / DIT_FILE, out_dir / LQ_PROJ_FILE
    for path in (dit_path, proj_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it or pick another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = FLASHVSR_FORMATS[fmt]
    dit_entries, proj_entries = flashvsr_entries(variant)
    partial = dit_path.with_name(dit_path.name + ".partial")
    _write_safetensors(partial, dit_entries, {e.name: dtype for e in dit_entries}, seed, torch.device(device),
                       {"format": "pt"})  # fmt: skip
    partial.replace(dit_path)
    projector = {e.name: _projector_value(e, seed).to(dtype) for e in proj_entries}
    partial = proj_path.with_name(proj_path.name + ".partial")
    torch.save(projector, partial)
    partial.replace(proj_path)
    return [dit_path, proj_path]
