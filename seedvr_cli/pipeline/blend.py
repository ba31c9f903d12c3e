"""Temporal overlap blending: the crossfade weights, their fold into shares, and the weighted sum.

Output frame ``i`` is ``sum(share * window_out[local])`` over ``plan.contributions(i)``, summed
in float before anything is quantised. The shares come from one fold (:func:`fold_shares`), used
for windows by the temporal plan and, summed per chunk, for the chunks of work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from seedvr_cli.pipeline.temporal import TemporalPlan

BLEND_MODES = ("crossfade", "reference")


def blend_weights(overlap: int, mode: str = "crossfade") -> torch.Tensor:
    """Weights of the *earlier* window over ``overlap`` shared frames (the later one gets ``1 - w``).

    ``crossfade`` (ours): a raised cosine sampled strictly inside its ramp,
    ``w_i = 0.5 + 0.5 cos(pi (i+1) / (L+1))``, so every shared frame mixes both windows, the
    weights fall monotonically and ``w_i + w_{L-1-i} = 1``. ``reference``: numz's weights (a cosine
    over the middle third, linear for L <= 2), whose overlaps 1, 2 and 4 are hard cuts
    (docs/reference-behaviour.md R9); float32 evaluation order chosen to match numz bit for bit.
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


def weighted_sum(plan: TemporalPlan, window_outputs: Mapping[int, torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Timeline frames ``[start, stop)`` as ``sum(share * output)`` over the windows given, in window order.

    Outputs are float frames ``[t, ...]`` (float32 sums stay float32); a frame no given window
    covers stays 0. Quantise after this, once.
    """
    first = next(iter(window_outputs.values()))
    if not first.dtype.is_floating_point:
        raise TypeError(f"window outputs must be float to be blended before quantising, not {first.dtype}")
    total = torch.zeros((stop - start, *first.shape[1:]), dtype=first.dtype, device=first.device)
    for k in sorted(window_outputs):
        window = plan.windows[k]
        lo, hi = max(window.start, start), min(window.stop, stop)
        if lo >= hi:
            continue
        shares = torch.from_numpy(plan.window_shares(k)[lo - window.start : hi - window.start].copy())
        frames = window_outputs[k][lo - window.start : hi - window.start]
        total[lo - start : hi - start] += frames * shares.to(frames).view(-1, *([1] * (frames.dim() - 1)))
    return total


def assemble(plan: TemporalPlan, window_outputs: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """All output frames ``[T, ...]`` (prepended frames dropped) from every window's float output."""
    return weighted_sum(plan, window_outputs, plan.prepend, plan.timeline_length)
