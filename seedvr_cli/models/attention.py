"""Window partitioning and windowed video+text attention of the NaDiT (docs/reference-behaviour.md R26, R27).

Pure maths, no parameters. Three layers:

1. ``window_partition(grid, method)``: the reference's window lists, exactly (float64 sizing,
   round-half-even, regular and shifted), in the reference order.
2. ``WindowPlan``: everything about one call's partition that does not depend on the activations —
   index tensors gathering each window's video tokens and its sample's text, windows of identical
   shape grouped, and their rope cos/sin tables. Built once per forward per method and reused by
   every block with that method.
3. Attention backends: ``backend(vid_qkv, txt_qkv, plan, need_txt) -> (vid_out, txt_out)``, looked
   up by name in ``ATTENTION_BACKENDS``. "sdpa" (default) batches the windows of each group into
   one ``scaled_dot_product_attention`` call (no padding, so exact); "reference" runs one plain
   softmax attention per window and is the oracle the tests compare with. "flash" (varlen flash /
   cuDNN) and "flex" (FlexAttention) attend to every window of a layer in one call over the plan's
   packed layout (``packed_attention.py``); ``attention_choice.py`` picks one for a device.

Inputs to a backend: q/k/v of shape (L, heads, head_dim) for the packed video tokens and the packed
text tokens, q/k already RMS-normalised; text q/k already rotated where the rope rotates text (the
text rotation does not depend on the window). The backend applies the per-window video rotation.
Outputs: video (Lv, heads, head_dim) and, if asked, text (Lt, heads, head_dim) = the mean over the
sample's windows of each text token's outputs, accumulated in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .packed_attention import (
    PackedWindows,
    attend_flex,
    attend_varlen,
    build_packed_windows,
    packed_window_attention,
    prepare_flex,
)
from .rope import RopeSpec, apply_rope

Window = tuple[int, int, int, int, int, int]  # [t0, t1, h0, h1, w0, w1), token coordinates
Grid = tuple[int, int, int]  # (t, h, w) tokens of one sample, after patching

# One 720p frame in tokens (45 x 80): the reference sizes windows as if the frame were 720p.
_720P_TOKENS = 45 * 80
# The temporal window size stops growing past this many latent frames.
_MAX_WINDOW_FRAMES = 30
# Upper bound on (windows x sequence length) per SDPA call: the gathered, rotated q/k/v copies of
# one call stay at a few hundred MB at 7B width (32k tokens x 3072 x fp32 = 400 MB), while one call
# (about ten 720p windows) still fills a large GPU.
SDPA_MAX_BATCH_TOKENS = 1 << 15


# ---------------------------------------------------------------------------------------------
# 1. Partition


def window_sizes(grid: Grid, window: tuple[int, int, int] = (4, 3, 3)) -> tuple[int, int, int]:
    """Window size in tokens along (t, h, w): ``window`` counts windows of a 720p-equivalent frame."""
    t, h, w = grid
    nt, nh, nw = window
    scale = math.sqrt(_720P_TOKENS / (h * w))  # float64
    # round() is round-half-to-even, as in the reference.
    resized_h, resized_w = round(h * scale), round(w * scale)
    return math.ceil(min(t, _MAX_WINDOW_FRAMES) / nt), math.ceil(resized_h / nh), math.ceil(resized_w / nw)


def regular_spans(extent: int, size: int) -> list[tuple[int, int]]:
    return [(i * size, min((i + 1) * size, extent)) for i in range(math.ceil(extent / size))]


def shifted_spans(extent: int, size: int) -> list[tuple[int, int]]:
    """Windows shifted by half a window when the axis holds more than one; empty ones dropped."""
    if size >= extent:
        return [(0, extent)]
    spans = []
    for i in range(math.ceil((extent - 0.5) / size) + 1):
        # int() truncates; on the clamped non-negative values that is floor.
        start, stop = max(int((i - 0.5) * size), 0), min(int((i + 0.5) * size), extent)
        if stop > start:
            spans.append((start, stop))
    return spans


def window_partition(grid: Grid, method: str, window: tuple[int, int, int] = (4, 3, 3)) -> list[Window]:
    """The windows of one sample's token grid for ``method`` "regular" or "shifted".

    Order as in the reference: w-axis outermost, then h, then t innermost.
    """
    if method == "regular":
        spans = regular_spans
    elif method == "shifted":
        spans = shifted_spans
    else:
        raise ValueError(f"unknown window method {method!r} (regular or shifted)")
    sizes = window_sizes(grid, window)
    t_spans, h_spans, w_spans = (spans(n, m) for n, m in zip(grid, sizes))
    return [(t0, t1, h0, h1, w0, w1) for (w0, w1) in w_spans for (h0, h1) in h_spans for (t0, t1) in t_spans]


# ---------------------------------------------------------------------------------------------
# 2. Plan


@dataclass(frozen=True)
class WindowGroup:
    """Windows with the same shape and text length: one batched attention call (or a few)."""

    shape: Grid  # window extent (nt, nh, nw)
    txt_len: int
    vid_index: Tensor  # (G, nt*nh*nw) rows of the packed video tokens, (t, y, x) raster per window
    txt_index: Tensor  # (G, txt_len) rows of the packed text tokens of each window's sample
    vid_cos: Tensor | None  # (nt*nh*nw, 1, r) float32 rope tables of the window's video tokens
    vid_sin: Tensor | None


@dataclass(frozen=True)
class WindowPlan:
    """One call's partition for one window method (see module docstring)."""

    method: str
    grids: tuple[Grid, ...]
    txt_lens: tuple[int, ...]
    windows: tuple[tuple[Window, ...], ...]  # per sample
    groups: tuple[WindowGroup, ...]
    txt_window_count: Tensor  # (Lt,) float32: windows of each text token's sample
    rope: RopeSpec | None
    # Every window back to back, for the backends that attend to all windows in one call
    # (``packed_attention.py``); added by ``with_packed_layout``.
    packed: PackedWindows | None = None


