"""Final frames -> stored pixel values, by rounding (numz truncates, losing half a step on average)."""

from __future__ import annotations

import torch

INTEGER_OUTPUTS = (torch.uint8, torch.uint16)


def signed_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """Model-space [-1, 1] (possibly overshooting) -> float32 [0, 1]."""
    return (frames.to(torch.float32).clamp(-1.0, 1.0) * 0.5 + 0.5).clamp(0.0, 1.0)


def full_scale(dtype: torch.dtype) -> float:
    if dtype not in INTEGER_OUTPUTS:
        raise ValueError(f"output dtype {dtype} is not one of {INTEGER_OUTPUTS}")
    return float(torch.iinfo(dtype).max)


def quantize(unit_frames: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """[0, 1] floats -> uint8 / uint16 by rounding to nearest; ``None`` keeps float32 [0, 1].

    uint16 keeps 10/12/16-bit sources at full precision (no 8-bit step anywhere before this).
    """
    unit = unit_frames.to(torch.float32).clamp(0.0, 1.0)
    if dtype is None:
        return unit
    scale = full_scale(dtype)
    # Rounded in float32 then stored in int32 first: uint16 arithmetic is sparse in torch.
    return (unit * scale).round_().to(torch.int32).to(dtype)
