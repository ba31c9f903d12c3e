"""``--compile``: the DiT's blocks compiled with ``torch.compile``, its cache kept between runs.

Each block is compiled in place (``nn.Module.compile``), so parameter names, BlockSwap's groups and
the block-loop seam stay as they are. Parameters are inputs of the compiled graphs, never
constants: BlockSwap pointing a block's parameters at another slot's memory changes what the
graph reads, not whether it is reused (tests/test_compile.py checks swapped == unswapped).
Shapes are static (``dynamic=False``): a run has one frame size and at most two window lengths, so
each block variant compiles once or twice, and static shapes give the best kernels.

Inductor's artefacts go to ``TORCHINDUCTOR_CACHE_DIR``, by default under the user cache
(``~/.cache/seedvr-cli/inductor``), so a second run reuses them and compiles in a fraction of the time.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from seedvr_cli.weights.download import seedvr_cache_dir

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Graphs per compiled function before dynamo gives up and runs it eagerly. A block's code is shared
# by all blocks; its variants (shared or separate stream weights, window method, last block) times
# two window lengths need about a dozen, far below this.
_RECOMPILE_LIMIT = 64


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs (``TORCHINDUCTOR_CACHE_DIR`` if set)."""
    configured = os.environ.get(INDUCTOR_CACHE_ENV)
    return Path(configured).expanduser() if configured else seedvr_cache_dir() / "inductor"


def compile_blocks(model: nn.Module, backend: str = "inductor") -> None:
    """Compile every block of ``model`` (a ``NaDiT``) in place; compiling happens at first use."""
    os.environ.setdefault(INDUCTOR_CACHE_ENV, str(inductor_cache_dir()))
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    for block in model.blocks:
        block.compile(backend=backend, dynamic=False)


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (tracing, lowering, loading kernels)."""
    from torch._dynamo.utils import compilation_time_metrics

    return sum(compilation_time_metrics.get("_compile.compile_inner", ()))