def with_packed_layout(plan: WindowPlan, head_dim: int, backend: str = "flash") -> WindowPlan:
    """``plan`` with its packed layout for heads of ``head_dim`` and whatever ``backend`` (one of
    ``PACKED_BACKENDS``) builds from it once, outside the blocks (FlexAttention's block mask)."""
    packed = build_packed_windows(plan, head_dim)
    prepare = PACKED_BACKENDS.get(backend)
    if prepare is not None:
        prepare(packed)
    return replace(plan, packed=packed)


def build_window_plan(
    grids: Sequence[Grid],
    txt_lens: Sequence[int],
    method: str,
    window: tuple[int, int, int] = (4, 3, 3),
    rope: RopeSpec | None = None,
    device: torch.device | str | None = None,
) -> WindowPlan:
    """Partition every sample and group the windows; index tensors and rope tables on ``device``."""
    grids = tuple(tuple(int(n) for n in g) for g in grids)
    txt_lens = tuple(int(n) for n in txt_lens)
    if len(grids) != len(txt_lens):
        raise ValueError(f"{len(grids)} video samples but {len(txt_lens)} text lengths")

    windows = tuple(tuple(window_partition(g, method, window)) for g in grids)
    members: dict[tuple[Grid, int], tuple[list[Tensor], list[Tensor]]] = {}
    vid_offset = txt_offset = 0
    counts = []
    for grid, txt_len, sample_windows in zip(grids, txt_lens, windows):
        rows = torch.arange(vid_offset, vid_offset + math.prod(grid)).view(grid)
        txt_rows = torch.arange(txt_offset, txt_offset + txt_len)
        for t0, t1, h0, h1, w0, w1 in sample_windows:
            key = ((t1 - t0, h1 - h0, w1 - w0), txt_len)
            vid_list, txt_list = members.setdefault(key, ([], []))
            vid_list.append(rows[t0:t1, h0:h1, w0:w1].reshape(-1))
            txt_list.append(txt_rows)
        counts.append(torch.full((txt_len,), float(len(sample_windows))))
        vid_offset += math.prod(grid)
        txt_offset += txt_len

    groups = []
    for (shape, txt_len), (vid_list, txt_list) in members.items():
        cos = sin = None
        if rope is not None:
            cos, sin = _rope_tables(rope.video_angles(shape, txt_len), device)
        groups.append(
            WindowGroup(
                shape=shape,
                txt_len=txt_len,
                vid_index=torch.stack(vid_list).to(device),
                txt_index=torch.stack(txt_list).to(device),
                vid_cos=cos,
                vid_sin=sin,
            )
        )
    window_count = torch.cat(counts) if counts else torch.zeros(0)
    return WindowPlan(method, grids, txt_lens, windows, tuple(groups), window_count.to(device), rope)


