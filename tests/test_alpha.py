"""Edge-guided alpha upscaling (docs/reference-behaviour.md R11)."""

from __future__ import annotations

import pytest
import torch

from seedvr_cli.pipeline.alpha import guided_filter, is_binary_mask, sobel_edges, upscale_alpha


def _disc_alpha(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((y - size / 2) ** 2 + (x - size / 2) ** 2) < (size / 3) ** 2).float()[None, None]


def test_guided_filter_keeps_constants_inside():
    guide = torch.rand(1, 1, 20, 20)
    out = guided_filter(guide, torch.full((1, 1, 20, 20), 0.7), radius=2, eps=0.002)
    # Zero padding counts in the box means, so only the interior is exactly preserved.
    assert torch.allclose(out[..., 4:-4, 4:-4], torch.full((12, 12), 0.7), atol=1e-4)


def test_sobel_edges_are_normalized_per_frame():
    rgb = torch.zeros(2, 3, 16, 16)
    rgb[0, :, :, 8:] = 1.0
    rgb[1, :, :, 8:] = 0.2  # weaker edge, same normalized strength
    edges = sobel_edges(rgb)
    assert edges.shape == (2, 1, 16, 16)
    assert float(edges[0].max()) == 1.0 and float(edges[1].max()) == 1.0
    assert float(edges[0, 0, :, 0].max()) == 0.0


def test_binary_mask_stays_crisp_when_upscaled():
    alpha = _disc_alpha(16)
    assert is_binary_mask(alpha)
    rgb = torch.nn.functional.interpolate(alpha.expand(1, 3, 16, 16), size=(32, 32), mode="nearest") * 2 - 1
    out = upscale_alpha(alpha, rgb)
    assert out.shape == (1, 1, 32, 32)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    share_binary = float(((out < 0.1) | (out > 0.9)).float().mean())
    assert share_binary > 0.9
    assert float(out[0, 0, 16, 16]) > 0.9 and float(out[0, 0, 0, 0]) < 0.1


def test_soft_alpha_uses_the_soft_filter():
    alpha = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).clone()
    assert not is_binary_mask(alpha)
    out = upscale_alpha(alpha, torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and torch.isfinite(out).all()


def test_frame_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same frames"):
        upscale_alpha(torch.rand(5, 1, 8, 8), torch.rand(3, 3, 16, 16))
