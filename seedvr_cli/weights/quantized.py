"""Linear layers whose weight stays compressed in memory and is expanded inside ``forward``.

``Fp8Linear`` holds a float8_e4m3fn weight (the published fp8 files carry no scales: the values are
a plain cast) and upcasts it to the input's dtype per call. ``GGUFLinear`` holds packed GGML blocks
and dequantizes them per call. Both are drop-in replacements for ``nn.Linear`` that the loader
swaps in on the meta-device model before ``load_state_dict(assign=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seedvr_cli.weights.gguf_quant import block_layout, dequantize


class Fp8Linear(nn.Linear):
    """``nn.Linear`` with a weight stored in fp8; the bias is kept in the compute dtype."""

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    @classmethod
    def like(cls, linear: nn.Linear) -> Fp8Linear:
        return cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta",
                   dtype=torch.float8_e4m3fn)  # fmt: skip


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
