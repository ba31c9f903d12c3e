"""FlashVSR parity: a directory in the format of ``shared/fixtures/flashvsr`` holds fixtures of
several modules, each checked by its own module here (DiT + LQ projector, decoders); this kind
runs every one whose files are present."""

from __future__ import annotations

import importlib
from pathlib import Path

from seedvr_cli.parity import CaseResult

PARTS = ("flashvsr_dit", "flashvsr_decoders")


def _part_modules():
    for part in PARTS:
        name = f"seedvr_cli.parity.{part}"
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module is not "not written yet"
                raise


def detect(fixture_dir: Path) -> bool:
    return any(module.detect(fixture_dir) for module in _part_modules())


def run(fixture_dir: Path) -> list[CaseResult]:
    return [result for module in _part_modules() if module.detect(fixture_dir) for result in module.run(fixture_dir)]