def text_rope_tables(rope: RopeSpec, txt_lens: Sequence[int], device=None) -> tuple[Tensor, Tensor] | None:
    """cos/sin (Lt, 1, r) for the packed text tokens (positions restart at 0 per sample); None for
    a rope that leaves text alone."""
    if not rope.rotates_text:
        return None
    angles = torch.cat([rope.text_angles(n) for n in txt_lens])
    return _rope_tables(angles, device)


def _rope_tables(angles: Tensor, device) -> tuple[Tensor, Tensor]:
    """cos/sin (S, 1, r) computed on the CPU, then moved: a GPU's cos/sin of angles up to 128·pi
    differ from the CPU's by ulps, so every device gets the same tables this way (cached per plan)."""
    angles = angles.cpu()
    return angles.cos()[:, None, :].to(device), angles.sin()[:, None, :].to(device)


# ---------------------------------------------------------------------------------------------
# 3. Backends

QKV = tuple[Tensor, Tensor, Tensor]
AttentionBackend = Callable[[QKV, QKV, WindowPlan, bool], tuple[Tensor, Tensor | None]]


def sdpa_window_attention(vid: QKV, txt: QKV, plan: WindowPlan, need_txt: bool) -> tuple[Tensor, Tensor | None]:
    """Batched exact attention: per group, gather windows, rotate, one SDPA call, scatter back."""
    q_vid, k_vid, v_vid = vid
    q_txt, k_txt, v_txt = txt
    out_vid = torch.empty_like(v_vid)
    txt_sum = v_txt.new_zeros(v_txt.shape, dtype=torch.float32) if need_txt else None

    for group in plan.groups:
        num_vid = group.vid_index.shape[1]
        seq = num_vid + group.txt_len
        step = max(1, SDPA_MAX_BATCH_TOKENS // seq)
        for start in range(0, group.vid_index.shape[0], step):
            vid_rows = group.vid_index[start : start + step]
            txt_rows = group.txt_index[start : start + step]
            q, k, v = (
                _window_sequences(xv, xt, vid_rows, txt_rows, group, rotate)
                for xv, xt, rotate in ((q_vid, q_txt, True), (k_vid, k_txt, True), (v_vid, v_txt, False))
            )
            # (G, S, H, D) -> (G, H, S, D) for SDPA; the default scale is 1/sqrt(head_dim).
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2)
            out_vid.index_copy_(0, vid_rows.reshape(-1), out[:, :num_vid].reshape(-1, *out.shape[2:]))
            if txt_sum is not None:
                txt_sum.index_add_(0, txt_rows.reshape(-1), out[:, num_vid:].reshape(-1, *out.shape[2:]).float())

    out_txt = None
    if txt_sum is not None:
        out_txt = (txt_sum / plan.txt_window_count[:, None, None]).to(v_txt.dtype)
    return out_vid, out_txt


