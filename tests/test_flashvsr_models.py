"""FlashVSR DiT, LQ projectors and block-sparse attention: parity with the shared fixtures, the
attention's block choice and backends against independent formulations, bounded streaming state,
and random-weight checkpoints in the published layout."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from conftest import REPO_ROOT, shared_path
from seedvr_cli.errors import CheckpointError
from seedvr_cli.models.flashvsr.dit import FlashDiT
from seedvr_cli.models.flashvsr.dit_config import SparseAttentionSettings, flash_dit_config
from seedvr_cli.models.flashvsr.lq_proj import LQProjector, LQProjState, lq_proj_config
from seedvr_cli.models.flashvsr.sparse_attention import (
    block_sparse_attention,
    dense_masked_attention,
    local_window_mask,
    select_blocks,
)
from seedvr_cli.weights.flashvsr import DIT_FILE, LQ_PROJ_FILE, load_flashvsr_dit, load_lq_projector
from seedvr_cli.weights.synthesize_flashvsr import flashvsr_entries

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------- parity


def test_dit_and_lq_projector_match_the_shared_fixtures():
    from seedvr_cli.parity import detect_kind
    from seedvr_cli.parity.flashvsr_dit import run

    fixture_dir = shared_path("fixtures", "flashvsr")
    assert detect_kind(fixture_dir) == "flashvsr"
    results = run(fixture_dir)
    compared = {(r.case, r.output) for r in results}
    for version in ("v10", "v11"):
        for output in ("lq_tokens_chunk0", "lq_tokens_chunk1", "dit_out_chunk0", "dit_out_chunk1",
                       "cache_k_blk0_chunk0", "cache_k_blk0_chunk1", "latents", "lq_tokens_forward_nonstream"):
            assert (f"flashvsr_{version}", output) in compared
    failed = [f"{r.case}/{r.output} {r.max_abs:.2e}" for r in results if not r.passed]
    assert not failed, failed
    assert max(r.max_abs for r in results) <= 1e-5


# ------------------------------------------------------------------------------------- attention


def _allowed_offsets(local_range: int) -> range:
    return range(-(local_range // 2), local_range - local_range // 2)


@pytest.mark.parametrize("local_range", [1, 2, 3, 11])
def test_local_window_mask_follows_the_reference_span(local_range):
    rows, cols = 4, 5
    mask = local_window_mask(rows, cols, local_range)
    offsets = _allowed_offsets(local_range)
    for i in range(rows * cols):
        for j in range(rows * cols):
            expected = (j // cols - i // cols) in offsets and (j % cols - i % cols) in offsets
            assert bool(mask[i, j]) == expected, (i, j)
    # Even ranges reach one window further back than forward.
    if local_range == 2:
        assert mask[6, 0] and not mask[6, 12]


def _select_blocks_by_loops(q_windows, k_windows, heads, local, topk):
    """The block choice written out with explicit loops, as an independent check."""
    spatial = local.shape[0]
    num_q, num_k = q_windows.shape[0], k_windows.shape[0]
    head_dim = q_windows.shape[-1] // heads
    chosen = torch.zeros(heads, num_q, num_k, dtype=torch.bool)
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        probs = torch.zeros(num_q, num_k, dtype=torch.float64)
        for i in range(num_q):
            qp = q_windows[i, :, sl].double().mean(0)
            scores = torch.full((num_k,), float("-inf"), dtype=torch.float64)
            for j in range(num_k):
                if local[i % spatial, j % spatial]:
                    scores[j] = qp @ k_windows[j, :, sl].double().mean(0) / math.sqrt(head_dim)
            probs[i] = scores.softmax(0)
        for t in range(num_q // spatial):
            block = probs[t * spatial : (t + 1) * spatial]
            values = sorted(block.flatten().tolist(), reverse=True)
            threshold = values[min(len(values) - 1, topk)]
            chosen[h, t * spatial : (t + 1) * spatial] = block > threshold
    return chosen


@pytest.mark.parametrize(("local_range", "topk"), [(3, 20), (1, 5), (5, 200), (3, 2)])
def test_block_choice_takes_top_k_over_each_time_slice(local_range, topk):
    gen = torch.Generator().manual_seed(local_range * 100 + topk)
    heads, head_dim, rows, cols = 2, 8, 2, 3
    spatial = rows * cols
    q_windows = torch.randn(2 * spatial, 128, heads * head_dim, generator=gen)
    k_windows = torch.randn(4 * spatial, 128, heads * head_dim, generator=gen)
    local = local_window_mask(rows, cols, local_range)
    ours = select_blocks(q_windows, k_windows, heads, local, topk)
    assert torch.equal(ours, _select_blocks_by_loops(q_windows, k_windows, heads, local, topk))
    # Never outside the local range, and at most topk blocks per (head, time slice).
    assert not (ours & ~local.repeat(2, 4)).any()
    assert int(ours.view(heads, 2, -1).sum(-1).max()) <= topk


def test_a_small_top_k_leaves_query_blocks_without_any_key_block():
    gen = torch.Generator().manual_seed(3)
    q_windows = torch.randn(4, 128, 16, generator=gen)
    k_windows = torch.randn(8, 128, 16, generator=gen)
    chosen = select_blocks(q_windows, k_windows, 2, local_window_mask(2, 2, 3), topk=1)
    assert (~chosen.any(-1)).any()
    with pytest.raises(ValueError, match="keeps no key block"):
        select_blocks(q_windows, k_windows, 2, local_window_mask(2, 2, 3), topk=-1)


def _random_case(seed: int, heads=2, q_blocks=3, k_blocks=5, head_dim=16):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, q_blocks * 128, head_dim, generator=gen)
    k = torch.randn(heads, k_blocks * 128, head_dim, generator=gen)
    v = torch.randn(heads, k_blocks * 128, head_dim, generator=gen)
    blocks = torch.rand(heads, q_blocks, k_blocks, generator=gen) > 0.5
    blocks[0, 1] = False  # a query block with nothing to attend to
    blocks[1, 2] = True
    return q, k, v, blocks


def test_reference_attention_equals_dense_masked_attention_and_zeroes_empty_rows():
    q, k, v, blocks = _random_case(0)
    token_mask = blocks.repeat_interleave(128, dim=1).repeat_interleave(128, dim=2)
    ours = block_sparse_attention(q, k, v, blocks, "reference")
    torch.testing.assert_close(ours, dense_masked_attention(q, k, v, token_mask), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[0, 128:256], torch.zeros(128, 16))
    # All blocks kept is plain attention.
    full = torch.ones_like(blocks)
    torch.testing.assert_close(block_sparse_attention(q, k, v, full, "reference"),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_flex_backend_matches_the_reference():
    q, k, v, blocks = _random_case(1)
    expected = block_sparse_attention(q, k, v, blocks, "reference")
    torch.testing.assert_close(block_sparse_attention(q, k, v, blocks, "flex"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_compiled_flex_backend_matches_the_reference_on_cuda():
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        q, k, v, blocks = (t.cuda() for t in _random_case(2, heads=4, q_blocks=6, k_blocks=9, head_dim=128))
        q, k, v = (t.to(dtype) for t in (q, k, v))
        expected = block_sparse_attention(q.float(), k.float(), v.float(), blocks, "reference")
        ours = block_sparse_attention(q, k, v, blocks, "flex").float()
        torch.testing.assert_close(ours, expected, rtol=tol, atol=tol)
        assert torch.equal(ours[0, 128:256], torch.zeros_like(ours[0, 128:256]))


def test_unknown_backend_is_refused():
    q, k, v, blocks = _random_case(0)
    with pytest.raises(ValueError, match="unknown sparse attention backend 'cuda'"):
        block_sparse_attention(q, k, v, blocks, "cuda")


# ------------------------------------------------------------------------------------- streaming


def _tiny_dit(seed=0) -> FlashDiT:
    torch.manual_seed(seed)
    model = FlashDiT(flash_dit_config("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_stream_state_stays_bounded_by_the_kv_ratio_whatever_the_clip_length():
    dit = _tiny_dit()
    settings = SparseAttentionSettings(topk_ratio=2.0, kv_ratio=3.0, local_range=3)
    rows, cols = 16, 32  # latent pixels -> token grid 8 x 16 -> 2 spatial windows per time slice
    gen = torch.Generator().manual_seed(0)
    state = dit.start_stream(torch.randn(1, 5, 32, generator=gen))
    sizes = []
    with torch.no_grad():
        for chunk in range(8):
            frames = 6 if chunk == 0 else 2
            noise = torch.randn(1, 16, frames, rows, cols, generator=gen)
            tokens = torch.randn(1, frames * (rows // 2) * (cols // 2), 48, generator=gen)
            out = dit.forward_chunk(noise, tokens, state, settings)
            assert out.shape == noise.shape and torch.isfinite(out).all()
            sizes.append([c.k.shape[0] for c in state.self_kv])
    # 3 time slices of 2 windows after every chunk: chunk 0 holds 3 slices, each later one adds one
    # and the oldest leaves.
    assert sizes == [[6, 6]] * 8 and state.cache_windows() == 6
    assert state.next_frame == 6 + 7 * 2


def test_later_chunks_see_the_cache_and_continue_frame_positions():
    dit = _tiny_dit(1)
    settings = SparseAttentionSettings(topk_ratio=10.0, kv_ratio=3.0, local_range=1)
    gen = torch.Generator().manual_seed(1)
    context = torch.randn(1, 5, 32, generator=gen)
    first = torch.randn(1, 16, 6, 16, 16, generator=gen), torch.randn(1, 6 * 64, 48, generator=gen)
    second = torch.randn(1, 16, 2, 16, 16, generator=gen), torch.randn(1, 2 * 64, 48, generator=gen)
    with torch.no_grad():
        streamed = dit.start_stream(context)
        dit.forward_chunk(*first, streamed, settings)
        assert streamed.next_frame == 6
        after_cache = dit.forward_chunk(*second, streamed, settings)
        fresh = dit.start_stream(context)
        fresh.next_frame = 6
        without_cache = dit.forward_chunk(*second, fresh, settings)
        restarted = dit.start_stream(context)
        dit.forward_chunk(*first, restarted, settings)
        restarted.next_frame = 0  # positions restarting per chunk (not the reference's behaviour)
        positions_restarted = dit.forward_chunk(*second, restarted, settings)
    assert (after_cache - without_cache).abs().max() > 1e-3
    assert (after_cache - positions_restarted).abs().max() > 1e-3


@pytest.mark.slow
def test_dit_stream_is_the_same_with_the_flex_backend():
    dit = _tiny_dit(2)
    gen = torch.Generator().manual_seed(2)
    context = torch.randn(1, 3, 32, generator=gen)
    chunks = [(torch.randn(1, 16, f, 16, 32, generator=gen), torch.randn(1, f * 128, 48, generator=gen))
              for f in (6, 2, 2)]  # fmt: skip
    outputs = {}
    for backend in ("reference", "flex"):
        settings = SparseAttentionSettings(topk_ratio=1.0, kv_ratio=2.0, local_range=1, backend=backend)
        state = dit.start_stream(context)
        with torch.no_grad():
            outputs[backend] = [dit.forward_chunk(noise, tokens, state, settings) for noise, tokens in chunks]
    for ours, expected in zip(outputs["flex"], outputs["reference"]):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_dit_refuses_grids_that_are_not_whole_windows():
    dit = _tiny_dit()
    state = dit.start_stream(torch.zeros(1, 2, 32))
    settings = SparseAttentionSettings(topk_ratio=1.0)
    with pytest.raises(ValueError, match="multiple of the"):
        dit.forward_chunk(torch.zeros(1, 16, 6, 16, 20), torch.zeros(1, 6 * 80, 48), state, settings)


def _tiny_projector(version: str) -> LQProjector:
    torch.manual_seed(0)
    model = LQProjector(lq_proj_config("tiny"), version).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_projector_streaming_equals_the_whole_clip_and_its_state_holds_two_frames(version):
    projector = _tiny_projector(version)
    video = torch.rand(1, 3, 13, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    state = LQProjState()
    with torch.no_grad():
        assert projector.stream(video[:, :, :1], state) is None
        streamed = [projector.stream(video[:, :, i : i + 4], state) for i in (1, 5, 9)]
        whole = projector(video)
    assert whole.shape == (1, 3 * 2 * 3, 48)
    torch.testing.assert_close(torch.cat(streamed, dim=1), whole, rtol=0, atol=0)
    assert state.conv1_context.shape[2] == 2 and state.conv2_context.shape[2] == 2


def test_only_v1_1_carries_context_from_the_previous_clip():
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    changed = video.clone()
    changed[:, :, 1:5] = -video[:, :, 1:5]  # a different clip 1, same clip 2
    for version, carries in (("v1.0", False), ("v1.1", True)):
        projector = _tiny_projector(version)
        with torch.no_grad():
            a, b = projector(video), projector(changed)
        clip2 = slice(4, 8)  # tokens of clip 2 (2 x 2 tokens per latent frame)
        assert (a[:, clip2] - b[:, clip2]).abs().max() > 0 if carries else torch.equal(a[:, clip2], b[:, clip2])


# ------------------------------------------------------------------------------------- checkpoints


def test_real_size_entries_are_the_published_ones():
    dit, projector = flashvsr_entries("flashvsr-v1.1")
    assert flash_dit_config("real").rope_dims == (44, 42, 42)  # frame / row / column parts of head_dim 128
    # reference/flashvsr WEIGHTS.md: counts from the reference modules built on the meta device.
    assert (sum(math.prod(e.shape) for e in dit), len(dit)) == (1_418_996_800, 825)
    assert (sum(math.prod(e.shape) for e in projector), len(projector)) == (287_845_888, 8)
    shapes = {e.name: e.shape for e in dit + projector}
    assert shapes["patch_embedding.weight"] == (1536, 16, 1, 2, 2)
    assert shapes["time_projection.1.weight"] == (9216, 1536)
    assert shapes["blocks.29.modulation"] == (1, 6, 1536)
    assert shapes["blocks.0.self_attn.norm_q.weight"] == (1536,)
    assert shapes["blocks.0.ffn.0.weight"] == (8960, 1536)
    assert shapes["head.head.weight"] == (64, 1536) and shapes["head.modulation"] == (1, 2, 1536)
    assert shapes["conv1.weight"] == (2048, 768, 4, 3, 3) and shapes["norm2.gamma"] == (3072, 1, 1, 1)
    assert shapes["linear_layers.0.weight"] == (1536, 3072)
    assert not any(name.startswith(("img_emb", "LQ_proj_in")) for name in shapes)


def _script():
    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO_ROOT / "scripts" / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_checkpoint_round_trip_through_the_loaders(tmp_path, capsys):
    out = tmp_path / "FlashVSR-v1.1"
    assert _script().main(["--variant", "tiny-flashvsr-v1.1", "--format", "fp32", "--out", str(out)]) == 0
    assert "tiny-flashvsr-v1.1 fp32" in capsys.readouterr().out
    saved = torch.load(out / LQ_PROJ_FILE, weights_only=True)
    projector = load_lq_projector(out / LQ_PROJ_FILE, "v1.1", dtype=torch.float32)
    assert projector.config.name == "tiny" and projector.version == "v1.1"
    for name, value in projector.state_dict().items():
        assert torch.equal(value, saved[name]), name
    dit = load_flashvsr_dit(out / DIT_FILE, dtype=torch.float32)
    assert dit.config.name == "tiny"
    video = torch.rand(1, 3, 9, 128, 128) * 2 - 1
    with torch.no_grad():
        tokens = projector(video)
        state = dit.start_stream(torch.randn(1, 4, 32))
        out_v = dit.forward_chunk(torch.randn(1, 16, 2, 16, 16), tokens, state,
                                  SparseAttentionSettings(topk_ratio=1.0, local_range=3))  # fmt: skip
    assert torch.isfinite(out_v).all()
    # The files are never replaced.
    with pytest.raises(SystemExit) as exit_:
        _script().main(["--variant", "tiny-flashvsr-v1.1", "--out", str(out)])
    assert exit_.value.code == 2 and "exists" in capsys.readouterr().err


def test_bf16_is_the_default_format(tmp_path):
    from safetensors import safe_open

    _script().main(["--variant", "tiny-flashvsr-v1.0", "--out", str(tmp_path)])
    with safe_open(str(tmp_path / DIT_FILE), "pt") as f:
        assert f.get_tensor("blocks.0.self_attn.q.weight").dtype == torch.bfloat16
    assert torch.load(tmp_path / LQ_PROJ_FILE, weights_only=True)["conv1.weight"].dtype == torch.bfloat16


def test_loader_names_missing_and_unexpected_keys(tmp_path):
    from seedvr_cli.weights.synthesize_flashvsr import write_flashvsr_checkpoint

    write_flashvsr_checkpoint("tiny-flashvsr-v1.0", tmp_path, fmt="fp32")
    state = torch.load(tmp_path / LQ_PROJ_FILE, weights_only=True)
    state["conv3.weight"] = state.pop("norm2.gamma")
    torch.save(state, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointError, match=r"1 missing: norm2\.gamma; 1 unexpected: conv3\.weight"):
        load_lq_projector(tmp_path / "broken.ckpt", "v1.0")
    with pytest.raises(CheckpointError, match="file not found"):
        load_flashvsr_dit(tmp_path / "absent.safetensors")


def test_loader_refuses_pickles_that_are_not_plain_state_dicts(tmp_path):
    import argparse

    # Any object outside torch's weights_only allow-list is refused before it is built.
    torch.save({"conv1.weight": torch.zeros(1), "extra": argparse.Namespace()}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="odd.ckpt: not a readable state dict"):
        load_lq_projector(tmp_path / "odd.ckpt", "v1.1")
    torch.save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="list.ckpt: holds a list, not a flat dict of tensors"):
        load_lq_projector(tmp_path / "list.ckpt", "v1.1")
