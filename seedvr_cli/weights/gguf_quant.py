"""GGML block formats: torch dequantizers (one per type) and the quantizers we need to write files.

A packed GGUF weight is a ``uint8`` tensor whose rows hold whole blocks; each dequantizer takes the
packed blocks as ``[n_blocks, type_size]`` and returns ``[n_blocks, block_size]`` float32 values. The
block layouts are the ones ggml and the ``gguf`` package use (tests compare every function here
against ``gguf.quants.dequantize``).

The ``gguf`` package can quantize only Q8_0/Q4_0/Q5_0 (and the float types); the K-quant
quantizers below (Q4_K, Q5_K, Q6_K) are our own simple min/max fits. They produce valid blocks that
any GGUF reader decodes, which is all the synthetic checkpoints need; they make no attempt at
llama.cpp's error-minimizing scale search.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

QK_K = 256

Dequantizer = Callable[[torch.Tensor, torch.dtype], torch.Tensor]


def _f16(blocks: torch.Tensor, start: int, t: torch.dtype) -> torch.Tensor:
    """The fp16 stored at byte ``start`` of every block, as a column of dtype ``t``."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(t)


def _nibbles(qs: torch.Tensor, group: int) -> torch.Tensor:
    """Split bytes into low and high nibbles, ggml style: each run of ``group`` bytes gives
    ``group`` low values followed by ``group`` high values."""
    n = qs.shape[0]
    qs = qs.reshape(n, -1, 1, group)
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).reshape(1, 1, 2, 1)
    return ((qs >> shifts) & 0x0F).reshape(n, -1)


def _bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Little-endian bits of the bytes in ``packed`` ([n, count/8]) as [n, count] uint8."""
    n = packed.shape[0]
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device).reshape(1, 1, 8)
    return ((packed.reshape(n, -1, 1) >> shifts) & 1).reshape(n, count)


def dequant_f32(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    return blocks.contiguous().view(torch.float32)


# The float types are returned as stored; ``dequantize`` casts them once to the dtype asked for.
def dequant_f16(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    return blocks.contiguous().view(torch.float16)


def dequant_bf16(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    return blocks.contiguous().view(torch.bfloat16)


def dequant_q8_0(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    d = _f16(blocks, 0, t)
    q = blocks[:, 2:].contiguous().view(torch.int8).to(t)
    return d * q


def dequant_q4_0(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    d = _f16(blocks, 0, t)
    q = _nibbles(blocks[:, 2:], 16).to(t) - 8.0
    return d * q


def dequant_q4_1(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    d = _f16(blocks, 0, t)
    m = _f16(blocks, 2, t)
    q = _nibbles(blocks[:, 4:], 16).to(t)
    return d * q + m


def dequant_q5_0(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    d = _f16(blocks, 0, t)
    high = _bits(blocks[:, 2:6], 32)
    low = _nibbles(blocks[:, 6:], 16)
    q = (low | (high << 4)).to(t) - 16.0
    return d * q


def dequant_q5_1(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    d = _f16(blocks, 0, t)
    m = _f16(blocks, 2, t)
    high = _bits(blocks[:, 4:8], 32)
    low = _nibbles(blocks[:, 8:], 16)
    return d * (low | (high << 4)).to(t) + m


def _k_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12-byte field of 8 six-bit scales and 8 six-bit mins (Q4_K / Q5_K)."""
    n = packed.shape[0]
    p = packed.reshape(n, 3, 4)
    d, m, md = p[:, 0], p[:, 1], p[:, 2]
    scales = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mins = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=1)
    return scales, mins


def dequant_q4_k(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0, t), _f16(blocks, 2, t)
    scales, mins = (part.to(t) for part in _k_scales_mins(blocks[:, 4:16]))
    q = _nibbles(blocks[:, 16:], 32).reshape(n, 8, 32).to(t)
    out = (d * scales).unsqueeze(-1) * q - (dmin * mins).unsqueeze(-1)
    return out.reshape(n, QK_K)


def dequant_q5_k(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0, t), _f16(blocks, 2, t)
    scales, mins = (part.to(t) for part in _k_scales_mins(blocks[:, 4:16]))
    qh = blocks[:, 16:48]
    shifts = torch.arange(8, dtype=torch.uint8, device=blocks.device).reshape(1, 8, 1)
    high = (qh.reshape(n, 1, 32) >> shifts) & 1  # [n, sub-block, element]
    low = _nibbles(blocks[:, 48:], 32).reshape(n, 8, 32)
    q = (low | (high << 4)).to(t)
    out = (d * scales).unsqueeze(-1) * q - (dmin * mins).unsqueeze(-1)
    return out.reshape(n, QK_K)


