"""An RGBA input's alpha beside FlashVSR's RGB: the models see RGB only; the alpha of a segment's
frames is resized and centre-cropped exactly like the LQ video (``preprocess.upscale_planes``),
then refined by ``pipeline.alpha.upscale_alpha`` guided by the segment's output frames, so the
edges follow what the model drew.
"""

from __future__ import annotations

import torch

from seedvr_cli.pipeline.alpha import upscale_alpha
from seedvr_cli.pipeline.flashvsr.preprocess import unit_range, upscale_planes


def segment_alpha(alpha: torch.Tensor, rgb: torch.Tensor, scale: int) -> torch.Tensor:
    """``alpha`` ``[t, h, w, 1]`` (uint8, uint16 or float in [0, 1]) of a segment's input frames and
    ``rgb`` ``[t, H, W, 3]`` its upscaled frames in about [0, 1] -> ``[t, H, W, 1]`` float32 in [0, 1]."""
    low = unit_range(alpha).permute(0, 3, 1, 2)
    resized = upscale_planes(low, scale)
    # Clamped here: the model's overshoot below 0 would read as a [-1, 1] picture to upscale_alpha.
    guide = rgb.permute(0, 3, 1, 2).clamp(0.0, 1.0)
    return upscale_alpha(low, guide, resized).permute(0, 2, 3, 1)
