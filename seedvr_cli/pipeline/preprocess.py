"""Input frames -> the model's clip: numz's transform, exactly (docs/reference-behaviour.md R2-R4).

Short-side resize (bicubic, antialias, torchvision semantics) -> optional second resize for
``max_resolution`` -> clamp [0, 1] -> zero-pad bottom/right to multiples of 16 -> [-1, 1] -> CTHW.
Integer frames (uint8, uint16 for 10/16-bit sources) become float32 in one division by their
full-scale value, so high-bit-depth input never passes through 8 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seedvr_cli.pipeline.plan import FrameSize

FULL_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}


def to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """Integer or float frames -> float32 in [0, 1] (floats are assumed to be in [0, 1] already)."""
    if frames.dtype.is_floating_point:
        return frames.to(torch.float32)
    if frames.dtype not in FULL_SCALE:
        raise TypeError(f"unsupported frame dtype {frames.dtype}; expected uint8, uint16 or float")
    return frames.to(torch.float32) / FULL_SCALE[frames.dtype]


def resize_bicubic(frames_tchw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's tensor ``resize`` with bicubic + antialias: float32 maths, input dtype back.

    Antialiased bicubic is the PIL/Keys a=-0.5 filter, unlike plain bicubic even when upscaling.
    """
    if tuple(frames_tchw.shape[-2:]) == tuple(size):
        return frames_tchw
    dtype = frames_tchw.dtype
    work = frames_tchw if dtype in (torch.float32, torch.float64) else frames_tchw.to(torch.float32)
    out = F.interpolate(work, size=list(size), mode="bicubic", align_corners=False, antialias=True)
    return out.to(dtype)


def preprocess(frames_thwc: torch.Tensor, frame_size: FrameSize) -> torch.Tensor:
    """``[T, H0, W0, C]`` frames (C = 3 or 4; alpha ignored) -> ``[3, T, Hp, Wp]`` float32 in [-1, 1]."""
    if tuple(frames_thwc.shape[1:3]) != frame_size.input:
        raise ValueError(f"frames are {tuple(frames_thwc.shape[1:3])}, the size plan is for {frame_size.input}")
    rgb = to_unit_float(frames_thwc[..., :3])
    # [T,H,W,C] -> [T,C,H,W] as a view: the channels-last memory layout is what numz has too.
    clip = rgb.permute(0, 3, 1, 2)
    # A max_resolution cap resamples a second time (not once to the final size), as numz does.
    clip = resize_bicubic(clip, frame_size.short_side)
    clip = resize_bicubic(clip, frame_size.resized)
    clip = clip.clamp(0.0, 1.0)
    pad_h = frame_size.padded[0] - clip.shape[-2]
    pad_w = frame_size.padded[1] - clip.shape[-1]
    if pad_h or pad_w:
        clip = F.pad(clip, (0, pad_w, 0, pad_h), value=0.0)
    clip = (clip - 0.5) / 0.5
    return clip.permute(1, 0, 2, 3)
