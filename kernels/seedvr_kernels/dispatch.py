"""Which implementation the models use: a Triton kernel or their own plain PyTorch path.

Decided once per (device, setting) and remembered. ``SEEDVR_KERNELS`` selects: ``auto``
(default: kernels on CUDA GPUs of compute capability 9.0 or newer, where they were measured),
``on`` (any CUDA GPU that Triton supports) or ``off`` (the PyTorch path everywhere). A CUDA
device that falls back under ``auto`` gets one line on stderr saying why.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable

import torch

KERNELS_ENV = "SEEDVR_KERNELS"
_SETTINGS = ("auto", "on", "off")
# Kernels were measured faster than the PyTorch path on Hopper; older GPUs keep PyTorch's path.
_MEASURED_CAPABILITY = (9, 0)


def kernels_setting() -> str:
    """``SEEDVR_KERNELS`` as one of auto, on, off; an unknown value counts as auto (noted once)."""
    value = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if value not in _SETTINGS:
        _note_unknown(value)
        return "auto"
    return value


@functools.cache
def _note_unknown(value: str) -> None:
    print(f"seedvr: {KERNELS_ENV}={value!r} is not one of {', '.join(_SETTINGS)}; using auto", file=sys.stderr)


def fast_group_norm(device: torch.device) -> Callable | None:
    """The Triton per-frame GroupNorm (+ SiLU) launcher for tensors on ``device``
    (``frame_group_norm.group_norm_silu_triton``), or None where the PyTorch path runs."""
    if device.type != "cuda":
        return None
    return _choose_group_norm(device.index if device.index is not None else torch.cuda.current_device(),
                              kernels_setting())


@functools.cache
def _choose_group_norm(index: int, setting: str) -> Callable | None:
    if setting == "off":
        return None
    if importlib.util.find_spec("triton") is None:
        _note("Triton is not installed on this platform")
        return None
    capability = torch.cuda.get_device_capability(index)
    if setting == "auto" and capability < _MEASURED_CAPABILITY:
        _note(f"cuda:{index} is sm_{capability[0]}{capability[1]}; they are used from sm_90 (Hopper) on "
              f"({KERNELS_ENV}=on forces them)")
        return None
    from .frame_group_norm import group_norm_silu_triton

    return group_norm_silu_triton


def _note(reason: str) -> None:
    print(f"seedvr: Triton kernels off, using the PyTorch path: {reason}", file=sys.stderr)
