"""Colour correction: fixture parity (tie order included) and behaviour on edge cases."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_path

from seedvr_cli.parity.tolerances import PIPELINE_MAX_ABS
from seedvr_cli.pipeline.color import (
    COLOR_METHODS,
    color_correct,
    hsv_to_rgb,
    match_histogram,
    rgb_to_hsv,
    rgb_to_lab,
    lab_to_rgb,
    wavelet_split,
)


@pytest.fixture(scope="module")
def fixture():
    from safetensors.torch import load_file

    return load_file(shared_path("fixtures", "pipeline", "color_correction.safetensors"))


@pytest.mark.parametrize("tag", ["small", "large"])
@pytest.mark.parametrize("method", ["wavelet", "adain", "hsv", "wavelet_adaptive"])
def test_methods_match_fixture(fixture, tag, method):
    ours = color_correct(fixture[f"{tag}.content"], fixture[f"{tag}.style"], method)
    assert (ours - fixture[f"{tag}.out_{method}"]).abs().max() <= PIPELINE_MAX_ABS


@pytest.mark.parametrize("tag", ["small", "large"])
def test_lab_matches_fixture_up_to_rare_tie_reorders(fixture, tag):
    ours = color_correct(fixture[f"{tag}.content"], fixture[f"{tag}.style"], "lab")
    diff = (ours - fixture[f"{tag}.out_lab"]).abs()
    assert float((diff > PIPELINE_MAX_ABS).float().mean()) < 2e-3
    assert diff.max() < 1e-3


@pytest.mark.parametrize("tag", ["small", "large"])
def test_hsv_is_bit_exact(fixture, tag):
    """Thousands of tied saturations: only the reference tie order (torch's default sort) gives this."""
    ours = color_correct(fixture[f"{tag}.content"], fixture[f"{tag}.style"], "hsv")
    assert torch.equal(ours, fixture[f"{tag}.out_hsv"])


def test_match_histogram_equal_counts():
    source = torch.tensor([0.5, 0.2, 0.9, 0.1])
    matched = match_histogram(source, torch.tensor([4.0, 1.0, 3.0, 2.0]))
    assert matched.tolist() == [3.0, 2.0, 4.0, 1.0]


def test_match_histogram_unequal_counts():
    source = torch.tensor([3.0, 1.0, 2.0])
    reference = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    assert match_histogram(source, reference).tolist() == [50.0, 10.0, 30.0]


def test_inputs_are_not_modified(fixture):
    content, style = fixture["small.content"].clone(), fixture["small.style"].clone()
    for method in COLOR_METHODS:
        color_correct(content, style, method)
    assert torch.equal(content, fixture["small.content"]) and torch.equal(style, fixture["small.style"])


def test_none_is_identity():
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert color_correct(x, torch.zeros_like(x), "none") is x


def test_unknown_method():
    with pytest.raises(ValueError, match="colour"):
        color_correct(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), "sepia")


@pytest.mark.parametrize("method", COLOR_METHODS)
def test_black_and_grey_frames_stay_finite(method):
    """Zero saturation (max = min) and max = 0 are guarded, no NaN."""
    content = torch.full((2, 3, 16, 16), -1.0)
    content[1] = 0.0
    style = torch.zeros(2, 3, 16, 16)
    out = color_correct(content, style, method)
    assert torch.isfinite(out).all() and out.shape == content.shape


def test_wavelet_split_reconstructs():
    x = torch.rand(2, 3, 40, 48)
    high, low = wavelet_split(x)
    assert torch.allclose(high + low, x, atol=1e-6)
    # Low frequencies of a constant are the constant.
    _, low_const = wavelet_split(torch.full((1, 3, 20, 20), 0.3))
    assert torch.allclose(low_const, torch.full_like(low_const, 0.3), atol=1e-6)


def test_wavelet_takes_colour_from_style_and_detail_from_content():
    gen = torch.Generator().manual_seed(0)
    detail = (torch.rand(1, 3, 64, 64, generator=gen) - 0.5) * 0.2
    content = detail + 0.4
    style = torch.full_like(content, -0.2)
    out = color_correct(content, style, "wavelet")
    assert abs(float(out.mean()) + 0.2) < 0.02
    assert float(out.std()) > 0.5 * float(content.std())


def test_adain_matches_style_statistics():
    gen = torch.Generator().manual_seed(1)
    content = torch.randn(2, 3, 32, 32, generator=gen)
    style = torch.randn(2, 3, 32, 32, generator=gen) * 0.3 + 0.2
    out = color_correct(content, style, "adain")
    assert torch.allclose(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3)), style.std(dim=(2, 3)), atol=1e-3)


def test_colour_space_round_trips():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(rgb)), rgb, atol=1e-5)
