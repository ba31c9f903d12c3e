"""RMSNorm with float32 statistics, the normalisation used everywhere in the NaDiT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis, computed in float32.

    The reference's fused kernel accumulates in float32 whatever the activation dtype; doing the
    statistics in bf16 moves the output by more than the rest of the bf16 path does. PyTorch's
    ``F.rms_norm`` computes exactly this (in float32 for half inputs, one rounding at the end) in
    one fused kernel on the GPU instead of five passes; ``rms_norm_reference`` spells it out.
    """
    if weight is not None and weight.dtype != x.dtype:
        return rms_norm_reference(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rms_norm_reference(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``rms_norm`` op by op in float32: the plain path the fused one is tested against."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis; ``affine=False`` gives the weightless block norms."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, affine={self.weight is not None}"


def modulated_rms_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
    """``rms_norm(x) * scale + shift``, rounded as the reference rounds it (the normalised value to
    ``x``'s dtype, then the product, then the sum), with the modulation done in place on the fresh
    normalised tensor: one allocation instead of three, and one expression a compiled block fuses."""
    return rms_norm(x, eps=eps).mul_(scale).add_(shift)
