"""Edge-guided alpha upscaling for RGBA inputs, numz's method (docs/reference-behaviour.md R11).

Only RGB goes through the models; alpha is resized with the same bicubic filter and then
sharpened by a guided filter steered by the upscaled RGB, with extra thresholding for nearly
binary masks so cut-out edges stay crisp. Works per frame on ``[T, 1, H, W]`` tensors; the
caller passes the alpha of the *real* frames of a window (padding trimmed like the RGB): the
reference keeps alpha at the padded length and crashes on padded or overlapped windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seedvr_cli.pipeline.preprocess import resize_bicubic

BINARY_SHARE = 0.95
BINARY_LOW, BINARY_HIGH = 0.1, 0.9
GUIDED_EPS = 0.002
BINARY_RADIUS, SOFT_RADIUS = 2, 3
SOLID_EDGE = 0.05
FLAT_EDGE = 0.03
STRONG_EDGE = 0.15
EDGE_RAMP = 0.25
SIGMOID_GAIN = 12.0


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)² window, zero padding counted (as the reference's average pooling)."""
    return F.avg_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius, count_include_pad=True)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter, ``[T, 1, H, W]`` guide and source."""
    mean_guide = box_mean(guide, radius)
    mean_source = box_mean(source, radius)
    covariance = box_mean(guide * source, radius) - mean_guide * mean_source
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return box_mean(a, radius) * guide + box_mean(b, radius)


def sobel_edges(rgb: torch.Tensor) -> torch.Tensor:
    """Per-frame edge strength in [0, 1] of ``[T, 3, H, W]`` RGB in [0, 1], quantized to 1/255.

    Grey as OpenCV's 8-bit RGB->GRAY, 3x3 Sobel with reflect-101 borders, magnitude divided by its
    per-frame maximum.
    """
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=rgb.device)
    grey8 = (rgb.float().clamp(0, 1) * 255.0).round()
    grey = (grey8 * weights[None, :, None, None]).sum(dim=1, keepdim=True).round()
    padded = F.pad(grey, (1, 1, 1, 1), mode="reflect")
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=rgb.device)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    gradients = F.conv2d(padded, kernels)
    magnitude = gradients.pow(2).sum(dim=1, keepdim=True).sqrt()
    peak = magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
    return ((magnitude / peak) * 255.0).floor() / 255.0


def is_binary_mask(alpha: torch.Tensor) -> bool:
    near_binary = (alpha < BINARY_LOW) | (alpha > BINARY_HIGH)
    return float(near_binary.float().mean()) > BINARY_SHARE


def upscale_alpha(alpha: torch.Tensor, rgb: torch.Tensor, resized: torch.Tensor | None = None) -> torch.Tensor:
    """Alpha ``[T, 1, h, w]`` in [0, 1] -> ``[T, 1, H, W]`` guided by upscaled RGB ``[T, 3, H, W]``.

    ``rgb`` may be in [-1, 1] (mapped to [0, 1] when it has negative values) or [0, 1].
    ``resized``: ``alpha`` already brought to ``[T, 1, H, W]`` the way the RGB was (an engine that
    crops after resizing, as FlashVSR does); by default ``alpha`` is resized here (antialiased bicubic).
    """
    if alpha.shape[0] != rgb.shape[0]:
        raise ValueError(f"alpha has {alpha.shape[0]} frames, RGB {rgb.shape[0]}: trim both to the same frames")
    rgb = rgb.float()
    if float(rgb.min()) < 0:
        rgb = (rgb + 1.0) / 2.0
    rgb = rgb.clamp(0.0, 1.0)
    alpha = alpha.float()
    if resized is None:
        resized = resize_bicubic(alpha, tuple(rgb.shape[-2:]))
    elif resized.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"resized alpha is {tuple(resized.shape[-2:])}, RGB {tuple(rgb.shape[-2:])}")
    resized = resized.float().clamp(0.0, 1.0)
    guide = rgb.mean(dim=1, keepdim=True)
    edges = sobel_edges(rgb)

    if not is_binary_mask(alpha):
        return guided_filter(guide, resized, SOFT_RADIUS, GUIDED_EPS).clamp(0.0, 1.0)

    filtered = guided_filter(guide, resized, BINARY_RADIUS, GUIDED_EPS)
    pooled_edges = F.max_pool2d(edges, kernel_size=3, stride=1, padding=1)
    hard = (filtered > 0.5).float()
    edge_weight = (edges / EDGE_RAMP).clamp(0.0, 1.0)
    sharpened = (1 - edge_weight) * filtered + edge_weight * torch.sigmoid(SIGMOID_GAIN * (filtered - 0.5))
    out = torch.where(pooled_edges < SOLID_EDGE, hard, sharpened)
    out = torch.where(pooled_edges < FLAT_EDGE, (out > 0.5).float(), out)
    undecided = (out > 0.3) & (out < 0.7) & (edges <= STRONG_EDGE)
    out = torch.where(undecided, (out > 0.5).float(), out)
    return out.clamp(0.0, 1.0)
