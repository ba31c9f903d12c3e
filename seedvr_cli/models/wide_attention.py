"""Attention for heads wider than the fused kernels take: the VAE mid block's one head of 512.

PyTorch's flash and cuDNN attention stop at a head width of 256 (cuDNN on Hopper with cuDNN
>= 9.10, 128 before), so ``scaled_dot_product_attention`` runs a 512-wide head through its
memory-efficient kernel, which on an H200 reached ~120 TFLOP/s (docs/benchmarks.md). Here the
two products go to cuBLAS instead, a block of query rows at a time: scores in float32 (scaled,
softmax) and the probabilities rounded once to the input dtype for the second product, as the
fused kernels do. The score block is the only extra memory (``block_bytes`` of float32 plus its
softmax and rounded copies).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

# Widest head flash / cuDNN attention accept (sdp_utils: check_head_dim_size_flash,
# check_cudnn_tensor_shapes).
FUSED_HEAD_LIMIT = 256


def wide_head_attention(q: Tensor, k: Tensor, v: Tensor, block_bytes: float = 2**29) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``[N, heads, L, d]`` inputs (no mask, no dropout)."""
    batch, heads, length, dim = q.shape
    q, k, v = (t.reshape(batch * heads, t.shape[2], dim) for t in (q, k, v))
    out = torch.empty_like(q)
    rows = max(1, int(block_bytes // (k.shape[1] * 4)))
    scale = dim**-0.5
    for index in range(q.shape[0]):
        keys_t, values = k[index].t(), v[index]
        for begin in range(0, length, rows):
            scores = _float32_product(q[index, begin : begin + rows], keys_t).mul_(scale)
            probabilities = torch.softmax(scores, dim=-1).to(v.dtype)
            del scores
            torch.mm(probabilities, values, out=out[index, begin : begin + rows])
    return out.view(batch, heads, length, dim)


def _float32_product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` as float32: half-precision operands stay half precision for cuBLAS where torch
    has ``mm(..., out_dtype=)`` for them, else are widened first."""
    if a.dtype in (torch.bfloat16, torch.float16) and a.is_cuda and _has_float32_output(a.device.type):
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


@functools.cache
def _has_float32_output(device_type: str) -> bool:
    probe = torch.ones(1, 1, dtype=torch.bfloat16, device=device_type)
    try:
        return torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False
