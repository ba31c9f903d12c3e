"""numz's input transform: fixture parity, high-bit-depth input, and the filter it must use."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.preprocess import preprocess, to_unit_float


def _fixture():
    from safetensors.torch import load_file

    directory = shared_path("fixtures", "pipeline")
    index = json.loads((directory / "preprocess_batching.json").read_text())
    return index["transforms"], load_file(directory / "preprocess.safetensors")


def test_transform_matches_fixture_exactly():
    transforms, tensors = _fixture()
    for transform in transforms:
        _, h, w = transform["input_T_H_W"]
        size = plan_frame_size(h, w, resolution=transform["resolution"], max_resolution=transform["max_resolution"])
        assert list(size.true) == transform["true_target_hw_even"]
        frames = tensors[f"{transform['key']}.input_tchw"].permute(0, 2, 3, 1)
        out = preprocess(frames, size)
        assert out.shape == tuple(transform["output_shape"])
        assert torch.equal(out, tensors[f"{transform['key']}.output_cthw"]), transform["key"]


def test_antialiased_bicubic_not_plain_bicubic():
    """Plain bicubic (a=-0.75) differs from the antialiased one (a=-0.5) even when upscaling."""
    frames = torch.rand(1, 12, 20, 3, generator=torch.Generator().manual_seed(0))
    size = plan_frame_size(12, 20, resolution=24)
    out = preprocess(frames, size)
    plain = F.interpolate(frames.permute(0, 3, 1, 2), size=size.resized, mode="bicubic", align_corners=False)
    plain = (plain.clamp(0, 1) - 0.5) / 0.5
    assert (out[:, 0, :24, :40] - plain[0]).abs().max() > 1e-3


def test_padding_is_black_and_layout_is_cthw():
    frames = torch.ones(2, 10, 10, 3)
    size = plan_frame_size(10, 10, resolution=20)
    out = preprocess(frames, size)
    assert out.shape == (3, 2, 32, 32)
    assert torch.allclose(out[:, :, :20, :20], torch.ones(3, 2, 20, 20), atol=1e-5)
    assert torch.all(out[:, :, 20:, :] == -1.0) and torch.all(out[:, :, :, 20:] == -1.0)


def test_uint16_input_has_no_8bit_step():
    # Two 16-bit levels that fall into the same 8-bit code must stay apart.
    low, high = 32768, 32768 + 100
    assert low * 255 // 65535 == high * 255 // 65535
    frames = torch.tensor([low, high], dtype=torch.int32).to(torch.uint16).reshape(1, 1, 2, 1).expand(1, 1, 2, 3)
    unit = to_unit_float(frames)
    assert unit.dtype == torch.float32
    assert float(unit[0, 0, 1, 0] - unit[0, 0, 0, 0]) == pytest.approx(100 / 65535, rel=1e-4)
    size = plan_frame_size(16, 32, resolution=16)
    big = frames.repeat(1, 16, 16, 1)
    out = preprocess(big, size)
    assert torch.allclose(out, preprocess(to_unit_float(big), size))
    assert out[0, 0, 0, 0] != out[0, 0, 0, 1]


def test_uint8_and_rgba_input():
    gen = torch.Generator().manual_seed(1)
    rgba = torch.randint(0, 256, (2, 8, 12, 4), dtype=torch.uint8, generator=gen)
    size = plan_frame_size(8, 12, resolution=16)
    out = preprocess(rgba, size)
    expected = preprocess(rgba[..., :3].float() / 255.0, size)
    assert torch.equal(out, expected), "alpha is ignored, uint8 divided by 255"


def test_wrong_frame_size_is_rejected():
    size = plan_frame_size(8, 12, resolution=16)
    with pytest.raises(ValueError, match="size plan"):
        preprocess(torch.rand(1, 9, 12, 3), size)
