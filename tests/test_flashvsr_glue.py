"""FlashVSR's glue maths: preprocessing, colour fix, tiles, segments and one segment end to end
with the stand-in streamer. ``tests/fixtures/flashvsr_glue.safetensors`` holds what the ComfyUI
node's own functions compute (made by ``scripts/make_flashvsr_glue_fixture.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_standins import StandInStreamer
from safetensors.torch import load_file

from seedvr_cli.pipeline.flashvsr.color import adain_color_fix
from seedvr_cli.pipeline.flashvsr.preprocess import (
    output_size,
    padded_indices,
    streamed_frames,
    unit_range,
    upscale_and_crop,
)
from seedvr_cli.pipeline.flashvsr.segments import plan_segments
from seedvr_cli.pipeline.flashvsr.stream import SegmentSettings, segment_noise, upscale_segment
from seedvr_cli.pipeline.flashvsr.tiles import feather_mask, plan_tiles, tile_starts

FIXTURE = Path(__file__).parent / "fixtures" / "flashvsr_glue.safetensors"


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE))


@pytest.mark.parametrize("scale", [3, 4])
def test_preprocessing_matches_the_node(reference, scale):
    clip = reference["clip_uint8"]
    height, width, frames = reference[f"lq_scale{scale}_meta"].tolist()
    assert output_size(*clip.shape[1:3], scale) == (height, width)
    assert streamed_frames(len(clip)) == frames == 25  # padded to 21 like the node, + 4, 8n+1
    ours = upscale_and_crop(unit_range(clip)[padded_indices(len(clip))], scale, torch.float32)
    torch.testing.assert_close(ours[:, :, [0, 1, frames - 1]], reference[f"lq_scale{scale}"], rtol=0, atol=1e-6)


def test_frame_padding_keeps_every_frame_and_repeats_the_last():
    # 8n+1 >= frames + 4, at least 25 (the node's 21 + 4); the node's floor would drop tail frames.
    assert [streamed_frames(n) for n in (1, 21, 22, 29, 30, 125)] == [25, 25, 33, 33, 41, 129]
    assert padded_indices(3)[:5] == [0, 1, 2, 2, 2] and len(padded_indices(3)) == 25
    assert padded_indices(30)[-12:] == [29] * 11 + [29]


def test_output_size_floors_to_128_and_refuses_tiny_inputs():
    assert output_size(270, 480, 4) == (1024, 1920)
    assert output_size(540, 960, 2) == (1024, 1920)
    with pytest.raises(ValueError, match="at least 128"):
        output_size(30, 64, 4)


def test_colour_fix_matches_the_reference_adain(reference):
    ours = adain_color_fix(reference["color_hq"], reference["color_lq"])
    torch.testing.assert_close(ours, reference["color_fixed"], rtol=0, atol=1e-6)
    # Per frame: fixing a clip in two pieces equals fixing it whole.
    parts = torch.cat([adain_color_fix(reference["color_hq"][:, :, a:b], reference["color_lq"][:, :, a:b])
                       for a, b in ((0, 2), (2, 5))], dim=2)
    torch.testing.assert_close(parts, ours, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["300_520_256_24", "256_700_256_24", "640_640_128_32"])
def test_tile_grid_is_the_nodes(reference, case):
    height, width, size, overlap = (int(v) for v in case.split("_"))
    expected = [tuple(row) for row in reference[f"tiles_{case}"].tolist()]  # (x1, y1, x2, y2)
    ours = [(left, top, left + tw, top + th) for top, left, th, tw in plan_tiles(height, width, size, overlap)]
    assert ours == expected


def test_feather_mask_is_the_nodes_inside_and_flat_on_the_frame_border(reference):
    inner = feather_mask((100, 100, 96, 80), (400, 400), 16)
    torch.testing.assert_close(inner, reference["feather_96x80_ov16"], rtol=0, atol=0)
    corner = feather_mask((0, 0, 96, 80), (400, 400), 16)
    assert corner[0, :64].min() == 1 and corner[:80, 0].min() == 1 and corner[-1, -1] == 0 and corner[0, -1] == 0


def test_tiles_cover_the_frame():
    starts = tile_starts(1024, 512, 96)
    assert starts[0] == 0 and starts[-1] == 512 and all(b - a <= 512 - 96 for a, b in zip(starts, starts[1:]))
    assert tile_starts(384, 512, 96) == [0]


def test_segments_overlap_and_their_shares_sum_to_one():
    plan = plan_segments(300, segment_frames=125, overlap=2)
    assert [(s.start, s.stop) for s in plan.segments] == [(0, 125), (123, 248), (246, 300)]
    total = np.zeros(300)
    for segment in plan.segments:
        total[segment.start:segment.stop] += plan.segment_shares(segment.index)
    np.testing.assert_allclose(total, 1.0)
    shares = plan.segment_shares(1)
    assert 0 < shares[0] < shares[1] < 1 and shares[2] == 1  # a crossfade, not a cut
    # A tail that only repeats the overlap makes no segment of its own.
    assert len(plan_segments(125 + 123, segment_frames=125, overlap=2).segments) == 2
    assert len(plan_segments(1, segment_frames=125, overlap=2).segments) == 1


def _clip(frames: int, height: int = 40, width: int = 36) -> torch.Tensor:
    generator = torch.Generator().manual_seed(frames)
    return torch.randint(0, 256, (frames, height, width, 3), generator=generator, dtype=torch.uint8)


def _settings(**changes) -> SegmentSettings:
    values = dict(scale=4, sparse_ratio=2.0, kv_ratio=3.0, local_range=11, color_fix=True, seed=0)
    return SegmentSettings(**{**values, **changes})


def test_segment_is_padded_streamed_fixed_and_trimmed(one_torch_thread):
    clip = _clip(30)
    streamer = StandInStreamer()
    out = upscale_segment(clip, streamer, _settings(), torch.float32)
    assert out.shape == (30, 128, 128, 3) and out.dtype == torch.float32
    [call] = streamer.calls
    assert call["lq"] == (1, 3, 41, 128, 128) and call["noise"] == (1, 16, 10, 16, 16)
    assert call["options"].topk_ratio == pytest.approx(2.0 * 768 * 1280 / (128 * 128))
    # By hand: stand-in frames of the padded LQ, colour-fixed to their LQ frames, in [0, 1].
    lq = upscale_and_crop(unit_range(clip)[padded_indices(30)], 4, torch.float32)
    grain = segment_noise(41, 128, 128, 0)[:, :1].repeat_interleave(8, 3).repeat_interleave(8, 4)
    raw = 0.8 * lq[:, :, :37] + 0.1 * lq[:, :, 4:41] + 0.05 * grain[:, :, [j // 4 for j in range(37)]]
    expected = (adain_color_fix(raw, lq[:, :, :37]) + 1) / 2
    torch.testing.assert_close(out, expected[0].permute(1, 2, 3, 0)[:30], rtol=0, atol=1e-6)
    unfixed = upscale_segment(clip, StandInStreamer(), _settings(color_fix=False), torch.float32)
    torch.testing.assert_close(unfixed, ((raw + 1) / 2)[0].permute(1, 2, 3, 0)[:30], rtol=0, atol=1e-6)


def test_a_single_image_is_the_temporal_median_like_the_node(one_torch_thread):
    image = _clip(1)
    out = upscale_segment(image, StandInStreamer(), _settings(), torch.float32)
    whole = upscale_segment(image.repeat(21, 1, 1, 1), StandInStreamer(), _settings(), torch.float32)
    assert out.shape == (1, 128, 128, 3)
    torch.testing.assert_close(out[0], whole.median(dim=0).values, rtol=0, atol=0)


def test_tiled_dit_streams_each_tile_and_feathers_them(one_torch_thread):
    clip = _clip(5, height=64, width=96)  # x4: 256 x 384
    streamer = StandInStreamer()
    tiled = upscale_segment(clip, streamer, _settings(tiled_dit=True, tile_size=64, tile_overlap=8), torch.float32)
    assert [call["lq"][3:] for call in streamer.calls] == [(256, 256)] * 2  # x4: 256-px tiles, 32 shared
    whole = upscale_segment(clip, StandInStreamer(), _settings(color_fix=False), torch.float32)
    assert tiled.shape == whole.shape == (5, 256, 384, 3)
    # Without colour fix: frames only one tile covers are that tile's own stream (its noise drawn at
    # tile size); the 32 shared columns lie between the two tiles' streams.
    no_fix = upscale_segment(clip, StandInStreamer(), _settings(color_fix=False, tiled_dit=True, tile_size=64,
                                                                tile_overlap=8), torch.float32)
    lq = upscale_and_crop(unit_range(clip)[padded_indices(5)], 4, torch.float32)
    by_tile = []
    for left in (0, 128):
        tile = lq[..., left:left + 256]
        [frames] = list(StandInStreamer().stream(tile, segment_noise(25, 256, 256, 0), None))
        by_tile.append(((frames + 1) / 2)[0].permute(1, 2, 3, 0)[:5])
    torch.testing.assert_close(no_fix[:, :, :128], by_tile[0][:, :, :128], rtol=0, atol=1e-6)
    torch.testing.assert_close(no_fix[:, :, 256:], by_tile[1][:, :, 128:], rtol=0, atol=1e-6)
    low = torch.minimum(by_tile[0][:, :, 128:], by_tile[1][:, :, :128]) - 1e-6
    high = torch.maximum(by_tile[0][:, :, 128:], by_tile[1][:, :, :128]) + 1e-6
    shared = no_fix[:, :, 128:256]
    assert bool(((shared >= low) & (shared <= high)).all())
    assert whole.shape == tiled.shape
    assert not torch.equal(tiled, no_fix)


def test_a_streamer_giving_the_wrong_frames_is_caught():
    class Short(StandInStreamer):
        def stream(self, lq, noise, options):
            yield from list(super().stream(lq, noise, options))[:-1]

    with pytest.raises(ValueError, match="expected 21"):
        upscale_segment(_clip(3), Short(), _settings(), torch.float32)
