"""DiT spatial tiling: the tile plan, exactness where nothing is cut, and the seam test on real content."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from model_standins import StandInDiT

from seedvr_cli.memory.blockswap import BlockSwap, apply_blockswap
from seedvr_cli.memory.dit_tiling import TiledDiT, plan_tiles
from seedvr_cli.models.attention import window_sizes
from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.pipeline.condition import build_condition, window_noise
from seedvr_cli.pipeline.window import restore_latent

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Seam test bounds, measured on the shared Sadhu_320x478.png area-downscaled to a 300 x 200 latent
# (150 x 100 tokens, 25 x 17-token windows, the last column of windows partial: 2 x 2 tiles of 4 x 4
# windows overlapping by two), fixture weights, float32 on an x86 CPU. Measured: mean
# |tiled - untiled| 0.0053 (3B) / 0.0060 (7B), max 0.16 / 0.33, on restored latents of std 1.5 / 1.4;
# seam bands' mean error 0.65x (3B) / 0.51x (7B) the tile interiors' (0.83x / 0.80x leaving out the
# frame's partial windows, which the mirror fill changes most). CPUs differ by ~1e-6 in float32 (the
# DiT fixtures' bound), far below these; the margins (+50 % on the errors) allow for another
# summation order in attention, not for a worse tiling. The ratio's bound is the requirement itself.
SEAM_MEAN_BOUND = 0.009
SEAM_MAX_BOUND = 0.5
SEAM_TO_INTERIOR_BOUND = 1.0


def _tiny_dit(variant: str = "tiny-3b", seed: int = 0) -> NaDiT:
    torch.manual_seed(seed)
    model = NaDiT(dit_config(variant)).eval().requires_grad_(False)
    # Random init leaves the ada offsets at zero (every block a no-op); give them values as trained
    # weights have, so the blocks mix tokens.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ada." in name or "vid_out_ada" in name:
                p.normal_(0, 0.2).add_(1.0 if "scale" in name else 0.0)
    return model


def _inputs(latent_grid: tuple[int, int, int], txt_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t, h, w = latent_grid
    vid = torch.cat([torch.randn(t * h * w, 32, generator=g), torch.ones(t * h * w, 1)], dim=1)
    txt = torch.randn(7, txt_dim, generator=g)
    return vid, txt, torch.tensor([list(latent_grid)]), torch.tensor([[7]]), torch.tensor([1000.0])


class CountingDiT:
    """A model that records the latent grids it was called with."""

    def __init__(self, model) -> None:
        self.model, self.config, self.grids = model, getattr(model, "config", None), []

    def __call__(self, vid, txt, vid_shape, txt_shape, timestep):
        self.grids.append(tuple(vid_shape[0].tolist()))
        return self.model(vid, txt, vid_shape, txt_shape, timestep)


# ---------------------------------------------------------------- the plan


# 1072x1440: a tile of 2 x 2 windows of 18 x 24 tokens would get 18 x 23 windows; it grows to 37 x 50.
@pytest.mark.parametrize(("height", "width"),
                         [(2160, 3840), (1088, 1920), (3840, 2160), (1440, 1920), (2160, 2160), (1072, 1440)])
def test_tiles_are_whole_windows_on_the_frames_window_grid(height, width):
    config = dit_config("3b")
    grid = (6, height // 16, width // 16)
    _, win_h, win_w = window_sizes(grid, config.window)
    plan = plan_tiles(grid, config, tile_size=1000, tile_overlap=192)
    assert plan is not None and plan.window == (win_h, win_w)
    # Every tile has the frame's window size and starts on the frame's window grid ...
    assert window_sizes((6, plan.rows.length, plan.cols.length), config.window)[1:] == (win_h, win_w)
    assert all(s % win_h == 0 for s in plan.rows.starts) and all(s % win_w == 0 for s in plan.cols.starts)
    for axis, window in ((plan.rows, win_h), (plan.cols, win_w)):
        spans = axis.spans()
        # ... the tiles cover the frame and neighbours share at least one window.
        assert spans[0][0] == 0 and spans[-1][1] == axis.extent
        assert all(b[0] < a[1] and a[1] - b[0] >= window for a, b in zip(spans, spans[1:]))
    assert plan.tile_tokens < math.prod(grid)


def test_a_4k_frame_takes_2_x_2_tiles_by_default():
    from seedvr_cli.config import MemorySettings

    memory = MemorySettings(dit_tiling="on")
    plan = plan_tiles((6, 135, 240), dit_config("3b"), memory.dit_tile_size, memory.dit_tile_overlap)
    # 6 x 6 windows of 15 x 27 tokens, overlapping by three windows (two asked, the rest spare).
    assert plan.window == (15, 27) and (plan.rows.length, plan.cols.length) == (90, 162)
    assert plan.rows.starts == (0, 45) and plan.cols.starts == (0, 81) and plan.count == 4


def test_a_frame_within_one_tile_is_not_tiled():
    assert plan_tiles((6, 68, 120), dit_config("3b"), tile_size=2592, tile_overlap=480) is None


# ---------------------------------------------------------------- exactness


def test_one_tile_covering_everything_equals_the_untiled_call():
    model = _tiny_dit()
    inputs = _inputs((1, 40, 56), txt_dim=64)
    counting = CountingDiT(model)
    tiled = TiledDiT(counting, tile_size=4096, tile_overlap=192)
    torch.testing.assert_close(tiled(*inputs), model(*inputs), rtol=0, atol=0)
    assert counting.grids == [(1, 40, 56)]


def test_the_blend_reproduces_a_model_without_reach_and_the_noise_is_the_frames():
    # A per-token model has no receptive field: tiled must equal untiled up to the blend's rounding,
    # which checks the slices, the mirror fill's discarding and the weights summing to one.
    config = dit_config("tiny-3b")
    latent = (2, 120, 160)
    counting = CountingDiT(StandInDiT(noise_weight=0.5))
    tiled = TiledDiT(counting, tile_size=1100, tile_overlap=300, config=config)
    plan = tiled.plan(latent)
    assert plan is not None and plan.count >= 4
    inputs = _inputs(latent, txt_dim=64)
    torch.testing.assert_close(tiled(*inputs), StandInDiT(noise_weight=0.5)(*inputs), rtol=0, atol=1e-6)
    assert len(counting.grids) == plan.count
    assert set(counting.grids) == {(2, 2 * plan.rows.length, 2 * plan.cols.length)}


def test_tiling_wraps_a_model_with_blockswap_from_outside():
    plain, swapped = _tiny_dit(), _tiny_dit()
    apply_blockswap(swapped, BlockSwap(blocks_to_swap=4, swap_io=True), device="cpu")
    inputs = _inputs((1, 80, 112), txt_dim=64)
    expected = TiledDiT(plain, tile_size=800, tile_overlap=192)(*inputs)
    tiled = TiledDiT(swapped, tile_size=800, tile_overlap=192)
    assert tiled.plan((1, 80, 112)).count == 4
    torch.testing.assert_close(tiled(*inputs), expected, rtol=0, atol=0)


def test_several_samples_are_tiled_one_by_one():
    model = _tiny_dit()
    a, b = _inputs((1, 80, 112), txt_dim=64, seed=1), _inputs((1, 24, 32), txt_dim=64, seed=2)
    tiled = TiledDiT(model, tile_size=800, tile_overlap=192)
    packed = (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), torch.cat([a[2], b[2]]),
              torch.cat([a[3], b[3]]), torch.cat([a[4], b[4]]))
    torch.testing.assert_close(tiled(*packed), torch.cat([tiled(*a), tiled(*b)]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the seam test


def _fixture_dit(variant: str) -> NaDiT:
    from safetensors.torch import load_file

    weights = load_file(shared_path("fixtures", "dit", f"tiny_{variant}", "weights.safetensors"))
    model = NaDiT(dit_config(f"tiny-{variant}")).eval().requires_grad_(False)
    model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    return model


def _real_latent(height: int, width: int) -> torch.Tensor:
    """The shared photo, area-downscaled to the latent grid and spread over 16 channels by a fixed
    random projection: real content's edges and flat areas, at a latent's scale."""
    from seedvr_cli.media.images import read_image

    image = read_image(Path(shared_path("media", "Sadhu_320x478.png")), deep=False, alpha=False)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    small = F.interpolate(pixels, size=(height, width), mode="area")[0]
    projection = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)) * 0.5
    return torch.einsum("ck,khw->hwc", projection, small)[None]


def _seam_mask(plan, height: int, width: int) -> torch.Tensor:
    """Latents covered by two or more tiles (the overlap rows and columns)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for dim, spans in ((0, plan.rows.spans()), (1, plan.cols.spans())):
        for (_, stop), (start, _) in zip(spans, spans[1:]):
            band = slice(2 * start, 2 * stop)
            if dim == 0:
                mask[band, :] = True
            else:
                mask[:, band] = True
    return mask


