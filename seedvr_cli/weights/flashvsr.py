"""Published FlashVSR files -> ready modules: the DiT from
``diffusion_pytorch_model_streaming_dmd.safetensors`` and the LQ projector from ``LQ_proj_in.ckpt``
(a pickled plain state dict, read with ``weights_only=True``: nothing in it is executed).

The variant (published size or the tiny test size) is recognised from the tensors' names and
shapes; a file that fits none is refused with its missing, unexpected and mis-shaped names. The
reference loads both files strictly too, so no tensor is ever left at its initial value.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from seedvr_cli.errors import CheckpointError
from seedvr_cli.models.flashvsr.dit import FlashDiT
from seedvr_cli.models.flashvsr.dit_config import FLASH_DIT_VARIANTS
from seedvr_cli.models.flashvsr.lq_proj import LQ_PROJ_VARIANTS, LQProjector

DIT_FILE = "diffusion_pytorch_model_streaming_dmd.safetensors"
LQ_PROJ_FILE = "LQ_proj_in.ckpt"
_LISTED = 5  # names shown per kind of problem


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a ``.safetensors`` file or of a ``torch.save``-d state dict, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; download it with `seedvr models download` or pass its path")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable state dict ({err.__class__.__name__}); "
                              "download the file again") from err  # fmt: skip
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a flat dict of tensors")
    return state


def key_problems(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Missing, unexpected and mis-shaped names of ``state`` against ``model``; empty when it fits."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    shapes = [f"{name} {tuple(state[name].shape)} != {shape}" for name, shape in expected.items()
              if name in state and tuple(state[name].shape) != shape]  # fmt: skip
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if names:
            more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
            problems.append(f"{len(names)} {label}: {', '.join(names[:_LISTED])}{more}")
    return problems


def _fit(path: Path, state: dict[str, Tensor], candidates: dict[str, nn.Module], what: str) -> nn.Module:
    """The first meta-device candidate the state dict fits exactly, else a CheckpointError naming
    what differs from the published (first) variant."""
    reports = {}
    for name, model in candidates.items():
        problems = key_problems(model, state)
        if not problems:
            return model
        reports[name] = problems
    closest = next(iter(reports))
    raise CheckpointError(f"{path}: not a FlashVSR {what} ({'; '.join(reports[closest])} against the "
                          f"{closest} model); use the published {what} file")  # fmt: skip


def _materialise(model: nn.Module, state: dict[str, Tensor], device, dtype) -> nn.Module:
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_flashvsr_dit(path: str | Path, *, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16) -> FlashDiT:  # fmt: skip
    state = read_state_dict(path)
    with torch.device("meta"):
        candidates = {name: FlashDiT(config) for name, config in FLASH_DIT_VARIANTS.items()}
    return _materialise(_fit(Path(path), state, candidates, "DiT"), state, device, dtype)


def load_lq_projector(path: str | Path, version: str, *, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16) -> LQProjector:  # fmt: skip
    """``version`` ("v1.0", "v1.1") picks the streaming behaviour; the files of both look alike."""
    state = read_state_dict(path)
    with torch.device("meta"):
        candidates = {name: LQProjector(config, version) for name, config in LQ_PROJ_VARIANTS.items()}
    return _materialise(_fit(Path(path), state, candidates, "LQ projector"), state, device, dtype)


def load_prompt_embedding(path: str | Path, text_dim: int, *, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.bfloat16) -> Tensor:  # fmt: skip
    """``posi_prompt.pth``: the precomputed prompt embedding ``[1, S, text_dim]`` (a ``torch.save``-d
    tensor, read with ``weights_only=True``; ``[S, text_dim]`` is taken as one prompt)."""
    path = Path(path)
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable prompt embedding ({err.__class__.__name__}); use the "
                              "posi_prompt.pth published with FlashVSR") from err  # fmt: skip
    if isinstance(value, Tensor) and value.dim() == 2:
        value = value[None]
    if not isinstance(value, Tensor) or value.dim() != 3 or value.shape[0] != 1 or value.shape[2] != text_dim:
        what = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckpointError(f"{path}: holds {what}, not a prompt embedding [1, S, {text_dim}] for this DiT; "
                              "use the posi_prompt.pth published with FlashVSR")  # fmt: skip
    return value.to(device=device, dtype=dtype)
