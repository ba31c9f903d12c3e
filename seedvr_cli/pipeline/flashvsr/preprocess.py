"""FlashVSR's input preparation: the LR frames upscaled by ``scale`` (bicubic), centre-cropped to
multiples of 128 pixels, mapped to [-1, 1], and padded in time to the 8n+1 frames the streaming
schedule needs.

The maths is the ComfyUI node's and the standalone CLI's (``F.interpolate`` bicubic, no
antialias, ``align_corners=False``; the official scripts use PIL's bicubic, which differs by
rounding and kernel), checked against fixtures made by running their functions
(``scripts/make_flashvsr_glue_fixture.py``). One deliberate difference in time: the reference
keeps the largest 8n+1 <= frames + 4 and so drops up to 7 tail frames; here the clip is padded
up to the smallest 8n+1 >= frames + 4 with its last frame, so every input frame has an output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seedvr_cli.pipeline.flashvsr.choices import MIN_FRAMES

# The DiT's attention windows are 8x8 tokens of 16x16 pixels: frames are cut to multiples of 128.
SIZE_MULTIPLE = 128
# The decoders need 4 frames beyond the last one they output.
TAIL_FRAMES = 4


def output_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """``(height, width)`` of the output: the upscaled frame floored to multiples of 128."""
    if height < 1 or width < 1 or scale < 1:
        raise ValueError(f"frame {width}x{height} at scale {scale}")
    size = tuple(side * scale // SIZE_MULTIPLE * SIZE_MULTIPLE for side in (height, width))
    if min(size) < SIZE_MULTIPLE:
        raise ValueError(f"{width}x{height} x{scale} is {width * scale}x{height * scale}: FlashVSR needs at least "
                         f"{SIZE_MULTIPLE} pixels a side after upscaling")
    return size  # type: ignore[return-value]


def streamed_frames(frames: int) -> int:
    """Frames the streamer is given for a clip of ``frames``: at least the node's 21 (short clips
    are padded like the node pads them), plus 4 tail frames, rounded up to 8n+1."""
    if frames < 1:
        raise ValueError(f"a clip of {frames} frames")
    needed = max(frames, MIN_FRAMES) + TAIL_FRAMES
    return (needed - 1 + 7) // 8 * 8 + 1


def padded_indices(frames: int) -> list[int]:
    """Which input frame fills each streamed position: the clip, then its last frame repeated."""
    return [min(i, frames - 1) for i in range(streamed_frames(frames))]


def upscale_and_crop(frames: torch.Tensor, scale: int, dtype: torch.dtype) -> torch.Tensor:
    """``frames`` ``[T, H, W, C]`` (C = 3, float in [0, 1]) -> LQ video ``[1, 3, T, tH, tW]`` in
    [-1, 1] at the output size, in ``dtype``.

    Bicubic in float32 at ``H*scale x W*scale``, centre crop, then (in ``dtype``, as the node
    does) ``x * 2 - 1``. Values overshooting [0, 1] by the bicubic kernel are kept, as there.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {tuple(frames.shape)}")
    cropped = upscale_planes(frames.permute(0, 3, 1, 2), scale)
    return (cropped.to(dtype) * 2.0 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)


def upscale_planes(planes: torch.Tensor, scale: int) -> torch.Tensor:
    """``planes`` ``[T, C, H, W]`` -> float32 ``[T, C, tH, tW]``: bicubic at ``H*scale x W*scale``,
    then the centre crop to the output size. The LQ video's RGB and an input's alpha go through
    this one function, so both land on the same output pixels."""
    _, _, height, width = planes.shape
    target_h, target_w = output_size(height, width, scale)
    big = F.interpolate(planes.float(), size=(height * scale, width * scale), mode="bicubic", align_corners=False)
    top = (height * scale - target_h) // 2
    left = (width * scale - target_w) // 2
    return big[:, :, top : top + target_h, left : left + target_w]


def unit_range(frames: torch.Tensor) -> torch.Tensor:
    """Integer frames (uint8, uint16) or float frames to float32 in [0, 1]."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if frames.dtype == torch.uint16:
        return frames.float() / 65535.0
    if frames.dtype in (torch.int32, torch.int64):
        raise TypeError(f"frames of {frames.dtype}: give uint8, uint16 or float in [0, 1]")
    return frames.float()
