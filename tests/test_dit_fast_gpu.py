"""The DiT fast paths on a CUDA GPU against their plain references: one-call attention backends
(flash varlen, FlexAttention), inductor-compiled blocks with BlockSwap, fp8 matmuls, and no host
synchronisation inside the blocks."""

from __future__ import annotations

import pytest
import torch

from seedvr_cli.memory.blockswap import BlockSwap, apply_blockswap
from seedvr_cli.models.attention import build_window_plan, reference_window_attention, text_rope_tables, with_packed_layout
from seedvr_cli.models.attention import attention_backend as backend_named
from seedvr_cli.models.attention_choice import choose_attention
from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.models.norms import rms_norm
from seedvr_cli.models.rope import RopeSpec, apply_rope
from seedvr_cli.run.compile import compile_blocks
from seedvr_cli.weights.quantized import Fp8Linear, choose_fp8_matmul

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
GRIDS = [(3, 21, 27), (1, 12, 20), (5, 8, 10)]
TXT_LENS = [13, 7, 30]


def _qkv(heads=4, dim=128, dtype=torch.bfloat16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lv, lt = sum(t * h * w for t, h, w in GRIDS), sum(TXT_LENS)
    vid = [torch.randn(lv, heads, dim, generator=gen) for _ in range(3)]
    txt = [torch.randn(lt, heads, dim, generator=gen) for _ in range(3)]
    vid[0], vid[1], txt[0], txt[1] = (rms_norm(x) for x in (vid[0], vid[1], txt[0], txt[1]))
    return [tuple(x.to(CUDA, dtype) for x in xs) for xs in (vid, txt)]


@pytest.mark.parametrize("name", ["flash", "flex"])
@pytest.mark.parametrize("rope", [RopeSpec("mmrope3d", 126), RopeSpec("pixel", 64)])
def test_one_call_backends_match_the_reference_in_bf16(name, rope):
    assert choose_attention(name, CUDA) == (name, None)
    vid, txt = _qkv()
    if rope.rotates_text:
        cos, sin = text_rope_tables(rope, TXT_LENS, CUDA)
        txt = (apply_rope(txt[0], cos, sin), apply_rope(txt[1], cos, sin), txt[2])
    plan = with_packed_layout(build_window_plan(GRIDS, TXT_LENS, "shifted", rope=rope, device=CUDA), 128, name)
    with torch.no_grad():
        fast = backend_named(name)(vid, txt, plan, True)
        # The oracle in float32 from the same bf16 inputs.
        ref = reference_window_attention(tuple(x.float() for x in vid), tuple(x.float() for x in txt), plan, True)
    for got, want in zip(fast, ref):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, rtol=0, atol=2e-2)


def _model(variant="tiny-3b", dtype=torch.bfloat16, seed=0) -> NaDiT:
    model = NaDiT(dit_config(variant)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model.to(CUDA, dtype)


def _inputs(t=3, h=24, w=40):
    gen = torch.Generator().manual_seed(1)
    return tuple(x.to(CUDA) for x in (torch.randn(t * h * w, 33, generator=gen), torch.randn(10, 64, generator=gen),
                                      torch.tensor([[t, h, w]]), torch.tensor([[10]]), torch.tensor([700.0])))


def _forward(model, **kwargs):
    with torch.inference_mode():
        return model(*_inputs(), **kwargs).float()


@pytest.mark.parametrize("variant", ["tiny-3b", "tiny-7b"])
def test_model_with_one_call_backends_matches_sdpa(variant):
    model = _model(variant)
    sdpa = _forward(model)
    for name in ("flash", "flex"):
        torch.testing.assert_close(_forward(model, attention_backend=name), sdpa, rtol=0, atol=5e-2 * sdpa.abs().max())


def test_blocks_make_no_host_sync():
    model = _model()
    for name in ("sdpa", "flash"):
        def runner(blocks, vid, txt, ctx):
            torch.cuda.set_sync_debug_mode("error")
            try:
                for block in blocks:
                    vid, txt = block(vid, txt, ctx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            return vid, txt

        _forward(model, attention_backend=name, block_runner=runner)


def test_inductor_compiled_blocks_with_blockswap_match_eager():
    torch._dynamo.reset()
    eager = _forward(_model(), attention_backend="flash")
    model = _model()
    compile_blocks(model)
    apply_blockswap(model, BlockSwap(blocks_to_swap=model.config.num_layers, swap_io=True), device=CUDA)
    for _ in range(2):
        compiled = _forward(model, attention_backend="flash")
        # Fused elementwise work rounds once where eager rounds per op: bf16-level differences.
        torch.testing.assert_close(compiled, eager, rtol=0, atol=2e-2 * eager.abs().max())
    torch._dynamo.reset()


def test_fp8_matmul_matches_the_upcast_path(monkeypatch):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no fp8 units")
    monkeypatch.setenv("SEEDVR_FP8_MATMUL", "on")
    assert choose_fp8_matmul(CUDA)
    gen = torch.Generator().manual_seed(0)
    layer = Fp8Linear(3072, 1024, bias=True, device="meta")
    layer.weight = torch.nn.Parameter((torch.randn(1024, 3072, generator=gen) * 0.05).to(torch.float8_e4m3fn).to(CUDA),
                                      requires_grad=False)
    layer.bias = torch.nn.Parameter(torch.randn(1024, generator=gen).to(CUDA, torch.bfloat16), requires_grad=False)
    x = torch.randn(4096, 3072, generator=gen).to(CUDA, torch.bfloat16)
    plain = layer(x).float()
    layer.use_scaled_mm = True
    fast = layer(x).float()
    assert float((fast - plain).abs().max() / plain.abs().max()) < 0.05


def test_fused_rms_norm_matches_the_reference_on_the_gpu():
    from seedvr_cli.models.norms import rms_norm_reference

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(50000, 3072, generator=gen) * 20).to(CUDA, torch.bfloat16)
    weight = torch.randn(3072, generator=gen).to(CUDA, torch.bfloat16)
    for w in (None, weight):
        fused, reference = rms_norm(x, w).float(), rms_norm_reference(x, w).float()
        # Only the order of the float32 sum may differ: at most one bf16 rounding step apart.
        torch.testing.assert_close(fused, reference, rtol=2**-7, atol=0)
