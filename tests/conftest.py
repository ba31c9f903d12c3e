"""Shared test fixtures: where the shared reference data lives, and the skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout on the developers' machines and in CI, not in a user's clone.
SHARED_DIR = Path(os.environ.get("SEEDVR_SHARED_DIR", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, skipping the calling test with a clear reason when it is absent."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared reference data not found at {path} (only present beside the project checkout)")
    return path


@pytest.fixture
def shared() -> Path:
    return shared_path()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for tests of tiny tensors: on a busy 2-core machine, thread hand-offs
    made each small op ~500x slower than the op itself."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
