"""fp8 checkpoints' Linear layers in fp8 (torch._scaled_mm) against the upcast path, and when the
loader turns them on (only asked for, on GPUs with fp8 units, fast paths not off)."""

from __future__ import annotations

import pytest
import torch

from seedvr_cli.weights import quantized
from seedvr_cli.weights.loader import load_dit
from seedvr_cli.weights.quantized import (
    FP8_MATMUL_ENV,
    Fp8Linear,
    choose_fp8_matmul,
    fp8_linear_scaled_mm,
    scaled_mm_fits,
)
from seedvr_cli.weights.synthesize import write_checkpoint


def _layer(out_features=48, in_features=64, seed=0) -> Fp8Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = Fp8Linear(in_features, out_features, bias=True, device="meta")
    layer.weight = torch.nn.Parameter((torch.randn(out_features, in_features, generator=gen) * 0.2)
                                      .to(torch.float8_e4m3fn), requires_grad=False)
    layer.bias = torch.nn.Parameter(torch.randn(out_features, generator=gen).bfloat16(), requires_grad=False)
    return layer


def _relative_error(fast: torch.Tensor, plain: torch.Tensor) -> float:
    return float((fast.float() - plain.float()).abs().max() / plain.float().abs().max())


def test_scaled_mm_is_the_upcast_product_within_activation_rounding():
    layer = _layer()
    x = torch.randn(2, 37, 64, generator=torch.Generator().manual_seed(1)).bfloat16()
    plain = layer(x)
    layer.use_scaled_mm = True
    fast = layer(x)
    assert fast.shape == plain.shape == (2, 37, 48) and fast.dtype == torch.bfloat16
    # e4m3 activations (3 mantissa bits, scaled per row): a few % of the output's range, no more.
    assert 0 < _relative_error(fast, plain) < 0.05
    # Activations that e4m3 holds exactly after their row's scaling (signed powers of two) give
    # the upcast result up to the bf16 output rounding.
    gen = torch.Generator().manual_seed(2)
    signs = torch.randint(0, 2, (5, 64), generator=gen) * 2 - 1
    exact = (signs * 2.0 ** torch.randint(0, 4, (5, 64), generator=gen)).bfloat16()
    layer.use_scaled_mm = False
    torch.testing.assert_close(fp8_linear_scaled_mm(exact, layer.weight, layer.bias), layer(exact),
                               rtol=8e-3, atol=8e-3)


def test_zero_rows_and_odd_shapes():
    layer = _layer()
    layer.use_scaled_mm = True
    zeros = torch.zeros(3, 64, dtype=torch.bfloat16)
    assert torch.equal(layer(zeros), layer.bias.expand(3, 48))
    # Sides not multiples of 16, float32 inputs and e5m2 weights take the upcast path.
    assert not scaled_mm_fits(torch.zeros(40, 24, dtype=torch.float8_e4m3fn), zeros)
    assert not scaled_mm_fits(layer.weight, zeros.float())
    assert not scaled_mm_fits(layer.weight.to(torch.float8_e5m2), zeros)


def test_fp8_matmul_is_chosen_only_when_asked_on_a_gpu_with_fp8_units(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    monkeypatch.delenv(FP8_MATMUL_ENV, raising=False)
    monkeypatch.delenv("SEEDVR_KERNELS", raising=False)
    assert not choose_fp8_matmul(cuda)  # off unless asked for
    monkeypatch.setenv(FP8_MATMUL_ENV, "on")
    assert choose_fp8_matmul(cuda)
    assert not choose_fp8_matmul(torch.device("cpu"))
    monkeypatch.setenv("SEEDVR_KERNELS", "off")  # bench --compare-plain's plain run
    assert not choose_fp8_matmul(cuda)
    monkeypatch.delenv("SEEDVR_KERNELS")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 6))
    monkeypatch.setattr(quantized, "_note_no_fp8_units", lambda index, capability: None)
    assert not choose_fp8_matmul(cuda)  # Ampere: no fp8 units


def test_loader_sets_the_fp8_layers(tmp_path, monkeypatch):
    path = write_checkpoint("tiny-3b", "fp8_e4m3fn", tmp_path / "fp8.safetensors", seed=0)

    def fp8_layers():
        return [m for m in load_dit(path, compute_dtype=torch.bfloat16).modules() if isinstance(m, Fp8Linear)]

    assert fp8_layers() and not any(m.use_scaled_mm for m in fp8_layers())  # the CPU: upcast
    monkeypatch.setattr("seedvr_cli.weights.loader.choose_fp8_matmul", lambda device: True)
    assert all(m.use_scaled_mm for m in fp8_layers())
