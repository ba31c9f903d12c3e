"""Access to the files under ``configs/``, from a checkout or from an installed wheel.

The wheel carries ``configs/`` as ``seedvr_cli/configs`` (see pyproject.toml); a checkout or an
editable install reads the top-level folder directly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def configs_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"configs folder not found next to {_PACKAGE_DIR}; reinstall seedvr-cli"
    )


def read_json(relative: str) -> Any:
    return json.loads((configs_dir() / relative).read_text())
