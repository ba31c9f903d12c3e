"""Temporal overlap blending: the crossfade weights and the assembly of window outputs.

Assembly is a pure function of a :class:`~seedvr_cli.pipeline.temporal.TemporalPlan` and the
window outputs: output frame ``i`` is ``sum(weight * window_out[local])`` over
``plan.contributions(i)``. Nothing else is needed, so a streaming assembler can emit frame ``i``
as soon as the windows it names have finished, in any order of completion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from seedvr_cli.pipeline.temporal import Contribution, TemporalPlan

BLEND_MODES = ("crossfade", "reference")


def blend_weights(overlap: int, mode: str = "crossfade") -> torch.Tensor:
    """Weights of the *earlier* window over ``overlap`` shared frames (the later one gets ``1 - w``).

    ``crossfade`` (ours): a raised cosine sampled strictly inside its ramp,
    ``w_i = 0.5 + 0.5 cos(pi (i+1) / (L+1))``, so every shared frame mixes both windows, the
    weights fall monotonically and ``w_i + w_{L-1-i} = 1``. ``reference``: numz's weights (a cosine
    over the middle third, linear for L <= 2), whose overlaps 1, 2 and 4 are hard cuts
    (PIPELINE.md b.2.6, h.6); float32 evaluation order chosen to match numz bit for bit.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if overlap == 0:
        return torch.zeros(0)
    if mode == "crossfade":
        steps = torch.arange(1, overlap + 1, dtype=torch.float64) / (overlap + 1)
        return (0.5 + 0.5 * torch.cos(math.pi * steps)).to(torch.float32)
    if mode == "reference":
        if overlap < 3:
            return torch.linspace(1.0, 0.0, overlap)
        position = torch.linspace(0.0, 1.0, overlap)
        ramp = ((position - 1.0 / 3.0) / (1.0 / 3.0)).clamp(0.0, 1.0)
        return 0.5 + 0.5 * torch.cos(math.pi * ramp)
    raise ValueError(f"unknown blend mode {mode!r}; expected one of {BLEND_MODES}")


def fold_shares(spans: Sequence[tuple[int, int]], earlier: Callable[[int], Sequence[float]]) -> list[np.ndarray]:
    """Each span's share of each of its frames (float64), the spans folded in order as numz writes windows.

    ``spans``: consecutive ``(start, stop)`` ranges whose starts and stops both increase, with no
    gap. Span ``j`` enters over the ``L`` frames its predecessor still covers; at its local frame
    ``i < L`` every earlier span still covering that frame is scaled by ``earlier(L)[i]`` and span
    ``j`` gets ``1 - earlier(L)[i]``, so the shares of every frame sum to 1. Zero shares (numz's
    hard cuts) are kept: the span does cover the frame.
    """
    for (start, stop), (next_start, next_stop) in zip(spans, spans[1:]):
        if not (start < next_start <= stop < next_stop):
            raise ValueError(f"spans {start}:{stop} and {next_start}:{next_stop} do not advance contiguously")
    shares = [np.ones(stop - start, dtype=np.float64) for start, stop in spans]
    for j in range(1, len(spans)):
        start = spans[j][0]
        entering = spans[j - 1][1] - start
        weights = np.asarray(earlier(entering), dtype=np.float64)
        if weights.shape != (entering,) or np.any((weights < 0) | (weights > 1)):
            raise ValueError(f"earlier({entering}) must give {entering} weights in [0, 1], got {weights}")
        # Stops increase, so the earlier spans still covering these frames are the last few.
        for k in range(j - 1, -1, -1):
            k_start, k_stop = spans[k]
            if k_stop <= start:
                break
            shares[k][start - k_start : k_stop - k_start] *= weights[: k_stop - start]
        shares[j][:entering] = 1.0 - weights
    for share in shares:
        share.setflags(write=False)
    return shares


def summed_shares(
    spans: Sequence[tuple[int, int]], shares: Sequence[np.ndarray], indices: Sequence[int], start: int, stop: int
) -> np.ndarray:
    """Per frame of ``[start, stop)``: the sum of the shares of spans ``indices`` (each inside that range)."""
    total = np.zeros(stop - start, dtype=np.float64)
    for k in indices:
        k_start, k_stop = spans[k]
        if not start <= k_start < k_stop <= stop:
            raise ValueError(f"span {k_start}:{k_stop} is not inside {start}:{stop}")
        total[k_start - start : k_stop - start] += shares[k]
    return total


def blend_frame(contributions: Sequence[Contribution], window_outputs: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """One output frame from the window outputs it draws on (``window index -> [t, ...]`` frames).

    Float outputs are mixed in float32 (a single contribution is passed through unchanged);
    integer outputs (finished uint8/uint16 chunks) are mixed in float32 and rounded back.
    """
    if len(contributions) == 1:
        only = contributions[0]
        return window_outputs[only.window][only.local]
    first = window_outputs[contributions[0].window][contributions[0].local]
    mixed = torch.zeros(first.shape, dtype=torch.float32, device=first.device)
    for part in contributions:
        mixed += part.weight * window_outputs[part.window][part.local].to(torch.float32)
    if first.dtype.is_floating_point:
        return mixed.to(first.dtype)
    info = torch.iinfo(first.dtype)
    return mixed.round_().clamp_(info.min, info.max).to(first.dtype)


def assemble_timeline(plan: TemporalPlan, window_outputs: Mapping[int, torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Timeline frames ``[start, stop)`` from the windows at hand, shares renormalized over them.

    For a chunk of consecutive windows this gives the chunk's own frames: interior frames are
    final, and a frame shared with a window outside the chunk is that window-free blend of the
    chunk's windows (the raw window frame when only one of them covers it). Crossfading two chunks
    over their shared frames with ``blend_weights(L, plan.blend)`` then reproduces :func:`assemble`
    whenever at most two windows cover any frame (``overlap <= batch_size - overlap``).
    """
    frames = []
    for j in range(start, stop):
        parts = [p for p in plan.timeline_contributions(j) if p.window in window_outputs]
        if not parts:
            raise KeyError(f"no window output given for timeline frame {j}")
        total = sum(p.weight for p in parts)
        parts = [type(p)(p.window, p.local, p.weight / total if total > 0 else 1.0 / len(parts)) for p in parts]
        frames.append(blend_frame(parts, window_outputs))
    return torch.stack(frames)


def assemble(plan: TemporalPlan, window_outputs: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """All output frames ``[T, ...]`` (prepended frames dropped) from every window's output."""
    return torch.stack([blend_frame(plan.contributions(i), window_outputs) for i in range(plan.num_frames)])
