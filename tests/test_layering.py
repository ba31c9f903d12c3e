"""The package layering that docs/architecture.md describes holds in the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_goes_against_the_layering():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/import_graph.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    arrows = {line.split("->")[0].strip() + " -> " + line.split("->")[1].split()[0]
              for line in result.stdout.splitlines() if "->" in line and not line.startswith(" " * 14)}
    # The boundaries the design rests on, stated positively so a broken parser cannot pass vacuously.
    assert "run -> parallel" in arrows and "run -> pipeline" in arrows and "pipeline -> models" in arrows
    for low in ("pipeline", "models"):
        for high in ("run", "parallel", "media", "cli", "config"):
            assert f"{low} -> {high}" not in arrows
