"""Compute dtype for the models: ``--dtype auto|bf16|fp16|fp32``."""

from __future__ import annotations

import torch

from seedvr_cli.errors import UsageError

DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_compute_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU (where half
    precision convolutions are slow or missing)."""
    if name in DTYPE_NAMES:
        return DTYPE_NAMES[name]
    if name != "auto":
        raise UsageError(f"--dtype {name}: use auto, bf16, fp16 or fp32")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
