"""The FlashVSR fixture folder (format of ``shared/fixtures/flashvsr``): each part's checks run when
its module is installed and its files are in the folder."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from . import CaseResult

PARTS = ("flashvsr_dit", "flashvsr_decoders")


def _parts(fixture_dir: Path) -> list:
    found = []
    for name in PARTS:
        # A part not written yet is skipped; a part that fails to import is an error, not a skip.
        if importlib.util.find_spec(f"seedvr_cli.parity.{name}") is None:
            continue
        module = importlib.import_module(f"seedvr_cli.parity.{name}")
        if module.detect(fixture_dir):
            found.append(module)
    return found


def detect(fixture_dir: Path) -> bool:
    return bool(_parts(Path(fixture_dir)))


def run(fixture_dir: Path) -> list[CaseResult]:
    return [result for module in _parts(Path(fixture_dir)) for result in module.run(fixture_dir)]
