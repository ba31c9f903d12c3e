"""Output precision: rounding (not truncation) to uint8/uint16."""

from __future__ import annotations

import pytest
import torch

from seedvr_cli.pipeline.quantize import quantize, signed_to_unit


def test_rounds_to_nearest_not_truncates():
    x = torch.tensor([0.0, 0.999 / 255, 1.5 / 255 + 1e-4, 254.6 / 255, 1.0])
    assert quantize(x, torch.uint8).tolist() == [0, 1, 2, 255, 255]


def test_uint16_keeps_fine_levels():
    levels = torch.arange(0, 65536, 7, dtype=torch.float64) / 65535
    out = quantize(levels.float(), torch.uint16)
    assert out.dtype == torch.uint16
    assert torch.equal(out.to(torch.int64), torch.arange(0, 65536, 7))


def test_signed_range_and_overshoot():
    x = torch.tensor([-1.2, -1.0, 0.0, 1.0, 1.3])
    assert signed_to_unit(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_float_passthrough_and_bad_dtype():
    x = torch.rand(4)
    assert torch.equal(quantize(x, None), x)
    with pytest.raises(ValueError):
        quantize(x, torch.int16)
