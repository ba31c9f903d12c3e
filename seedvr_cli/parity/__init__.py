"""Parity checks against reference fixtures (the format of ``shared/fixtures/*``).

Each fixture kind has a module with ``detect(fixture_dir) -> bool`` and
``run(fixture_dir) -> list[CaseResult]``; ``scripts/parity.py`` picks the module whose
``detect`` accepts the directory. Tolerances are the bounds the fixture sets give for a faithful
float32 implementation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

# Fixture kinds, in the order they are tried.
KINDS = ("dit", "vae", "pipeline", "flashvsr")


@dataclass(frozen=True)
class CaseResult:
    """One compared output of one fixture case."""

    case: str
    output: str
    max_abs: float
    max_rel: float
    tolerance: float
    # Some outputs (sort-based colour matching) are judged by the share of values off, not the max.
    note: str = ""
    passed_override: bool | None = None

    @property
    def passed(self) -> bool:
        if self.passed_override is not None:
            return self.passed_override
        return self.max_abs <= self.tolerance


def compare(case: str, output: str, ours, reference, tolerance: float, note: str = "") -> CaseResult:
    """Max absolute and relative error of ``ours`` against ``reference`` (float64 maths)."""
    import torch

    ours64 = ours.detach().to("cpu", torch.float64)
    ref64 = reference.detach().to("cpu", torch.float64)
    if ours64.shape != ref64.shape:
        raise ValueError(f"{case}/{output}: shape {tuple(ours64.shape)} != reference {tuple(ref64.shape)}")
    diff = (ours64 - ref64).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref64.abs().max()) if ref64.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    return CaseResult(case, output, max_abs, max_rel, tolerance, note)


def kind_module(kind: str):
    return importlib.import_module(f"seedvr_cli.parity.{kind}")


def detect_kind(fixture_dir: Path) -> str:
    for kind in KINDS:
        try:
            module = kind_module(kind)
        except ImportError:
            continue
        if module.detect(fixture_dir):
            return kind
    raise ValueError(f"{fixture_dir}: not a fixture directory of a known kind ({', '.join(KINDS)})")
