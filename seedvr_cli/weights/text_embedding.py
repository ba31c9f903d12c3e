"""The positive text embedding the DiT is conditioned on (58 x 5120 bf16, docs/reference-behaviour.md R13).

Accepted files: ``pos_emb.pt`` (a plain tensor saved with ``torch.save``; read with
``weights_only=True``) or ``pos_emb.safetensors`` (key ``emb``). Lookup when no file is given: beside
the DiT file (``pos_emb.safetensors``, then ``pos_emb.pt``), then the registry entry (model folder,
HF cache, download).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.download import resolve_model_file
from seedvr_cli.weights.readers import load_pickled_weights
from seedvr_cli.weights.registry import TEXT_EMBEDDING

SAFETENSORS_KEY = "emb"
SIBLING_NAMES = ("pos_emb.safetensors", "pos_emb.pt")


def load_text_embedding(path: str | Path, *, expected_dim: int | None = 5120, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """The [tokens, dim] embedding in ``path``; CheckpointError when absent or of the wrong shape."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: text embedding not found; pass --text-embedding FILE or run `seedvr models download pos_emb.pt`"
        )
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                if SAFETENSORS_KEY not in f.keys():
                    names = list(f.keys())
                    more = ", ..." if len(names) > 3 else ""
                    raise CheckpointError(f"{path}: no tensor named {SAFETENSORS_KEY!r} (found: {', '.join(names[:3])}"
                                          f"{more}); is it a text embedding? pass pos_emb.safetensors or pos_emb.pt")
                emb = f.get_tensor(SAFETENSORS_KEY)
        else:
            emb = load_pickled_weights(
                path, lambda detail: CheckpointError(f"{path}: cannot read the text embedding ({detail})"))
            if isinstance(emb, dict) and len(emb) == 1:
                emb = next(iter(emb.values()))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read the text embedding ({str(err).splitlines()[0]})") from None
    if isinstance(emb, (list, tuple)) and len(emb) == 1:
        emb = emb[0]
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or (expected_dim is not None and emb.shape[1] != expected_dim):
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        want = f"[tokens, {expected_dim}]" if expected_dim else "[tokens, dim]"
        raise CheckpointError(f"{path}: text embedding has shape {shape}, expected {want} for this model")
    return emb.to(device=device, dtype=dtype or emb.dtype)


def find_text_embedding(model_path: str | Path | None = None, *, override: str | Path | None = None,
                        model_dir: str | Path | None = None, download: bool = True) -> Path:
    """Where the text embedding for ``model_path`` is: ``override``, a sibling file, or the registry."""
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: --text-embedding file not found")
        return path
    if model_path is not None:
        for name in SIBLING_NAMES:
            sibling = Path(model_path).expanduser().parent / name
            if sibling.is_file():
                return sibling
    return resolve_model_file(TEXT_EMBEDDING, model_dir=model_dir, download=download)
