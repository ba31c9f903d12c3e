"""--compile: compiled DiT blocks give the eager output, read their parameters at every call (so
BlockSwap's moving them between slots is safe), and contain no host synchronisation."""

from __future__ import annotations

import os

import pytest
import torch

from torch._dynamo.utils import counters

from seedvr_cli.memory.blockswap import BlockSwap, apply_blockswap
from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.run import compile as compile_module
from seedvr_cli.run.compile import INDUCTOR_CACHE_ENV, compile_blocks, compile_seconds, inductor_cache_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(variant: str, seed: int = 0) -> NaDiT:
    model = NaDiT(dit_config(variant)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def _inputs():
    gen = torch.Generator().manual_seed(1)
    t, h, w = 2, 6, 8  # latent grid; the DiT patches 1x2x2
    return (torch.randn(t * h * w, 33, generator=gen), torch.randn(10, 64, generator=gen),
            torch.tensor([[t, h, w]]), torch.tensor([[10]]), torch.tensor([700.0]))  # fmt: skip


def _forward(model, **kwargs):
    with torch.inference_mode():
        return model(*_inputs(), **kwargs)


@pytest.fixture(autouse=True)
def fresh_dynamo(monkeypatch, tmp_path):
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "inductor"))
    torch._dynamo.reset()
    counters.clear()  # reset() leaves the graph counts of earlier tests
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("variant", "backend"), [("tiny-3b", "sdpa"), ("tiny-7b", "flash")])
def test_block_compiles_as_one_graph(variant, backend):
    # fullgraph=True fails on any graph break, and a host sync (.item(), .tolist(), a data-dependent
    # shape) is one: the block forward has none, whatever the attention backend.
    model = _model(variant)
    expected = _forward(model, attention_backend=backend)
    for block in model.blocks:
        block.compile(backend="eager", fullgraph=True, dynamic=False)
    torch.testing.assert_close(_forward(model, attention_backend=backend), expected, rtol=0, atol=0)


def test_compiled_blocks_read_their_parameters_at_every_call():
    # AOT-traced graphs (what inductor lowers) keep the CPU test short; the inductor-compiled
    # version runs on the GPU (tests/test_dit_fast_gpu.py).
    model = _model("tiny-3b")
    expected = _forward(model)
    compile_blocks(model, backend="aot_eager")
    # BlockSwap: every block through the two slots, so blocks 0 and 2 run from the same memory.
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=model.config.num_layers, swap_io=True), device="cpu")
    graphs = []
    for _ in range(2):
        torch.testing.assert_close(_forward(model), expected, rtol=0, atol=0)
        graphs.append(counters["stats"]["unique_graphs"])
    # Parameters moving between slots cost no recompilation: one graph per block variant.
    assert graphs[0] == graphs[1] <= 4
    # New values under the compiled graphs must show in the output.
    swapper.remove()
    replacement = _model("tiny-3b", seed=5)
    for mine, theirs in zip(model.parameters(), replacement.parameters()):
        mine.data = theirs.data.clone()
    torch.testing.assert_close(_forward(model), _forward(replacement), rtol=0, atol=0)
    assert compile_seconds() > 0


def test_compile_keeps_names_and_uses_the_user_cache(monkeypatch, tmp_path):
    model = _model("tiny-7b")
    names = list(model.state_dict())
    monkeypatch.delenv(INDUCTOR_CACHE_ENV)
    monkeypatch.setattr(compile_module, "seedvr_cache_dir", lambda: tmp_path / "cache")
    assert inductor_cache_dir() == tmp_path / "cache" / "inductor"
    compile_blocks(model, backend="eager")
    assert list(model.state_dict()) == names
    assert os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "cache" / "inductor")
