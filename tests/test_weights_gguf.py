"""GGUF block formats: our torch dequantizers against the gguf package's numpy ones, our quantizers,
and the GGUF reader (names, logical shapes, memory mapping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf import quants as gguf_quants

from seedvr_cli.weights import gguf_quant as gq
from seedvr_cli.weights.readers import GGUFTensor, open_checkpoint

ALL_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]
QUANTIZABLE = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# Byte offsets of the fp16 scale fields inside one block, per type (to make random blocks finite).
_F16_FIELDS = {Q.Q8_0: (0,), Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2),
               Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_blocks(qtype, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes with every fp16 scale replaced by a finite value: valid blocks of any type."""
    _, type_size = gq.block_layout(qtype)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype in (Q.F16, Q.BF16, Q.F32):
        values = rng.standard_normal(n_blocks * type_size // {Q.F16: 2, Q.BF16: 2, Q.F32: 4}[qtype])
        dtype = {Q.F16: np.float16, Q.F32: np.float32}.get(qtype)
        if qtype == Q.BF16:
            return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_blocks, -1)
        return values.astype(dtype).view(np.uint8).reshape(n_blocks, -1)
    for offset in _F16_FIELDS[qtype]:
        scales = (rng.random(n_blocks) * 0.01).astype(np.float16)
        raw[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
def test_dequantizer_matches_gguf_package_on_random_blocks(qtype):
    rng = np.random.default_rng(int(qtype))
    block_size, _ = gq.block_layout(qtype)
    raw = _random_blocks(qtype, 64, rng)
    rows = raw.reshape(8, -1)  # 8 rows of 8 blocks each
    expected = gguf_quants.dequantize(rows, qtype)
    ours = gq.dequantize(torch.from_numpy(rows), qtype, expected.shape)
    assert ours.shape == expected.shape == (8, 8 * block_size)
    np.testing.assert_array_equal(ours.numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda q: q.name)
def test_quantizer_round_trip(qtype):
    torch.manual_seed(0)
    weights = torch.randn(16, 512) * 0.05
    packed = gq.quantize(weights, qtype)
    # Decoded by the gguf package itself: our blocks are valid for any reader.
    decoded = torch.from_numpy(gguf_quants.dequantize(packed.numpy(), qtype).astype(np.float32))
    np.testing.assert_array_equal(gq.dequantize(packed, qtype, weights.shape).numpy(), decoded.numpy())
    # Worst-case error relative to the largest weight (measured: Q4_0 0.072, Q4_K 0.052, Q5_0 0.036,
    # Q5_K 0.026, Q6_K 0.016, Q8_0 0.0039, BF16 0.0024, F16 0.0003, F32 0).
    bound = {Q.Q4_0: 0.14, Q.Q4_K: 0.1, Q.Q5_0: 0.07, Q.Q5_K: 0.05, Q.Q6_K: 0.03, Q.Q8_0: 0.008,
             Q.BF16: 0.005, Q.F16: 0.001, Q.F32: 0.0}[qtype]  # fmt: skip
    rel = ((decoded - weights).abs().max() / weights.abs().max()).item()
    assert rel <= bound, rel


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.BF16, Q.F16], ids=lambda q: q.name)
def test_quantizer_is_bit_identical_to_gguf_package(qtype):
    torch.manual_seed(1)
    weights = torch.randn(8, 256)
    ours = gq.quantize(weights, qtype).numpy()
    theirs = gguf_quants.quantize(weights.numpy(), qtype).view(np.uint8).reshape(ours.shape)
    np.testing.assert_array_equal(ours, theirs)


def test_quantize_rejects_rows_that_are_not_whole_blocks():
    assert not gq.can_quantize((4, 132), Q.Q8_0)
    with pytest.raises(ValueError, match="multiple of the Q4_K block size"):
        gq.quantize(torch.zeros(4, 128), Q.Q4_K)


def _write_gguf(path, tensors: dict[str, tuple[np.ndarray, Q]], orig_shapes: dict[str, tuple] | None = None):
    writer = GGUFWriter(str(path), arch="seedvr")
    for name, shape in (orig_shapes or {}).items():
        writer.add_array(f"comfy.gguf.orig_shape.{name}", list(shape))
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_reader_strips_comfy_prefix_and_reads_logical_shapes(tmp_path):
    weight = torch.randn(64, 256)
    packed = gq.quantize(weight, Q.Q4_K).numpy()
    conv = np.random.default_rng(0).standard_normal((8, 2 * 3 * 3 * 3)).astype(np.float16)
    path = tmp_path / "m.gguf"
    _write_gguf(
        path,
        {"model.diffusion_model.a.weight": (packed, Q.Q4_K), "model.diffusion_model.conv.weight": (conv, Q.F16),
         "other.tensor": (np.zeros(4, np.float32), Q.F32)},
        orig_shapes={"model.diffusion_model.conv.weight": (8, 2, 3, 3, 3)},
    )  # fmt: skip
    with open_checkpoint(path) as reader:
        # The prefix is present, so only prefixed tensors count, without their prefix.
        assert reader.names() == ["a.weight", "conv.weight"]
        assert reader.infos["a.weight"].shape == (64, 256) and reader.infos["a.weight"].qtype == "Q4_K"
        assert reader.infos["conv.weight"].shape == (8, 2, 3, 3, 3)
        packed_tensor = reader.get("a.weight")
        assert isinstance(packed_tensor, GGUFTensor) and packed_tensor.data.dtype == torch.uint8
        torch.testing.assert_close(packed_tensor.dequantize(), gq.dequantize(torch.from_numpy(packed), Q.Q4_K, (64, 256)))
        assert reader.get("conv.weight").shape == (8, 2, 3, 3, 3)
        # Memory-mapped: the tensor views the reader's map, nothing was copied.
        mapped = reader._reader.data
        assert np.shares_memory(packed_tensor.data.numpy(), mapped)


class _Float32Watch(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every op that produces a float32 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.float32_ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.float32_ops.append(str(func))
        return out


@pytest.mark.parametrize("qtype", [t for t in ALL_TYPES if t != Q.F32], ids=lambda q: q.name)
def test_bf16_dequantization_runs_in_float16_without_float32_temporaries(qtype):
    rng = np.random.default_rng(7 + int(qtype))
    rows = torch.from_numpy(_random_blocks(qtype, 64, rng).reshape(8, -1))
    shape = (8, 8 * gq.block_layout(qtype)[0])
    with _Float32Watch() as watch:
        ours = gq.dequantize(rows, qtype, shape, torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and not watch.float32_ops
    exact = gq.dequantize(rows, qtype, shape, torch.float32)
    if qtype in (Q.F16, Q.BF16):
        assert torch.equal(ours, exact.to(torch.bfloat16))
        return
    # The community node's way: float16 arithmetic (R30), then one cast. That differs from the
    # float32 route by float16 rounding of the products (K-quants subtract two of them, so the
    # bound is relative to the tensor's largest value, not to each result) and the bf16 cast.
    half = gq.DEQUANTIZERS[qtype](rows.reshape(-1, gq.block_layout(qtype)[1]), torch.float16).reshape(shape)
    assert torch.equal(ours, half.to(torch.bfloat16))
    assert (ours.float() - exact).abs().max() <= 2**-7 * exact.abs().max()
