"""Temporal overlap blending: the crossfade weights and the assembly of window outputs.

Assembly is a pure function of a :class:`~seedvr_cli.pipeline.temporal.TemporalPlan` and the
window outputs: output frame ``i`` is ``sum(weight * window_out[local])`` over
``plan.contributions(i)``. Nothing else is needed, so a streaming assembler can emit frame ``i``
as soon as the windows it names have finished, in any order of completion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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
