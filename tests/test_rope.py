"""RoPE: frequencies and angle tables against the reference's, the rotation itself, the buffer on load."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import shared_path
from safetensors.torch import load_file

from seedvr_cli.models.rope import RopeSpec, RotaryEmbedding3d, apply_rope
from seedvr_cli.parity.dit import rope_table
from seedvr_cli.parity.tolerances import ROPE_MAX_ABS


def test_rope_tables_match_reference():
    tables = load_file(shared_path("fixtures", "dit", "rope_tables.safetensors"))
    checked = 0
    for key, reference in tables.items():
        ours = rope_table(key)
        assert ours is not None, f"rope table {key} not understood"
        assert ours.dtype == torch.float32 and ours.shape == reference.shape, key
        # One float32 ulp at the 7B's 128·pi is 3.1e-5; a wrong position or offset is whole radians.
        torch.testing.assert_close(ours, reference, rtol=0, atol=ROPE_MAX_ABS, msg=key)
        checked += 1
    assert checked == len(tables) >= 9


def test_rotated_dims_per_variant():
    # Rotated dims (docs/reference-behaviour.md R28): 3B 126 of 128, 7B 60 of 128; tiny configs 60 and 30 of 64.
    assert RopeSpec("mmrope3d", 128).rotated_dims == 126
    assert RopeSpec("pixel", 64).rotated_dims == 60
    assert RopeSpec("mmrope3d", 64).rotated_dims == 60
    assert RopeSpec("pixel", 32).rotated_dims == 30
    assert RopeSpec("pixel", 64).text_angles(5) is None


def test_apply_rope_is_complex_rotation_of_interleaved_pairs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 16, generator=gen)
    angles = torch.randn(7, 5, generator=gen) * 50
    full = angles.repeat_interleave(2, dim=-1)[:, None, :]  # 10 rotated dims, 6 pass through
    out = apply_rope(x, full.cos(), full.sin())
    pairs = torch.view_as_complex(x[..., :10].double().reshape(7, 3, 5, 2).contiguous())
    expected = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles.double()), angles.double())[:, None])
    torch.testing.assert_close(out[..., :10].double(), expected.reshape(7, 3, 10), rtol=0, atol=1e-5)
    assert torch.equal(out[..., 10:], x[..., 10:])


def test_apply_rope_keeps_dtype_and_rotates_in_float32():
    angles = torch.full((4, 2), 128 * math.pi)  # where bf16 angles would be meaningless
    x = torch.randn(4, 1, 8).bfloat16()
    out = apply_rope(x, angles.cos()[:, None], angles.sin()[:, None])
    assert out.dtype == torch.bfloat16
    exact = apply_rope(x.float(), angles.cos()[:, None], angles.sin()[:, None])
    torch.testing.assert_close(out.float(), exact, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("stored", [torch.zeros(21), torch.full((21,), float("nan")), torch.ones(21).half()])
def test_loading_garbage_frequencies_keeps_formula(stored):
    rope = RotaryEmbedding3d(RopeSpec("mmrope3d", 128))
    result = rope.load_state_dict({"rope.freqs": stored}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert rope.rope.freqs.dtype == torch.float32
    assert torch.equal(rope.rope.freqs, RopeSpec("mmrope3d", 128).frequencies())


def test_loading_frequencies_checks_shape_and_presence():
    rope = RotaryEmbedding3d(RopeSpec("pixel", 64))
    with pytest.raises(RuntimeError, match="size mismatch"):
        rope.load_state_dict({"rope.freqs": torch.zeros(21)})
    with pytest.raises(RuntimeError, match="Missing key"):
        rope.load_state_dict({})
    assert "rope.freqs" in rope.state_dict()


def test_invalid_spec():
    with pytest.raises(ValueError, match="rope kind"):
        RopeSpec("xpos", 128)
    with pytest.raises(ValueError, match="no frequency"):
        RopeSpec("pixel", 3)