@pytest.mark.parametrize("variant", ["3b", "7b"])
def test_seams_on_real_content_are_no_worse_than_tile_interiors(variant):
    model = _fixture_dit(variant)
    height, width = 300, 200
    latent = _real_latent(height, width)
    x_T = window_noise(42, 0, latent.shape)
    condition = build_condition(latent)
    text = torch.randn(58, 64, generator=torch.Generator().manual_seed(1))
    tiled = TiledDiT(model, tile_size=1600, tile_overlap=480)
    plan = tiled.plan((1, height, width))
    assert plan is not None and plan.count == 4 and plan.window == (25, 17)
    assert (plan.rows.overlap, plan.cols.overlap) == (50, 34) and plan.cols.starts[-1] + plan.cols.length > 100
    with torch.inference_mode():
        untiled = restore_latent(model, x_T, condition, text, torch.float32)
        restored = restore_latent(tiled, x_T, condition, text, torch.float32)
    error = (restored - untiled).abs()
    assert float(error.mean()) < SEAM_MEAN_BOUND and float(error.max()) < SEAM_MAX_BOUND
    per_latent = error[0].mean(-1)
    seams = _seam_mask(plan, height, width)
    seam_error, interior_error = float(per_latent[seams].mean()), float(per_latent[~seams].mean())
    assert seam_error <= SEAM_TO_INTERIOR_BOUND * interior_error, (seam_error, interior_error)
    # Tiling is not a no-op here: the tiles' attention does not see the whole frame.
    assert float(error.mean()) > 1e-3
