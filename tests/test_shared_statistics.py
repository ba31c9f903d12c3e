"""Tiles that share GroupNorm statistics (memory.shared_statistics): gathering, replaying, the
shares that cover a frame once, and the seams they leave on real content."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from seedvr_cli.memory import tiling
from seedvr_cli.memory.shared_statistics import SharedStatistics, half_size
from seedvr_cli.memory.tiling import TileSpan, tile_spans, tiled_decode, tiled_encode
from seedvr_cli.models.vae import FrameGroupNorm, VideoVAE
from seedvr_cli.models.vae_config import vae_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE(vae_config("tiny-vae")).double().eval().requires_grad_(False)


def _latent(vae, frames, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, vae.config.latent_channels, frames, height, width, generator=generator, dtype=torch.float64)


def test_statistics_replayed_by_frame_give_the_pass_they_came_from_whatever_the_slicing(vae):
    z = _latent(vae, 3, 4, 6, seed=1)
    statistics = SharedStatistics()
    with torch.no_grad():
        with statistics.gathering(vae):
            plain = vae.decode(z)
        # One frame per slice now, where the gathering pass ran the latent frames whole.
        vae.slice_bytes, saved = 1, vae.slice_bytes
        try:
            with statistics.replaying(vae) as rewind:
                replayed = vae.decode(z)
                rewind()
                again = vae.decode(z)
        finally:
            vae.slice_bytes = saved
    torch.testing.assert_close(replayed, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-12)
    # Outside, the norms take their input's statistics again.
    assert all(norm.statistics is None for norm in vae.modules() if isinstance(norm, FrameGroupNorm))


def test_a_replay_past_the_gathered_frames_is_refused(vae):
    statistics = SharedStatistics()
    with torch.no_grad():
        with statistics.gathering(vae):
            vae.decode(_latent(vae, 1, 4, 6, seed=2))
        with statistics.replaying(vae), pytest.raises(RuntimeError, match="shared statistics"):
            vae.decode(_latent(vae, 2, 4, 6, seed=2))


@pytest.mark.parametrize(("size", "tile", "overlap"), [(20, 8, 3), (12, 4, 2), (9, 9, 2), (10, 6, 3)])
def test_the_tiles_shares_cover_each_position_once(size, tile, overlap):
    spans = tile_spans(size, tile, overlap)
    cover = torch.zeros(size * 8)
    for span, (low, high) in zip(spans, tiling._shares(spans)):
        extent = span.stop - span.start
        cover[round((span.start + low * extent) * 8) : round((span.start + high * extent) * 8)] += 1
    assert torch.equal(cover, torch.ones(size * 8))


def test_statistics_gathered_in_tiles_are_the_whole_frame_s_for_a_pointwise_model():
    """Where a tile's values do not depend on its neighbours, the shares' sums are the frame's."""
    norm = FrameGroupNorm(2, 4).double().requires_grad_(False)
    model = torch.nn.Sequential(norm)
    x = torch.randn(1, 4, 3, 10, 14, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rows, cols = tile_spans(10, 4, 2), tile_spans(14, 6, 2)
    statistics = SharedStatistics()
    with statistics.gathering(model) as tile_starts:
        for row, row_share in zip(rows, tiling._shares(rows)):
            for col, col_share in zip(cols, tiling._shares(cols)):
                tile_starts((row_share, col_share))
                norm(x[..., row.start : row.stop, col.start : col.stop])
    with statistics.replaying(model):
        shared = norm(x)
    torch.testing.assert_close(shared, F.group_norm(x.transpose(1, 2).flatten(0, 1), 2).view(1, 3, 4, 10, 14)
                               .transpose(1, 2), rtol=0, atol=1e-12)


def test_tiles_sharing_statistics_are_the_untiled_decode_with_those_statistics_away_from_the_cuts(vae):
    """Tiles that share statistics differ from one whole pass with the same statistics only where
    a tile's cut edge reaches (its receptive field), while tiles on their own statistics differ
    everywhere; and the shared tiled decode is the default."""
    z = _latent(vae, 2, 28, 44, seed=4)
    size, overlap = (192, 192), (32, 32)
    with torch.no_grad():
        statistics = tiling._gathered(vae, lambda gather: tiled_decode(vae, half_size(z), size, overlap, True,
                                                                        False, gather))
        hidden = vae.decode_latent_stages(z)
        with statistics.replaying(vae):
            whole = vae.decode_pixel_stages(hidden)
        shared = tiled_decode(vae, z, size, overlap)
        own = tiled_decode(vae, z, size, overlap, shared_statistics=False)
    # The first tile covers latents 0..23; its cut edges reach ~12 latents into it (the tiny
    # decoder's receptive field), so latents 0..7 are its own.
    inner = (..., slice(0, 64), slice(0, 64))
    assert float((shared - whole)[inner].abs().max()) < 1e-5
    assert float((own - whole)[inner].abs().max()) > 1e-2


def test_a_tiled_encode_shares_statistics_by_default(vae):
    x = torch.rand(1, 3, 5, 80, 112, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        shared = tiled_encode(vae, x, (48, 48), (16, 16))[0]
        own = tiled_encode(vae, x, (48, 48), (16, 16), shared_statistics=False)[0]
        plain = vae.encode(x)[0]
    assert shared.shape == own.shape == plain.shape
    assert not torch.equal(shared, own)


@pytest.mark.slow
def test_on_real_content_seams_carry_no_more_error_than_tile_interiors_when_tiles_share_statistics():
    """The shared photo through the fixture VAE (real architecture, random weights), decoded in
    tiles and in a layout shifted by half a stride, so that each position is a seam in one layout
    and an interior in the other: the seams' error over the interiors' at the same positions."""
    from seedvr_cli.media.images import read_image
    from seedvr_cli.parity.vae import load_fixture_vae

    fixture, photo = shared_path("fixtures", "vae"), shared_path("media", "Sadhu_320x478.png")
    vae = load_fixture_vae(fixture)
    image = torch.from_numpy(read_image(photo, deep=False, alpha=False)).permute(2, 0, 1)[None].float() / 127.5 - 1
    # Twice the photo's size, as scripts/vae_tile_seams.py --scale 2: 640 x 952 pixels, 80 x 119 latents.
    image = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    x = image[..., :952, :640].clamp(-1, 1)[:, :, None]
    tile, overlap = 512, 128
    with torch.inference_mode():
        mean = vae.encode(x)[0]
        plain = vae.decode(mean)
        ratios = {}
        for shared in (True, False):
            errors, seams = [], []
            for shift in (None, 24):  # half a stride: tiles of 64 latents, overlap 16
                layout = tile_spans if shift is None else (lambda size, t, o, s=shift: _shifted(size, t, o, s))
                original, tiling.tile_spans = tiling.tile_spans, layout
                try:
                    out = tiled_decode(vae, mean, (tile, tile), (overlap, overlap), shared_statistics=shared)
                finally:
                    tiling.tile_spans = original
                errors.append((out - plain).abs().mean(dim=(0, 1, 2)))
                rows, cols = layout(119, 64, 16), layout(80, 64, 16)
                seams.append(_twice(rows, 119)[:, None] | _twice(cols, 80)[None, :])
            seam = sum(float(errors[a][seams[a] & ~seams[b]].mean()) for a, b in ((0, 1), (1, 0)))
            interior = sum(float(errors[b][seams[a] & ~seams[b]].mean()) for a, b in ((0, 1), (1, 0)))
            ratios[shared] = seam / interior
    # Own statistics: the seams carry ~20 % more error here (docs/benchmarks.md); shared: no more
    # than the interiors, up to what the tiles' cut receptive fields add (~2 % in other layouts).
    assert ratios[True] <= 1.02, ratios
    assert ratios[False] > 1.1, ratios


def _shifted(size: int, tile: int, overlap: int, shift: int) -> list[TileSpan]:
    spans = [TileSpan(0, min(shift + overlap, size), False, shift + overlap < size)]
    start = shift
    while start + overlap < size:
        stop = min(start + tile, size)
        spans.append(TileSpan(start, stop, True, stop < size))
        start += tile - overlap
    return spans


def _twice(spans: list[TileSpan], size: int) -> torch.Tensor:
    cover = torch.zeros(size * 8)
    for span in spans:
        cover[span.start * 8 : span.stop * 8] += 1
    return cover > 1


@pytest.mark.gpu
def test_on_the_gpu_tiles_sharing_statistics_match_the_cpu():
    """On CUDA the norms' Triton kernel computes its own statistics, so a norm given shared ones
    takes the PyTorch path there: the same tiled decode as on the CPU, up to float32 noise."""
    torch.manual_seed(0)
    model = VideoVAE(vae_config("tiny-vae")).eval().requires_grad_(False)
    z = torch.randn(1, model.config.latent_channels, 2, 20, 28, generator=torch.Generator().manual_seed(6))
    tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
    try:
        with torch.no_grad():
            on_cpu = tiled_decode(model, z, (96, 96), (32, 32))
            on_gpu = tiled_decode(model.cuda(), z.cuda(), (96, 96), (32, 32)).cpu()
            own = tiled_decode(model, z.cuda(), (96, 96), (32, 32), shared_statistics=False).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    # Another device's float32 noise, far below what the shared statistics change.
    gpu_error, own_change = float((on_gpu - on_cpu).abs().max()), float((own - on_cpu).abs().max())
    assert gpu_error < 0.05 * own_change, (gpu_error, own_change)
