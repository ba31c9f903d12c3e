"""A planned window upscaled as shorter, overlapping sub-windows: ``upscale_in_subwindows``.

The last step of ``--vram auto``'s out-of-memory step-down. A chunk's windows are planned before any
device sees them (their blend shares, the chunks and the output timing depend on them), so a window
that no memory saver can fit keeps its place in the plan and is only computed in pieces: its real
frames are cut into sub-windows of at most ``max_frames`` frames (4n+1, as the VAE needs) that
overlap by a few frames, each is upscaled like any window, and the overlaps are crossfaded into the
window's output. The models see fewer frames at once, so the pictures change.

Each sub-window's noise comes from a seed derived from the run's seed, the window's start and the
sub-window's place in it (never from global RNG state), so the output is the same on any GPU and
with any number of workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from seedvr_cli.pipeline.finite import FiniteGuard
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.pipeline.temporal import Window, plan_windows
from seedvr_cli.pipeline.window import LatentCodec, PhaseTimes, VelocityModel, WindowSettings, upscale_window

# Enough shared frames to hide the seam, few enough that the extra frames cost little.
MAX_SUBWINDOW_OVERLAP = 4


def subwindow_overlap(max_frames: int) -> int:
    """Frames two neighbouring sub-windows share: a quarter of their length, at most 4 (none for 1 frame)."""
    return min(MAX_SUBWINDOW_OVERLAP, (max_frames - 1) // 4)


def subwindow_seed(seed: int, window_start: int, sub_start: int, sub_frames: int) -> int:
    """The seed of the sub-window at ``sub_start`` (of ``sub_frames`` padded frames) inside the window
    starting at timeline frame ``window_start``: distinct from every window's and sub-window's."""
    digest = hashlib.sha256(f"seedvr-cli:{seed}:{window_start}:sub:{sub_start}:{sub_frames}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@torch.inference_mode()
def upscale_in_subwindows(
    frames: torch.Tensor,
    *,
    max_frames: int,
    vae: LatentCodec,
    dit: VelocityModel,
    text_embedding: torch.Tensor,
    settings: WindowSettings,
    window: Window,
    times: PhaseTimes | None = None,
    finite: FiniteGuard | None = None,
) -> torch.Tensor:
    """``upscale_window`` of ``window`` computed in sub-windows of at most ``max_frames`` frames.

    Same arguments and output as ``upscale_window`` (``[window.length, Ht, Wt, C]``); a window of
    at most ``max_frames`` padded frames is upscaled whole, exactly as ``upscale_window`` does.
    """
    if max_frames < 1 or max_frames % 4 != 1:
        raise ValueError(f"sub-windows of {max_frames} frames: the VAE needs 4n+1")
    if window.padded_length <= max_frames:
        return upscale_window(frames, vae=vae, dit=dit, text_embedding=text_embedding, settings=settings,
                              window=window, times=times, finite=finite)
    if frames.shape[0] != window.padded_length:
        raise ValueError(f"window {window.index} needs {window.padded_length} frames (padding included), "
                         f"got {frames.shape[0]}")
    # Only the real frames are cut: each sub-window pads its own end, as a planned window does.
    parts = plan_windows(window.length, batch_size=max_frames, overlap=subwindow_overlap(max_frames))
    unquantized = replace(settings, output_dtype=None)
    blended = None
    for part in parts.windows:
        sub = Window(window.index, window.start + part.start, window.start + part.stop,
                     tuple(window.source[j] for j in part.source), window.start + part.write_start)
        sub_settings = replace(unquantized, seed=subwindow_seed(settings.seed, window.start, part.start,
                                                                part.padded_length))
        local = torch.tensor(part.source, device=frames.device)
        output = upscale_window(frames.index_select(0, local), vae=vae, dit=dit, text_embedding=text_embedding,
                                settings=sub_settings, window=sub, times=times, finite=finite)
        if blended is None:
            blended = output.new_zeros((window.length, *output.shape[1:]))
        shares = torch.from_numpy(parts.window_shares(part.index).astype(np.float32)).to(output.device)
        blended[part.start : part.stop] += output * shares.view(-1, *([1] * (output.dim() - 1)))
    return quantize(blended, settings.output_dtype)
