"""The seams memory savers plug into: a tiled VAE passed where the VAE is passed."""

from __future__ import annotations

import pytest
import torch
from model_standins import StandInDiT

from seedvr_cli.memory.tiling import TiledVAE, tiled_decode, tiled_encode
from seedvr_cli.models.vae import VideoVAE
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.pipeline.window import WindowSettings, upscale_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE(vae_config("tiny-vae")).eval().requires_grad_(False)


def _window(vae, codec, frames, size):
    plan = plan_windows(frames.shape[0], batch_size=5)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, output_dtype=None)
    return upscale_window(frames, vae=codec, dit=StandInDiT(), text_embedding=torch.zeros(58, 5120),
                          settings=settings, window=plan.windows[0])


def test_tiled_vae_goes_where_the_vae_goes_and_codes_in_tiles(vae):
    frames = torch.randint(0, 256, (5, 24, 40, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    size = plan_frame_size(24, 40, resolution=48)
    tiled = TiledVAE(vae, tile_size=(32, 32), tile_overlap=(16, 16))
    x = torch.rand(1, 3, 5, 48, 80) * 2 - 1
    # The adapter is exactly the tiling functions behind the VAE's own calls ...
    torch.testing.assert_close(tiled.encode(x)[0], tiled_encode(vae, x, (32, 32), (16, 16))[0], rtol=0, atol=0)
    z = torch.randn(1, vae.config.latent_channels, 2, 6, 10)
    torch.testing.assert_close(tiled.decode(z), tiled_decode(vae, z, (32, 32), (16, 16)), rtol=0, atol=0)
    # ... and it really tiles this frame (a different result from coding it whole) ...
    assert not torch.equal(tiled.decode(z), vae.decode(z))
    # ... and a whole window runs through it: same frames out, coded in tiles (a random tiny VAE
    # with 4-latent tiles is far from seamless, so only the plumbing is judged here).
    plain = _window(vae, vae, frames, size)
    through_tiles = _window(vae, tiled, frames, size)
    assert through_tiles.shape == plain.shape and bool(torch.isfinite(through_tiles).all())
    assert not torch.equal(through_tiles, plain)


def test_tiles_larger_than_the_frame_change_nothing(vae):
    frames = torch.randint(0, 256, (5, 16, 24, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    size = plan_frame_size(16, 24, resolution=32)
    plain = _window(vae, vae, frames, size)
    whole = _window(vae, TiledVAE(vae, tile_size=(512, 512), tile_overlap=(64, 64)), frames, size)
    torch.testing.assert_close(whole, plain, rtol=0, atol=0)
    with pytest.raises(ValueError):
        TiledVAE(vae, tile_size=(32, 32), tile_overlap=(32, 32))


def test_max_vram_must_be_a_positive_number():
    from seedvr_cli.config import MemorySettings
    from seedvr_cli.errors import UsageError

    assert MemorySettings(max_vram_gib=8).max_vram_gib == 8
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--max-vram"):
            MemorySettings(max_vram_gib=bad)


@pytest.mark.gpu
def test_max_vram_caps_what_the_allocator_may_take():
    from seedvr_cli.run.processor import cap_vram

    device = torch.device("cuda:0")
    torch.cuda.empty_cache()
    cap_vram(device, 1.0)
    try:
        kept = torch.empty(2**29, dtype=torch.uint8, device=device)  # 0.5 GiB fits
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(2**30, dtype=torch.uint8, device=device)  # 1 GiB more does not
        del kept
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
