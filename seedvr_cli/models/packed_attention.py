"""All windows of a layer in one attention call: the windows packed back to back, no padding.

The "sdpa" backend (``attention.py``) runs one call per group of same-shaped windows and gathers,
rotates and concatenates q/k/v per group. Here a ``PackedWindows`` layout, built once per forward
beside the window plan, lists every window's sequence (its video tokens, then its sample's text)
one after the other; q/k/v are gathered into that order once, rotated with full-width rope tables
(no slicing or concatenation), and handed to one variable-length attention call:

- "flash": ``torch.nn.attention.varlen.varlen_attn`` (flash / cuDNN varlen kernels; CUDA, fp16/bf16),
- "flex": FlexAttention with a block mask that keeps each query inside its own window.

The maths is that of the "sdpa" backend (exact attention per window, text outputs averaged over the
sample's windows in float32); only the attention kernel differs. ``attend_per_window`` runs the same
packed layout through plain SDPA, one window at a time: the reference these kernels are tested
against, and what "flash" falls back to for float32 activations, which its kernels do not take.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .rope import apply_rope_full, full_width_tables

QKV = tuple[Tensor, Tensor, Tensor]
# Rows rotated per pass: the rotation's float32 temporaries stay near 100 MB at 7B width (16k rows x
# 3072 x 4 bytes, a few alive at once) instead of growing with the frame (~2 GB for a 1080p window).
ROPE_CHUNK_ROWS = 1 << 14


@dataclass(frozen=True)
class PackedWindows:
    """Where every window's tokens sit in the packed sequence of one window plan."""

    gather_index: Tensor  # (T,) rows of cat(video, text) in packed order
    cos: Tensor  # (T, 1, head_dim) float32; 1 on text rows (text is rotated before attention)
    sin: Tensor  # (T, 1, head_dim) float32, signed as ``rope.full_width_tables`` makes it; 0 on text
    lengths: tuple[int, ...]  # tokens of each window's sequence
    cu_seqlens: Tensor  # (windows + 1,) int32 offsets of the sequences
    vid_position: Tensor  # (Lv,) packed position of each video row
    txt_position: Tensor  # (windows x text,) packed positions of text rows ...
    txt_row: Tensor  # ... and the text row each one is a copy of
    sequence_id: Tensor  # (T,) int32 window number of each packed position (FlexAttention's mask)
    attend_state: dict  # what a kernel builds once per layout (``prepare_flex``: the block mask)

    @property
    def max_length(self) -> int:
        return max(self.lengths, default=0)


def build_packed_windows(plan, head_dim: int) -> PackedWindows:
    """The packed layout of ``plan`` (a ``WindowPlan``), on the device of its index tensors.

    Windows go in the plan's group order; within a group, in the group's order. Every window's text
    is its sample's text, so a text row appears once per window of its sample.
    """
    num_vid = sum(t * h * w for t, h, w in plan.grids)
    indices, cos_parts, sin_parts, lengths = [], [], [], []
    for group in plan.groups:
        count, per_window = group.vid_index.shape
        device = group.vid_index.device
        indices.append(torch.cat((group.vid_index, group.txt_index + num_vid), dim=1).reshape(-1))
        seq = per_window + group.txt_len
        if group.vid_cos is not None:
            cos, sin = full_width_tables(group.vid_cos, group.vid_sin, head_dim)
        else:
            cos = torch.ones(per_window, 1, head_dim, device=device)
            sin = torch.zeros(per_window, 1, head_dim, device=device)
        cos = torch.cat((cos, cos.new_ones(group.txt_len, 1, head_dim)))
        sin = torch.cat((sin, sin.new_zeros(group.txt_len, 1, head_dim)))
        cos_parts.append(cos.expand(count, seq, 1, head_dim).reshape(count * seq, 1, head_dim))
        sin_parts.append(sin.expand(count, seq, 1, head_dim).reshape(count * seq, 1, head_dim))
        lengths += [seq] * count
    gather_index = torch.cat(indices)
    device = gather_index.device
    is_vid = gather_index < num_vid
    positions = torch.arange(gather_index.numel(), device=device)
    vid_position = torch.empty(num_vid, dtype=torch.long, device=device)
    vid_position[gather_index[is_vid]] = positions[is_vid]
    length_tensor = torch.tensor(lengths, dtype=torch.int32)
    cu_seqlens = F.pad(length_tensor.cumsum(0, dtype=torch.int32), (1, 0)).to(device)
    return PackedWindows(
        gather_index=gather_index,
        cos=torch.cat(cos_parts),
        sin=torch.cat(sin_parts),
        lengths=tuple(lengths),
        cu_seqlens=cu_seqlens,
        vid_position=vid_position,
        txt_position=positions[~is_vid],
        txt_row=gather_index[~is_vid] - num_vid,
        sequence_id=torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32), length_tensor).to(device),
        attend_state={},
    )


Attend = Callable[[Tensor, Tensor, Tensor, PackedWindows], Tensor]


