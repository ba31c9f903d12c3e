"""FlashVSR's colour fix: adaptive instance normalisation of each output frame to its LQ frame.

Every reference pipeline calls its wavelet colour corrector with ``method='adain'`` (tooltips
say "wavelet"; the code says adain): per frame and channel, the output's mean and standard
deviation over the frame are replaced by the LQ frame's, then values are clamped to [-1, 1].
Standard deviations are ``sqrt(biased variance + 1e-5)``. Frames are independent, so fixing a
clip chunk by chunk equals fixing it whole. The statistics are taken in float32 (the reference
takes them in the pipeline's bf16, which rounds the variance of a large frame coarsely).
"""

from __future__ import annotations

import torch

_EPS = 1e-5


def _mean_std(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = frames.flatten(-2)
    variance = flat.var(dim=-1, unbiased=False) + _EPS
    return flat.mean(dim=-1)[..., None, None], variance.sqrt()[..., None, None]


def adain_color_fix(output: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """``output`` and ``lq`` ``[1, 3, f, H, W]`` in [-1, 1] -> the colour-fixed output, float32."""
    if output.shape != lq.shape or output.dim() != 5:
        raise ValueError(f"output {tuple(output.shape)} and LQ {tuple(lq.shape)} must both be [B, 3, f, H, W]")
    out = output.float().transpose(1, 2)  # [B, f, C, H, W]: statistics per frame and channel
    ref = lq.float().transpose(1, 2)
    out_mean, out_std = _mean_std(out)
    ref_mean, ref_std = _mean_std(ref)
    fixed = (out - out_mean) / out_std * ref_std + ref_mean
    return fixed.clamp(-1.0, 1.0).transpose(1, 2)
