"""Spatial tiling around the VAE: reference parity, tile layout, blend weights, seam-free blending."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from seedvr_cli.memory.tiling import edge_weights, tile_spans, tiled_decode, tiled_encode
from seedvr_cli.models.vae import split_moments
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.parity.tolerances import VAE_DECODE_MAX_ABS, VAE_ENCODE_MAX_ABS


class PointwiseVAE:
    """Stand-in VAE whose outputs at a position depend only on that position (8x8 mean pooling /
    nearest upsampling), so tiling must reproduce the untiled result exactly wherever the
    blend weights are normalised and tiles are placed right."""

    config = vae_config("tiny-vae")

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool3d(x, (1, 8, 8), ceil_mode=True)
        mean = pooled.repeat(1, 6, 1, 1, 1)[:, :16]
        return torch.cat((mean, -mean.abs()), dim=1)[:, :, ::4]

    def encode(self, x: torch.Tensor):
        return split_moments(self.encode_moments(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z[:, :3], scale_factor=(1, 8, 8), mode="nearest")

    # The split a tiled decode uses by default (whole_mid): an identity head and a pointwise rest.
    decode_pixel_stages = decode

    def decode_latent_stages(self, z: torch.Tensor) -> torch.Tensor:
        return z


def test_tiled_fixture_parity():
    from safetensors.torch import load_file

    from seedvr_cli.parity.vae import load_fixture_vae

    fixture = shared_path("fixtures", "vae")
    cases = load_file(str(fixture / "vae_cases.safetensors"))
    tiled = json.loads((fixture / "vae_cases.json").read_text())["tiled"]
    size, overlap = tuple(tiled["tile_size_px"]), tuple(tiled["tile_overlap_px"])
    vae = load_fixture_vae(fixture)
    with torch.no_grad():
        mean, logvar = tiled_encode(vae, cases["tiled.x"], size, overlap, shared_statistics=False)
        decoded = tiled_decode(vae, cases["tiled.z"], size, overlap, whole_mid=False, shared_statistics=False)
    # The VAE fixtures' stated bounds. Tiling mistakes are far above them: the untiled result is
    # 1.3 (means) / 2.3 (decodes) away, linear instead of raised-cosine ramps 0.53 (decodes).
    torch.testing.assert_close(mean, cases["tiled.enc_mean"], atol=VAE_ENCODE_MAX_ABS, rtol=0)
    torch.testing.assert_close(logvar, cases["tiled.enc_logvar"], atol=VAE_ENCODE_MAX_ABS, rtol=0)
    torch.testing.assert_close(decoded, cases["tiled.dec"], atol=VAE_DECODE_MAX_ABS, rtol=0)


def test_tile_layout_skips_tiles_inside_the_previous_overlap():
    spans = tile_spans(12, tile=4, overlap=2)
    assert [(s.start, s.stop) for s in spans] == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12)]
    assert not spans[0].leading_fade and spans[0].trailing_fade
    assert spans[-1].leading_fade and not spans[-1].trailing_fade
    # 80 px at 48/24 px tiles: latent 10, tile 6, overlap 3 -> the tile at 9 (1 latent) is skipped.
    assert [(s.start, s.stop) for s in tile_spans(10, tile=6, overlap=3)] == [(0, 6), (3, 9), (6, 10)]
    assert [(s.start, s.stop) for s in tile_spans(3, tile=4, overlap=2)] == [(0, 3)]


def test_edge_weights_are_raised_cosine_ramps_on_interior_edges():
    assert edge_weights(4, 2, leading=True, trailing=True).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert edge_weights(4, 2, leading=False, trailing=False).tolist() == [1.0] * 4
    weights = edge_weights(8, 5, leading=True, trailing=False)
    torch.testing.assert_close(weights[:5], torch.tensor([0.0, 0.1464466, 0.5, 0.8535534, 1.0]))
    # A ramp longer than the tile is cut to extent - 1.
    second = 0.5 - 0.5 * math.cos(math.pi / 15)
    assert edge_weights(3, 16, leading=True, trailing=False).tolist() == pytest.approx([0.0, second, 1.0], abs=1e-6)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (72, 100)])
def test_tiled_encode_of_a_local_model_equals_the_plain_result(height, width):
    vae = PointwiseVAE()
    x = torch.rand(1, 3, 5, height, width, generator=torch.Generator().manual_seed(0))
    mean, logvar = tiled_encode(vae, x, tile_size=(32, 40), tile_overlap=(16, 16))
    plain_mean, plain_logvar = vae.encode(x)
    torch.testing.assert_close(mean, plain_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar, plain_logvar, atol=1e-6, rtol=0)


@pytest.mark.parametrize("whole_mid", [True, False])
def test_tiled_decode_of_a_local_model_equals_the_plain_result(whole_mid):
    vae = PointwiseVAE()
    z = torch.randn(1, 16, 2, 9, 13, generator=torch.Generator().manual_seed(0))
    decoded = tiled_decode(vae, z, tile_size=(32, 48), tile_overlap=(12, 20), whole_mid=whole_mid)
    torch.testing.assert_close(decoded, vae.decode(z), atol=1e-6, rtol=0)


def test_small_inputs_are_not_tiled_and_bad_overlaps_rejected():
    vae = PointwiseVAE()
    x = torch.rand(1, 3, 1, 32, 32)
    assert torch.equal(tiled_encode(vae, x, (32, 32), (16, 16))[0], vae.encode(x)[0])
    with pytest.raises(ValueError, match="overlap"):
        tiled_encode(vae, torch.rand(1, 3, 1, 64, 64), (32, 32), (32, 8))


# ---------------------------------------------------------------- the split a tiled VAE uses


@pytest.fixture(scope="module")
def tiny_vae64():
    from seedvr_cli.models.vae import VideoVAE

    torch.manual_seed(0)
    return VideoVAE(vae_config("tiny-vae")).double().eval().requires_grad_(False)


def test_the_decoder_split_after_its_mid_block_composes_to_the_whole_decoder(tiny_vae64):
    vae = tiny_vae64
    # Three latent frames: three causal slices, so the parts' caches carry frames across slices.
    z = torch.randn(1, 16, 3, 3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        hidden = vae.decode_latent_stages(z)
        assert hidden.shape == (1, vae.config.block_out_channels[-1], 3, 3, 5)
        torch.testing.assert_close(vae.decode_pixel_stages(hidden), vae.decode(z), rtol=0, atol=1e-12)


def test_a_tiled_decode_with_the_mid_block_on_the_whole_frame_is_nearer_the_untiled_one(tiny_vae64):
    """The mid block's attention and statistics see the whole frame; only the up blocks' statistics
    and the tiles' cut edges remain (a random VAE, whose statistics differ per tile)."""
    vae = tiny_vae64
    z = torch.randn(1, 16, 1, 6, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        plain = vae.decode(z)
        errors = {whole_mid: float((tiled_decode(vae, z, (48, 48), (16, 16), whole_mid=whole_mid) - plain).abs().mean())
                  for whole_mid in (True, False)}
    assert 0 < errors[True] < 0.9 * errors[False], errors
