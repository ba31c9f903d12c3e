"""Compute dtype for the models: ``--dtype auto|bf16|fp16|fp32``."""

from __future__ import annotations

import torch

from seedvr_cli.pipeline.choices import DTYPE_CHOICES

DTYPE_NAMES = dict(zip(DTYPE_CHOICES, (torch.bfloat16, torch.float16, torch.float32), strict=True))


def resolve_compute_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU (where half
    precision convolutions are slow or missing)."""
    if name in DTYPE_NAMES:
        return DTYPE_NAMES[name]
    if name != "auto":
        raise ValueError(f"dtype {name!r}: expected auto or one of {DTYPE_CHOICES}")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
