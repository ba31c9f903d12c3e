"""Linear layers whose weight stays compressed in memory and is expanded inside ``forward``.

``Fp8Linear`` holds a float8_e4m3fn weight (the published fp8 files carry no scales: the values are
a plain cast, so the weight's scale is 1) and upcasts it to the input's dtype per call; or, with
``use_scaled_mm`` (``choose_fp8_matmul``: GPUs with fp8 units, sm_89+, when asked for), multiplies in
fp8 with ``torch._scaled_mm``, the activations quantized per row with their own scale.
``GGUFLinear`` holds packed GGML blocks and dequantizes them per call. Both are drop-in replacements
for ``nn.Linear`` that the loader swaps in on the meta-device model before
``load_state_dict(assign=True)``.

fp8 matmuls are off unless ``SEEDVR_FP8_MATMUL=on``: the weights are the same fp8 values either way,
but quantizing the activations to e4m3 (3 mantissa bits) moves each product by ~2 % of its range
(tests/test_fp8_matmul.py), which the pictures may show; measure with ``scripts/bench.py
--fp8-matmul --compare-plain`` before making it a default.
"""

from __future__ import annotations

import functools
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seedvr_cli.weights.gguf_quant import block_layout, dequantize


FP8_MATMUL_ENV = "SEEDVR_FP8_MATMUL"
# The largest finite float8_e4m3fn value: a row's largest |activation| is scaled onto it.
_E4M3_MAX = 448.0
# Compute capability from which GPUs have fp8 tensor cores (Ada, Hopper and newer).
_FP8_CAPABILITY = (8, 9)


class Fp8Linear(nn.Linear):
    """``nn.Linear`` with a weight stored in fp8; the bias is kept in the compute dtype."""

    # Set per model by the loader (``choose_fp8_matmul``); False: upcast the weight per call.
    use_scaled_mm = False

    def forward(self, x: Tensor) -> Tensor:
        if self.use_scaled_mm and scaled_mm_fits(self.weight, x):
            return fp8_linear_scaled_mm(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    @classmethod
    def like(cls, linear: nn.Linear) -> Fp8Linear:
        return cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta",
                   dtype=torch.float8_e4m3fn)  # fmt: skip


def scaled_mm_fits(weight: Tensor, x: Tensor) -> bool:
    """``torch._scaled_mm`` takes e4m3 weights whose both sides are multiples of 16."""
    return (weight.dtype == torch.float8_e4m3fn and x.dtype in (torch.bfloat16, torch.float16)
            and weight.shape[0] % 16 == 0 and weight.shape[1] % 16 == 0)


def fp8_linear_scaled_mm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` in fp8: each row of ``x`` scaled onto e4m3's range and cast, the
    product accumulated in float32 and rescaled by ``torch._scaled_mm``; the weight's scale is 1."""
    rows = x.reshape(-1, x.shape[-1])
    scale = (rows.abs().amax(dim=-1, keepdim=True).float() / _E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    quantized = (rows.float() / scale).clamp(-_E4M3_MAX, _E4M3_MAX).to(torch.float8_e4m3fn)
    ones = torch.ones(1, weight.shape[0], device=x.device, dtype=torch.float32)
    # weight.t() is column-major, the layout _scaled_mm wants for its second operand.
    out = torch._scaled_mm(quantized, weight.t(), scale_a=scale, scale_b=ones, out_dtype=x.dtype)
    if bias is not None:
        out = out + bias.to(x.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def choose_fp8_matmul(device: torch.device) -> bool:
    """Whether fp8 weights on ``device`` multiply in fp8: ``SEEDVR_FP8_MATMUL=on`` (default off, see
    the module docstring), a GPU with fp8 units, and the fast paths not turned off (SEEDVR_KERNELS=off)."""
    wanted = os.environ.get(FP8_MATMUL_ENV, "off").strip().lower()
    if wanted != "on" or device.type != "cuda":
        return False
    from seedvr_kernels import kernels_setting

    if kernels_setting() == "off":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = torch.cuda.get_device_capability(index)
    if capability < _FP8_CAPABILITY:
        _note_no_fp8_units(index, capability)
        return False
    return True


@functools.cache
def _note_no_fp8_units(index: int, capability: tuple[int, int]) -> None:
    print(f"seedvr: {FP8_MATMUL_ENV}=on, but cuda:{index} (sm_{capability[0]}{capability[1]}) has no fp8 units "
          "(sm_89+); fp8 weights are upcast", file=sys.stderr)


class GGUFLinear(nn.Module):
    """A linear layer whose ``weight`` is GGML-packed uint8 [out_features, bytes per row]."""

    def __init__(self, in_features: int, out_features: int, qtype, *, bias: bool, device=None) -> None:
        super().__init__()
        block_size, type_size = block_layout(qtype)
        if in_features % block_size:
            raise ValueError(f"in_features {in_features} is not a multiple of the {qtype.name} block size {block_size}")
        self.in_features = in_features
        self.out_features = out_features
        self.qtype = qtype
        packed = torch.empty(out_features, in_features // block_size * type_size, dtype=torch.uint8, device=device)
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def like(cls, linear: nn.Linear, qtype) -> GGUFLinear:
        return cls(linear.in_features, linear.out_features, qtype, bias=linear.bias is not None, device="meta")

    def dequantized_weight(self, dtype: torch.dtype) -> Tensor:
        return dequantize(self.weight, self.qtype, (self.out_features, self.in_features), dtype)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype.name}"


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
