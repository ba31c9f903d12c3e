"""Shared test fixtures: where the shared reference data lives, and the skip when it is absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET once, at its first import. Without CUDA the kernel tests run the
# kernels in its interpreter, and any earlier test that imports Triton (torch.compile, FlexAttention)
# would otherwise fix it to "off" for the whole session and skip them.
if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 3B DiT (with its stand-in pos_emb.safetensors beside it) and a tiny VAE, written once
    per test session: tests read them and put anything they derive from them in their own folders."""
    from seedvr_cli.weights.synthesize import write_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    dit = write_checkpoint("tiny-3b", "fp16", folder / "tiny3b.safetensors", seed=0)
    vae = write_checkpoint("tiny-vae", "fp16", folder / "tinyvae.safetensors", seed=0)
    assert (folder / "pos_emb.safetensors").exists()
    return Path(dit), Path(vae)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``seedvr ARGS`` in this process: (exit code, stdout, stderr)."""
    from seedvr_cli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


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


@pytest.fixture(scope="module")
def model_files(checkpoints):
    """The session's tiny checkpoints as the ``ModelFiles`` a processor factory takes."""
    from seedvr_cli.run.models import ModelFiles

    dit, vae = checkpoints
    return ModelFiles(dit, vae, dit.parent / "pos_emb.safetensors")


def one_window_chunk():
    """Five random 24x32 frames, planned as one 5-frame window in one chunk, upscaled to 32 px in
    float32: (frames, task, InputContext) for ``SeedVRProcessor.process``."""
    from seedvr_cli.parallel.tasks import plan_chunks
    from seedvr_cli.pipeline.plan import plan_frame_size
    from seedvr_cli.pipeline.temporal import plan_windows
    from seedvr_cli.pipeline.window import WindowSettings
    from seedvr_cli.run.processor import InputContext

    frames = torch.randint(0, 256, (5, 24, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    plan = plan_windows(5, batch_size=5)
    task = plan_chunks(plan.windows, windows_per_chunk=1, shares=plan.chunk_shares)[0]
    size = plan_frame_size(24, 32, resolution=32)
    return frames, task, InputContext(plan, WindowSettings(frame_size=size, dtype=torch.float32))