def packed_window_attention(vid: QKV, txt: QKV, plan, need_txt: bool, attend: Attend) -> tuple[Tensor, Tensor | None]:
    """A backend (see ``attention.py``) over ``plan.packed``: gather, rotate, one ``attend`` call, read back."""
    packed: PackedWindows = plan.packed
    if packed is None:
        raise RuntimeError("this window plan has no packed layout (NaDiT builds it for backends that need one)")
    q, k, v = (torch.cat((xv, xt)).index_select(0, packed.gather_index) for xv, xt in zip(vid, txt))
    q, k = _rotated(q, packed), _rotated(k, packed)
    out = attend(q, k, v, packed)
    out_vid = out.index_select(0, packed.vid_position)
    if not need_txt:
        return out_vid, None
    txt_sum = out.new_zeros(txt[2].shape, dtype=torch.float32)
    txt_sum.index_add_(0, packed.txt_row, out.index_select(0, packed.txt_position).float())
    return out_vid, (txt_sum / plan.txt_window_count[:, None, None]).to(txt[2].dtype)


def _rotated(x: Tensor, packed: PackedWindows) -> Tensor:
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], ROPE_CHUNK_ROWS):
        rows = slice(start, start + ROPE_CHUNK_ROWS)
        out[rows] = apply_rope_full(x[rows], packed.cos[rows], packed.sin[rows])
    return out


def attend_per_window(q: Tensor, k: Tensor, v: Tensor, packed: PackedWindows) -> Tensor:
    """Plain SDPA on each window's slice of the packed sequence (the reference for the kernels)."""
    out = torch.empty_like(v)
    start = 0
    for length in packed.lengths:
        window = slice(start, start + length)
        # (S, H, D) -> (H, S, D) for SDPA and back.
        out[window] = F.scaled_dot_product_attention(
            q[window].transpose(0, 1), k[window].transpose(0, 1), v[window].transpose(0, 1)
        ).transpose(0, 1)
        start += length
    return out


def attend_varlen(q: Tensor, k: Tensor, v: Tensor, packed: PackedWindows) -> Tensor:
    """One flash/cuDNN variable-length attention call over every window."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        # The varlen kernels take half precision on CUDA only (float32 parity runs land here).
        return attend_per_window(q, k, v, packed)
    from torch.nn.attention.varlen import varlen_attn

    length = packed.max_length
    return varlen_attn(q, k, v, packed.cu_seqlens, packed.cu_seqlens, length, length)


def prepare_flex(packed: PackedWindows) -> None:
    """Build the block mask of ``attend_flex`` once per layout (outside any compiled block)."""
    packed.attend_state["flex_block_mask"] = flex_block_mask(packed)


def attend_flex(q: Tensor, k: Tensor, v: Tensor, packed: PackedWindows) -> Tensor:
    """One FlexAttention call; the block mask (``prepare_flex``) skips every block of keys outside
    the query's window."""
    mask = packed.attend_state.get("flex_block_mask")
    if mask is None:
        raise RuntimeError("this packed layout has no FlexAttention block mask (prepare_flex builds it)")
    # Inside a compiled block the plain function is traced into the block's graph; called eagerly,
    # it needs a compiled wrapper of its own to be fast.
    flex = _flex_function() if torch.compiler.is_compiling() else _flex_attention(q.device.type)
    # (T, H, D) -> (1, H, T, D).
    out = flex(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=mask)
    return out[0].transpose(0, 1)


def flex_block_mask(packed: PackedWindows):
    from torch.nn.attention.flex_attention import create_block_mask

    ids = packed.sequence_id

    def same_window(batch, head, q_index, kv_index):
        return ids[q_index] == ids[kv_index]

    total = ids.numel()
    # Compiled on the GPU: otherwise the mask is evaluated densely, T x T booleans (2.5 GB at 1080p).
    return create_block_mask(same_window, None, None, total, total, device=ids.device,
                             _compile=ids.device.type == "cuda")


def _flex_function():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


@functools.cache
def _flex_attention(device_type: str):
    # FlexAttention is fast only compiled; eager runs its dense reference (used on the CPU in tests).
    return torch.compile(_flex_function(), dynamic=False) if device_type == "cuda" else _flex_function()


def varlen_available(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str | None:
    """None if the "flash" kernels run on ``device`` for activations of ``dtype``, else why not."""
    if device.type != "cuda":
        return f"the varlen flash kernels need a CUDA GPU, not {device.type}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"the varlen flash kernels take fp16 or bf16, not {str(dtype).removeprefix('torch.')}"
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "the varlen flash kernels need an sm_80 (Ampere) or newer GPU"
    return None


def flex_available(device: torch.device) -> str | None:
    """None if compiled FlexAttention runs on ``device``, else why not."""
    if device.type != "cuda":
        return f"compiled FlexAttention needs a CUDA GPU here, not {device.type}"
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no FlexAttention"
    from torch.utils._triton import has_triton

    if not has_triton():
        return "FlexAttention needs Triton, which is not installed on this platform"
    return None
