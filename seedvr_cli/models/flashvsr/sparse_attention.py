"""FlashVSR's block-sparse self-attention: which 128-token blocks each query block attends to, and
the attention over the chosen blocks.

One block is one attention window of 2x8x8 tokens (``window_partition`` in ``dit.py``), so block
indices are window indices ordered (time slice, window row, window column); a time slice holds
``S`` spatial windows. The choice of blocks (reference/flashvsr SPEC.md §6, GAPS-DIT-LQPROJ.md):

1. a local mask allows, within every (query slice, key slice) pair, only the windows whose row
   and column are within ``local_range`` of the query window's;
2. mean-pooled query and key windows are scored per head, the local mask applied, and a softmax
   taken over all key windows;
3. for each head and each query time slice, the ``topk + 1``-th largest probability of that slice's
   whole S x Nk matrix is a threshold, and the blocks strictly above it are kept.

A query block with no key block kept gives zeros. Two backends compute the attention itself:
``"reference"`` (dense masked softmax, plain PyTorch: for tests and small inputs) and ``"flex"``
(``torch.nn.attention.flex_attention`` with the block mask, compiled on CUDA, so only the kept
blocks are read).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 128
BACKENDS = ("reference", "flex")


def local_window_mask(rows: int, cols: int, local_range: int, device: torch.device | str = "cpu") -> Tensor:
    """``[S, S]`` bool, S = rows * cols: may query window i attend to key window j of a time slice.

    The allowed span along each axis is ``[r - L//2, r - L//2 + L - 1]`` (centred for odd L, one
    more before than after for even L) and is not clamped at the borders.
    """
    if local_range < 1:
        raise ValueError(f"local_range must be >= 1, got {local_range}")
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    before, after = local_range // 2, local_range - 1 - local_range // 2
    dr = r[None, :] - r[:, None]
    dc = c[None, :] - c[:, None]
    return (dr >= -before) & (dr <= after) & (dc >= -before) & (dc <= after)


def topk_blocks(spatial_windows: int, topk_ratio: float) -> int:
    """The reference's top-k count for S spatial windows per time slice."""
    return int(spatial_windows * spatial_windows * topk_ratio) - 1


def topk_ratio_for(sparse_ratio: float, height: int, width: int) -> float:
    """The reference pipeline's ``topk_ratio`` from the user's ``sparse_ratio`` at an output size:
    it keeps about ``60 * sparse_ratio`` key windows per query window whatever the resolution."""
    return sparse_ratio * 768 * 1280 / (height * width)


def select_blocks(q_windows: Tensor, k_windows: Tensor, heads: int, local: Tensor, topk: int) -> Tensor:
    """Bool ``[heads, Nq, Nk]``: the key blocks each query block attends to.

    ``q_windows`` ``[Nq, 128, dim]`` and ``k_windows`` ``[Nk, 128, dim]`` are the post-norm,
    post-RoPE projections in window order (cached key windows first); ``local`` is
    ``local_window_mask`` for the S spatial windows of a time slice.
    """
    spatial = local.shape[0]
    num_q, num_k = q_windows.shape[0], k_windows.shape[0]
    if num_q % spatial or num_k % spatial:
        raise ValueError(f"{num_q} query / {num_k} key windows are not whole time slices of {spatial}")
    head_dim = q_windows.shape[-1] // heads
    q_pooled = q_windows.mean(dim=1).view(num_q, heads, head_dim).transpose(0, 1)
    k_pooled = k_windows.mean(dim=1).view(num_k, heads, head_dim).transpose(0, 1)
    scores = q_pooled @ k_pooled.transpose(1, 2) / math.sqrt(head_dim)
    allowed = local.repeat(num_q // spatial, num_k // spatial)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(dim=-1)
    # One threshold per (head, query time slice), over that slice's whole S x Nk matrix.
    flat = probs.reshape(heads * (num_q // spatial), spatial * num_k)
    keep = min(spatial * num_k - 1, topk) + 1
    if keep < 1:
        raise ValueError(f"top-k {topk} keeps no key block at all; raise the sparse ratio")
    threshold = flat.topk(keep, dim=-1).values[:, -1:]
    return (flat > threshold).view(heads, num_q, num_k)


def block_sparse_attention(q: Tensor, k: Tensor, v: Tensor, blocks: Tensor, backend: str = "reference") -> Tensor:
    """Attention of ``q`` ``[heads, Lq, d]`` over ``k, v`` ``[heads, Lk, d]`` restricted to the
    128x128 blocks set in ``blocks`` ``[heads, Lq/128, Lk/128]``; scale ``1/sqrt(d)``. Rows of a
    query block with no key block are zero."""
    if backend == "reference":
        return _reference_attention(q, k, v, blocks)
    if backend == "flex":
        return _flex_attention(q, k, v, blocks)
    raise ValueError(f"unknown sparse attention backend {backend!r}; known: {', '.join(BACKENDS)}")


def _reference_attention(q: Tensor, k: Tensor, v: Tensor, blocks: Tensor) -> Tensor:
    # In float32 whatever the inputs (fp32 accumulation, as the GPU kernels do); cast back at the end.
    allowed = blocks.repeat_interleave(BLOCK, dim=1).repeat_interleave(BLOCK, dim=2)
    scores = (q.float() @ k.float().transpose(1, 2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    has_any = allowed.any(dim=-1, keepdim=True)
    # A fully masked row would be NaN after the softmax; give it weight zero instead.
    weights = scores.masked_fill(~has_any, 0.0).softmax(dim=-1) * has_any
    return (weights @ v.float()).to(q.dtype)


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, blocks: Tensor) -> Tensor:
    from torch.nn.attention.flex_attention import BlockMask

    heads, num_q, num_k = blocks.shape
    compiled = q.is_cuda
    counts = blocks.sum(dim=-1, dtype=torch.int32)
    # Kept blocks first, in increasing key order (a stable sort of "not kept").
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    # Kept blocks are whole blocks, so they go in the "full" lists, which the compiled kernel reads
    # without any per-token mask; the partial lists are empty. Uncompiled FlexAttention ignores the
    # lists and evaluates the mask function on every token pair, so it gets one that looks the
    # blocks up (the compiled path keeps the default one: a new function per call would recompile).
    mask_mod = None if compiled else (lambda b, h, q_idx, kv_idx: blocks[h, q_idx // BLOCK, kv_idx // BLOCK])
    mask = BlockMask.from_kv_blocks(
        torch.zeros_like(counts)[None],
        order[None],
        full_kv_num_blocks=counts[None],
        full_kv_indices=order[None],
        BLOCK_SIZE=BLOCK,
        mask_mod=mask_mod,
        seq_lengths=(num_q * BLOCK, num_k * BLOCK),
    )
    scale = 1.0 / math.sqrt(q.shape[-1])
    return _flex_function(compiled)(q[None], k[None], v[None], block_mask=mask, scale=scale)[0]


@lru_cache(maxsize=2)
def _flex_function(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return _quiet(flex_attention)
    return torch.compile(flex_attention, dynamic=False)


def _quiet(flex_attention):
    """Uncompiled FlexAttention (CPU) without its once-per-process advice to compile it: it is the
    CPU fallback here, and the advice is for the GPU path, which is compiled."""

    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(*args, **kwargs)

    return call


def dense_masked_attention(q: Tensor, k: Tensor, v: Tensor, token_mask: Tensor) -> Tensor:
    """Plain scaled-dot-product attention under a per-token bool mask (fully masked rows -> 0);
    for tests that check the block-sparse paths against an independent formulation."""
    has_any = token_mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask | ~has_any)
    return out * has_any
