"""Window partition (against the reference table) and the windowed attention backends."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shared_path

from seedvr_cli.models import attention, packed_attention
from seedvr_cli.models.attention import (
    attention_backend,
    build_window_plan,
    flash_window_attention,
    flex_window_attention,
    reference_window_attention,
    sdpa_window_attention,
    text_rope_tables,
    window_partition,
    window_sizes,
    with_packed_layout,
)
from seedvr_cli.models.norms import RMSNorm, modulated_rms_norm, rms_norm, rms_norm_reference
from seedvr_cli.models.packed_attention import attend_per_window, packed_window_attention
from seedvr_cli.models.rope import RopeSpec, apply_rope, apply_rope_full, full_width_tables


def test_window_partition_matches_reference_table():
    table = json.loads(shared_path("fixtures", "dit", "window_table.json").read_text())
    entries = table["entries"]
    assert len(entries) == 183
    for entry in entries:
        grid = tuple(entry["tokens_thw"])
        for method in ("regular", "shifted"):
            ours = [list(w) for w in window_partition(grid, method)]
            assert ours == entry[method], f"{entry['label']} {grid} {method}"


@pytest.mark.parametrize("grid", [(21, 45, 80), (1, 135, 240), (5, 7, 300), (2, 1, 1), (31, 20, 20)])
@pytest.mark.parametrize("method", ["regular", "shifted"])
def test_windows_tile_the_grid_exactly(grid, method):
    cover = torch.zeros(grid, dtype=torch.int32)
    for t0, t1, h0, h1, w0, w1 in window_partition(grid, method):
        assert t1 > t0 and h1 > h0 and w1 > w0
        cover[t0:t1, h0:h1, w0:w1] += 1
    assert bool((cover == 1).all())


def test_window_sizes_follow_the_spec_examples():
    assert window_sizes((21, 45, 80)) == (6, 15, 27)  # 16:9
    assert window_sizes((1, 135, 240))[1:] == (15, 27)  # size depends on aspect ratio only
    assert window_sizes((1, 80, 45))[1:] == (27, 15)  # portrait
    assert window_sizes((1, 64, 64))[1:] == (20, 20)  # square
    assert len(window_partition((21, 45, 80), "regular")) == 36
    assert len(window_partition((21, 45, 80), "shifted")) == 64


def _random_qkv(grids, txt_lens, heads=2, dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lv, lt = sum(t * h * w for t, h, w in grids), sum(txt_lens)
    norm = RMSNorm(dim)
    vid = tuple(torch.randn(lv, heads, dim, generator=gen) for _ in range(3))
    txt = tuple(torch.randn(lt, heads, dim, generator=gen) for _ in range(3))
    # q/k arrive RMS-normalised in the model; keeps the softmax in a realistic range.
    vid = (norm(vid[0]), norm(vid[1]), vid[2])
    txt = (norm(txt[0]), norm(txt[1]), txt[2])
    return vid, txt


# Heterogeneous samples: partial windows, shifted splits, different text lengths and window counts.
GRIDS = [(3, 21, 27), (1, 12, 20), (5, 8, 10)]
TXT_LENS = [13, 7, 30]


@pytest.mark.parametrize("rope", [RopeSpec("mmrope3d", 32), RopeSpec("pixel", 16), None])
@pytest.mark.parametrize("method", ["regular", "shifted"])
def test_sdpa_backend_equals_reference_backend(rope, method):
    vid, txt = _random_qkv(GRIDS, TXT_LENS)
    if rope is not None and rope.rotates_text:
        cos, sin = text_rope_tables(rope, TXT_LENS)
        txt = (apply_rope(txt[0], cos, sin), apply_rope(txt[1], cos, sin), txt[2])
    plan = build_window_plan(GRIDS, TXT_LENS, method, rope=rope)
    fast_vid, fast_txt = sdpa_window_attention(vid, txt, plan, True)
    ref_vid, ref_txt = reference_window_attention(vid, txt, plan, True)
    torch.testing.assert_close(fast_vid, ref_vid, rtol=0, atol=2e-6)
    torch.testing.assert_close(fast_txt, ref_txt, rtol=0, atol=2e-6)
    assert sdpa_window_attention(vid, txt, plan, False)[1] is None


def _rotated_text_case(rope, seed=0):
    vid, txt = _random_qkv(GRIDS, TXT_LENS, seed=seed)
    if rope is not None and rope.rotates_text:
        cos, sin = text_rope_tables(rope, TXT_LENS)
        txt = (apply_rope(txt[0], cos, sin), apply_rope(txt[1], cos, sin), txt[2])
    return vid, txt


@pytest.mark.parametrize("rope", [RopeSpec("mmrope3d", 24), RopeSpec("pixel", 16), None])
@pytest.mark.parametrize("method", ["regular", "shifted"])
def test_packed_layout_equals_reference_backend(rope, method):
    # The packing (gather, full-width rotation, reading video and averaging text back) with plain
    # SDPA per window: what "flash" and "flex" compute, less their kernels.
    vid, txt = _rotated_text_case(rope)
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, method, rope=rope), head_dim=32)
    packed_vid, packed_txt = packed_window_attention(vid, txt, plan, True, attend_per_window)
    ref_vid, ref_txt = reference_window_attention(vid, txt, plan, True)
    torch.testing.assert_close(packed_vid, ref_vid, rtol=0, atol=2e-6)
    torch.testing.assert_close(packed_txt, ref_txt, rtol=0, atol=2e-6)
    assert packed_window_attention(vid, txt, plan, False, attend_per_window)[1] is None


def test_packed_rotation_in_chunks_changes_nothing(monkeypatch):
    rope = RopeSpec("mmrope3d", 24)
    vid, txt = _rotated_text_case(rope, seed=6)
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, "regular", rope=rope), head_dim=32)
    whole = packed_window_attention(vid, txt, plan, True, attend_per_window)
    monkeypatch.setattr(packed_attention, "ROPE_CHUNK_ROWS", 100)
    chunked = packed_window_attention(vid, txt, plan, True, attend_per_window)
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked))


def test_packed_layout_puts_each_window_in_one_sequence():
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, "shifted"), head_dim=32)
    packed = plan.packed
    windows = sum(len(w) for w in plan.windows)
    assert len(packed.lengths) == windows == packed.cu_seqlens.numel() - 1
    lv = sum(t * h * w for t, h, w in GRIDS)
    # Every video row exactly once; every text row once per window of its sample.
    assert torch.equal(packed.gather_index[packed.vid_position], torch.arange(lv))
    assert torch.equal(packed.txt_row.bincount(minlength=sum(TXT_LENS)).float(), plan.txt_window_count)
    assert packed.cu_seqlens[-1] == packed.gather_index.numel() == lv + int(packed.txt_row.numel())


def test_flash_backend_without_its_kernels_falls_back_exactly():
    # On the CPU (and for float32) "flash" runs the packed layout through per-window SDPA.
    rope = RopeSpec("mmrope3d", 24)
    vid, txt = _rotated_text_case(rope, seed=2)
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, "regular", rope=rope), head_dim=32)
    ref_vid, ref_txt = reference_window_attention(vid, txt, plan, True)
    out_vid, out_txt = flash_window_attention(vid, txt, plan, True)
    torch.testing.assert_close(out_vid, ref_vid, rtol=0, atol=2e-6)
    torch.testing.assert_close(out_txt, ref_txt, rtol=0, atol=2e-6)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_backend_equals_reference_backend():
    # Eager FlexAttention on the CPU: the block mask must confine every query to its window.
    rope = RopeSpec("pixel", 16)
    vid, txt = _rotated_text_case(rope, seed=3)
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, "shifted", rope=rope), head_dim=32, backend="flex")
    ref_vid, ref_txt = reference_window_attention(vid, txt, plan, True)
    with torch.no_grad():  # FlexAttention on the CPU has no backward
        out_vid, out_txt = flex_window_attention(vid, txt, plan, True)
    torch.testing.assert_close(out_vid, ref_vid, rtol=0, atol=2e-6)
    torch.testing.assert_close(out_txt, ref_txt, rtol=0, atol=2e-6)


def test_packed_backend_without_packed_plan_says_so():
    vid, txt = _random_qkv(GRIDS, TXT_LENS)
    with pytest.raises(RuntimeError, match="no packed layout"):
        flash_window_attention(vid, txt, build_window_plan(GRIDS, TXT_LENS, "regular"), True)


def test_sdpa_chunking_does_not_change_results(monkeypatch):
    vid, txt = _random_qkv(GRIDS, TXT_LENS, seed=1)
    plan = build_window_plan(GRIDS, TXT_LENS, "shifted", rope=RopeSpec("mmrope3d", 32))
    whole = sdpa_window_attention(vid, txt, plan, True)
    monkeypatch.setattr(attention, "SDPA_MAX_BATCH_TOKENS", 1)  # one window per SDPA call
    chunked = sdpa_window_attention(vid, txt, plan, True)
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=0, atol=1e-6)


def test_text_output_is_mean_over_windows_of_own_sample():
    # Values constant per sample: each window's attention output for a text token is that constant,
    # so the mean over windows must return it exactly, whatever the window count.
    grids, txt_lens = [(3, 21, 27), (5, 8, 10)], [4, 6]
    vid, txt = _random_qkv(grids, txt_lens)
    lv = [t * h * w for t, h, w in grids]
    v_vid = torch.cat([torch.full((n, 2, 32), float(i + 1)) for i, n in enumerate(lv)])
    v_txt = torch.cat([torch.full((n, 2, 32), float(i + 1)) for i, n in enumerate(txt_lens)])
    plan = build_window_plan(grids, txt_lens, "regular")
    assert [len(w) for w in plan.windows] == [12, 3]
    _, out_txt = sdpa_window_attention((vid[0], vid[1], v_vid), (txt[0], txt[1], v_txt), plan, True)
    torch.testing.assert_close(out_txt, v_txt)


def test_plan_groups_windows_by_shape():
    plan = build_window_plan([(21, 45, 80)], [58], "regular")
    assert sum(g.vid_index.shape[0] for g in plan.groups) == 36
    assert sorted(g.shape for g in plan.groups) == [(3, 15, 26), (3, 15, 27), (6, 15, 26), (6, 15, 27)]
    every_row = torch.cat([g.vid_index.reshape(-1) for g in plan.groups]).sort().values
    assert torch.equal(every_row, torch.arange(21 * 45 * 80))


def test_backend_registry():
    assert attention_backend("sdpa") is sdpa_window_attention
    assert attention_backend("reference") is reference_window_attention
    assert attention_backend("flash") is flash_window_attention
    with pytest.raises(ValueError, match="unknown attention backend 'nope'.*sdpa"):
        attention_backend("nope")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_rms_norm_equals_the_op_by_op_reference(dtype, affine):
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(300, 96, generator=gen) * 40).to(dtype)
    weight = torch.randn(96, generator=gen).to(dtype) if affine else None
    assert torch.equal(rms_norm(x, weight), rms_norm_reference(x, weight))
    # A weight in another dtype than the activations takes the reference (output in x's dtype).
    if affine:
        assert rms_norm(x, weight.double()).dtype == dtype


def test_rms_norm_statistics_in_float32():
    x = (torch.randn(4, 64) * 300).bfloat16()
    weight = torch.randn(64)
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    out = rms_norm(x, weight)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.bfloat16().float(), rtol=0, atol=0)
    assert RMSNorm(64, affine=False).weight is None


def test_full_width_rope_is_bit_identical_to_apply_rope():
    gen = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(50, 3, 32, generator=gen).to(dtype)
        angles = torch.rand(50, 24, generator=gen) * 400
        cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
        full_cos, full_sin = full_width_tables(cos, sin, 32)
        assert torch.equal(apply_rope_full(x, full_cos, full_sin), apply_rope(x, cos, sin))


def test_modulated_rms_norm_rounds_like_the_separate_ops():
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(40, 64, generator=gen) * 30).bfloat16()
    scale, shift = torch.randn(1, 64, generator=gen).bfloat16(), torch.randn(40, 64, generator=gen).bfloat16()
    assert torch.equal(modulated_rms_norm(x, scale, shift), rms_norm(x) * scale + shift)
