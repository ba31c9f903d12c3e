"""Random-weight FlashVSR decoder files in their published layout, for tests and benchmarks (never a
real model): ``TCDecoder.ckpt`` and ``Wan2.1_VAE.pth`` (the whole VAE, encoder included, as
published), each a ``torch.save`` of a flat float32 state dict that loads with ``weights_only=True``.

Values depend only on (seed, tensor name), as for the SeedVR2 files (``synthesize.random_tensor``);
RMS-norm gains are drawn around 1 so that a decoded frame stays in a plausible range.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seedvr_cli.models.flashvsr import tc_decoder, wan_vae
from seedvr_cli.weights.flashvsr_decoders import tc_decoder_file_shapes, wan_vae_file_shapes
from seedvr_cli.weights.synthesize import Entry, _generator, random_tensor

TC_VARIANTS = tuple(tc_decoder.VARIANTS)  # tcdecoder, tiny-tcdecoder
WAN_VAE_VARIANTS = tuple(wan_vae.VARIANTS)  # wan2.1-vae, tiny-wan2.1-vae
VARIANTS = TC_VARIANTS + WAN_VAE_VARIANTS
# The published files are torch.save state dicts; Wan2.1_VAE.pth is float32 (508 MB).
FORMATS = ("fp32-pth",)


def file_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    if variant in TC_VARIANTS:
        return tc_decoder_file_shapes(tc_decoder.VARIANTS[variant])
    if variant in WAN_VAE_VARIANTS:
        return wan_vae_file_shapes(wan_vae.VARIANTS[variant])
    raise ValueError(f"unknown FlashVSR decoder variant {variant!r}; known: {', '.join(VARIANTS)}")


def _value(name: str, shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    if name.endswith(".gamma"):
        noise = torch.randn(shape, generator=_generator(seed, name, device), device=device)
        return 1.0 + 0.2 * noise
    return random_tensor(Entry(name, shape), seed, device)


def write_decoder_checkpoint(variant: str, out: str | Path, *, seed: int = 0, device: str = "cpu") -> Path:
    """Write a random ``variant`` file to ``out`` (through a temporary name, so a crash leaves no
    half file under the real one)."""
    shapes = file_shapes(variant)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    state = {name: _value(name, shape, seed, dev).cpu() for name, shape in shapes.items()}
    tmp = out.with_name(out.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(out)
    return out