def dequant_q6_k(blocks: torch.Tensor, t: torch.dtype = torch.float32) -> torch.Tensor:
    n = blocks.shape[0]
    ql = blocks[:, :128]
    qh = blocks[:, 128:192]
    scales = blocks[:, 192:208].contiguous().view(torch.int8).to(t)
    d = _f16(blocks, 208, t)
    low = _nibbles(ql, 64).reshape(n, 8, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=blocks.device).reshape(1, 1, 4, 1)
    high = ((qh.reshape(n, 2, 1, 32) >> shifts) & 0x03).reshape(n, 8, 32)
    q = (low | (high << 4)).to(t) - 32.0
    out = (d * scales).reshape(n, 16, 1) * q.reshape(n, 16, 16)
    return out.reshape(n, QK_K)


DEQUANTIZERS: dict[GGMLQuantizationType, Dequantizer] = {
    GGMLQuantizationType.F32: dequant_f32,
    GGMLQuantizationType.F16: dequant_f16,
    GGMLQuantizationType.BF16: dequant_bf16,
    GGMLQuantizationType.Q8_0: dequant_q8_0,
    GGMLQuantizationType.Q4_0: dequant_q4_0,
    GGMLQuantizationType.Q4_1: dequant_q4_1,
    GGMLQuantizationType.Q5_0: dequant_q5_0,
    GGMLQuantizationType.Q5_1: dequant_q5_1,
    GGMLQuantizationType.Q4_K: dequant_q4_k,
    GGMLQuantizationType.Q5_K: dequant_q5_k,
    GGMLQuantizationType.Q6_K: dequant_q6_k,
}

# Types that stay packed in memory; F32/F16 load as ordinary tensors (what ComfyUI-GGUF does too).
PLAIN_TYPES = frozenset({GGMLQuantizationType.F32, GGMLQuantizationType.F16})


def block_layout(qtype: GGMLQuantizationType) -> tuple[int, int]:
    """(values per block, bytes per block)."""
    return GGML_QUANT_SIZES[qtype]