def _window_sequences(
    x_vid: Tensor, x_txt: Tensor, vid_rows: Tensor, txt_rows: Tensor, group: WindowGroup, rotate: bool
) -> Tensor:
    """(G, nv + nt, H, D): each window's video tokens (rotated by window position) then its text."""
    windows = x_vid[vid_rows]
    if rotate and group.vid_cos is not None:
        windows = apply_rope(windows, group.vid_cos, group.vid_sin)
    return torch.cat((windows, x_txt[txt_rows]), dim=1)


def reference_window_attention(
    vid: QKV, txt: QKV, plan: WindowPlan, need_txt: bool
) -> tuple[Tensor, Tensor | None]:
    """One explicit softmax attention per window, straight from the spec; slow, obviously right."""
    q_vid, k_vid, v_vid = vid
    q_txt, k_txt, v_txt = txt
    out_vid = torch.empty_like(v_vid)
    out_txt = torch.zeros(v_txt.shape, dtype=torch.float32, device=v_txt.device)
    vid_offset = txt_offset = 0
    for grid, txt_len, windows in zip(plan.grids, plan.txt_lens, plan.windows):
        rows = torch.arange(vid_offset, vid_offset + math.prod(grid), device=v_vid.device).view(grid)
        txt_rows = slice(txt_offset, txt_offset + txt_len)
        for t0, t1, h0, h1, w0, w1 in windows:
            index = rows[t0:t1, h0:h1, w0:w1].reshape(-1)
            q, k = q_vid[index], k_vid[index]
            if plan.rope is not None:
                angles = plan.rope.video_angles((t1 - t0, h1 - h0, w1 - w0), txt_len)
                cos, sin = angles.cos()[:, None, :].to(q.device), angles.sin()[:, None, :].to(q.device)
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            q = torch.cat((q, q_txt[txt_rows]))
            k = torch.cat((k, k_txt[txt_rows]))
            v = torch.cat((v_vid[index], v_txt[txt_rows]))
            scores = torch.einsum("shd,uhd->hsu", q, k) / math.sqrt(q.shape[-1])
            out = torch.einsum("hsu,uhd->shd", scores.softmax(dim=-1), v)
            out_vid[index] = out[: len(index)]
            out_txt[txt_rows] += out[len(index) :].float() / len(windows)
        vid_offset += math.prod(grid)
        txt_offset += txt_len
    return out_vid, out_txt.to(v_txt.dtype) if need_txt else None


def flash_window_attention(vid: QKV, txt: QKV, plan: WindowPlan, need_txt: bool) -> tuple[Tensor, Tensor | None]:
    """Every window of the layer in one varlen flash/cuDNN call (``packed_attention.py``)."""
    return packed_window_attention(vid, txt, plan, need_txt, attend_varlen)


def flex_window_attention(vid: QKV, txt: QKV, plan: WindowPlan, need_txt: bool) -> tuple[Tensor, Tensor | None]:
    """Every window of the layer in one FlexAttention call with a per-window block mask."""
    return packed_window_attention(vid, txt, plan, need_txt, attend_flex)


ATTENTION_BACKENDS: dict[str, AttentionBackend] = {
    "sdpa": sdpa_window_attention,
    "reference": reference_window_attention,
    "flash": flash_window_attention,
    "flex": flex_window_attention,
}
# Backends that read ``WindowPlan.packed`` (the model builds that layout with the plan), each with
# what it prepares from the layout once per plan, if anything.
PACKED_BACKENDS: dict[str, Callable[[PackedWindows], None] | None] = {"flash": None, "flex": prepare_flex}


def register_attention_backend(name: str, backend: AttentionBackend, packed: bool = False,
                               prepare: Callable[[PackedWindows], None] | None = None) -> None:
    """Make a backend selectable by name; ``packed``: it reads the plan's packed layout, on which
    ``prepare`` runs once per plan."""
    ATTENTION_BACKENDS[name] = backend
    if packed:
        PACKED_BACKENDS[name] = prepare


def attention_backend(name: str) -> AttentionBackend:
    try:
        return ATTENTION_BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(ATTENTION_BACKENDS)}") from None