def dequantize(
    packed: torch.Tensor,
    qtype: GGMLQuantizationType,
    shape: tuple[int, ...] | torch.Size,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Packed uint8 data of one tensor -> a ``dtype`` tensor of the logical ``shape``.

    The arithmetic runs in float32 for a float32 result (what ``gguf.quants`` computes, and what the
    tests compare with) and in float16 for any other: the community node dequantizes in float16 and
    casts to the compute dtype after (docs/reference-behaviour.md R30), and a layer's weight then
    never exists in float32 on the GPU, which halves the temporaries of each layer's expansion."""
    try:
        fn = DEQUANTIZERS[qtype]
    except KeyError:
        supported = ", ".join(t.name for t in DEQUANTIZERS)
        raise NotImplementedError(f"GGUF type {qtype.name} is not supported (supported: {supported})") from None
    _, type_size = block_layout(qtype)
    blocks = packed.reshape(-1, type_size)
    arithmetic = torch.float32 if dtype == torch.float32 else torch.float16
    return fn(blocks, arithmetic).to(dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Quantizers (torch, so real-size files can be written on a GPU). Input: float32 [n_blocks, size].


def _round(x: torch.Tensor) -> torch.Tensor:
    # ggml rounds half away from zero; torch.round rounds half to even. The difference does not
    # matter for validity, but matching keeps our Q8_0 bit-identical to the gguf package's.
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _as_f16_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _pack_nibbles(q: torch.Tensor, group: int) -> torch.Tensor:
    """Inverse of ``_nibbles``: q [n, 2*k*group] values 0..15 -> [n, k*group] bytes."""
    n = q.shape[0]
    q = q.reshape(n, -1, 2, group)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, -1)


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """[n, m*8] of 0/1 -> [n, m] bytes, little-endian bit order."""
    n = bits.shape[0]
    weights = (2 ** torch.arange(8, device=bits.device)).to(torch.uint8)
    return (bits.reshape(n, -1, 8) * weights).sum(dim=-1, dtype=torch.uint8)


def quant_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = _round(blocks * inv).to(torch.int8).view(torch.uint8)
    return torch.cat([_as_f16_bytes(d), q], dim=1)


def _signed_absmax(blocks: torch.Tensor) -> torch.Tensor:
    idx = blocks.abs().argmax(dim=-1, keepdim=True)
    return torch.gather(blocks, -1, idx)


def quant_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _signed_absmax(blocks) / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(blocks * inv + 8.5).clamp(0, 15).to(torch.uint8)
    return torch.cat([_as_f16_bytes(d), _pack_nibbles(q, 16)], dim=1)


def quant_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _signed_absmax(blocks) / -16
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(blocks * inv + 16.5).clamp(0, 31).to(torch.uint8)
    qh = _pack_bits(q >> 4)
    return torch.cat([_as_f16_bytes(d), qh, _pack_nibbles(q & 0x0F, 16)], dim=1)


def _fit_sub_blocks(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, ...]:
    """Per 32-value sub-block affine fit x ~ d*sc*q - dmin*m with 6-bit sc, m and q in [0, levels].

    x: [n, 8, 32]. Returns (d [n], dmin [n], sc [n,8] uint8, m [n,8] uint8, q [n,8,32] uint8).
    """
    lo = x.amin(dim=-1).clamp(max=0.0)  # the offset is a subtracted non-negative min
    hi = x.amax(dim=-1)
    scale = (hi - lo) / levels
    d = (scale.amax(dim=-1) / 63).to(torch.float16).to(torch.float32)
    dmin = ((-lo).amax(dim=-1) / 63).to(torch.float16).to(torch.float32)
    inv_d = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    inv_dmin = torch.where(dmin == 0, torch.zeros_like(dmin), 1 / dmin)
    sc = _round(scale * inv_d[:, None]).clamp(0, 63)
    m = _round(-lo * inv_dmin[:, None]).clamp(0, 63)
    step = d[:, None] * sc
    offset = dmin[:, None] * m
    inv_step = torch.where(step == 0, torch.zeros_like(step), 1 / step)
    q = _round((x + offset[..., None]) * inv_step[..., None]).clamp(0, levels)
    return d, dmin, sc.to(torch.uint8), m.to(torch.uint8), q.to(torch.uint8)


def _pack_k_scales(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_k_scales_mins``: 8 scales and 8 mins (6 bits each) -> 12 bytes."""
    first = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    second = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return torch.cat([first, second, third], dim=1)


def quant_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d, dmin, sc, m, q = _fit_sub_blocks(blocks.reshape(n, 8, 32), 15)
    qs = _pack_nibbles(q.reshape(n, -1), 32)
    return torch.cat([_as_f16_bytes(d), _as_f16_bytes(dmin), _pack_k_scales(sc, m), qs], dim=1)


def quant_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d, dmin, sc, m, q = _fit_sub_blocks(blocks.reshape(n, 8, 32), 31)
    high = (q >> 4) & 1  # [n, sub-block, element]
    weights = (2 ** torch.arange(8, device=blocks.device)).to(torch.uint8).reshape(1, 8, 1)
    qh = (high * weights).sum(dim=1, dtype=torch.uint8)  # bit j of byte l = sub-block j, element l
    qs = _pack_nibbles((q & 0x0F).reshape(n, -1), 32)
    return torch.cat([_as_f16_bytes(d), _as_f16_bytes(dmin), _pack_k_scales(sc, m), qh, qs], dim=1)


def quant_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    groups = blocks.reshape(n, 16, 16)
    scale = groups.abs().amax(dim=-1) / 31
    d = (scale.amax(dim=-1) / 127).to(torch.float16).to(torch.float32)
    inv_d = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    sc = _round(scale * inv_d[:, None]).clamp(0, 127)
    step = d[:, None] * sc
    inv_step = torch.where(step == 0, torch.zeros_like(step), 1 / step)
    q = (_round(groups * inv_step[..., None]).clamp(-32, 31) + 32).to(torch.uint8).reshape(n, 2, 4, 32)
    # Element h*128 + k*32 + l: its low nibble sits in ql half h, byte (k%2)*32 + l, nibble k//2;
    # its top two bits in qh half h, byte l, bits 2k..2k+1.
    low = q & 0x0F
    ql = (low[:, :, 0:2] | (low[:, :, 2:4] << 4)).reshape(n, 128)
    high = q >> 4
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(n, 64)
    scales = sc.to(torch.int8).view(torch.uint8)
    return torch.cat([ql, qh, scales, _as_f16_bytes(d)], dim=1)


def quant_f16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.to(torch.float16).view(torch.uint8)


def quant_bf16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.to(torch.bfloat16).view(torch.uint8)


def quant_f32(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.to(torch.float32).view(torch.uint8)


QUANTIZERS: dict[GGMLQuantizationType, Callable[[torch.Tensor], torch.Tensor]] = {
    GGMLQuantizationType.F32: quant_f32,
    GGMLQuantizationType.F16: quant_f16,
    GGMLQuantizationType.BF16: quant_bf16,
    GGMLQuantizationType.Q8_0: quant_q8_0,
    GGMLQuantizationType.Q4_0: quant_q4_0,
    GGMLQuantizationType.Q5_0: quant_q5_0,
    GGMLQuantizationType.Q4_K: quant_q4_k,
    GGMLQuantizationType.Q5_K: quant_q5_k,
    GGMLQuantizationType.Q6_K: quant_q6_k,
}


def can_quantize(shape: tuple[int, ...] | torch.Size, qtype: GGMLQuantizationType) -> bool:
    block_size, _ = block_layout(qtype)
    return len(shape) >= 1 and shape[-1] % block_size == 0


def quantize(tensor: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """A float tensor -> its packed bytes, shaped [rows, bytes per row] (rows = all but last dim)."""
    if not can_quantize(tensor.shape, qtype):
        raise ValueError(f"row size {tensor.shape[-1]} is not a multiple of the {qtype.name} block size")
    block_size, type_size = block_layout(qtype)
    rows = tensor.numel() // tensor.shape[-1]
    blocks = tensor.detach().to(torch.float32).reshape(-1, block_size)
    packed = QUANTIZERS[qtype](blocks)
    return packed.reshape(rows, tensor.shape[-1] // block_size * type_size)
