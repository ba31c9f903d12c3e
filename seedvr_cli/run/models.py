"""Which model files a run loads: resolved (or downloaded) once in the parent, checked from their
headers, and identified for the resume key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seedvr_cli.config import MemorySettings, ModelSettings
from seedvr_cli.errors import UsageError
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.weights.download import resolve_model_file
from seedvr_cli.weights.loader import check_checkpoint
from seedvr_cli.weights.text_embedding import find_text_embedding, load_text_embedding


@dataclass(frozen=True)
class ModelFiles:
    """Local files of the three model assets (already resolved or downloaded by the parent)."""

    dit: Path
    vae: Path
    text_embedding: Path

    def identity(self) -> dict[str, str]:
        """Name and size of each file: part of the resume key, so that another checkpoint under
        the same name (or a registry name now pointing elsewhere) never mixes with finished chunks."""
        return {role: f"{path.name}:{path.stat().st_size}" for role, path in
                (("dit", self.dit), ("vae", self.vae), ("text", self.text_embedding))}


def resolve_models(settings: ModelSettings, memory: MemorySettings = MemorySettings()) -> ModelFiles:
    """The files ``settings`` name, downloaded where allowed. A swapped, foreign or incomplete
    checkpoint (a missing tensor, one of the wrong shape) and a text embedding that does not fit
    the DiT fail here, from the headers and the small embedding, in one line: inside the workers
    the same mistake would cost a model load per device and a retry before it surfaced."""
    dit = resolve_model_file(settings.model, model_dir=settings.model_dir, download=settings.download)
    vae = resolve_model_file(settings.vae, model_dir=settings.model_dir, download=settings.download)
    text = find_text_embedding(dit, override=settings.text_embedding, model_dir=settings.model_dir,
                               download=settings.download)
    dit_info = check_checkpoint(dit, "dit")
    check_checkpoint(vae, "vae")
    load_text_embedding(text, expected_dim=dit_config(dit_info.variant).txt_in_dim)
    if memory.blocks_to_swap > dit_info.num_blocks:
        raise UsageError(f"--blocks-to-swap {memory.blocks_to_swap}: {dit.name} has {dit_info.num_blocks} blocks; "
                         f"use at most {dit_info.num_blocks}")
    return ModelFiles(dit, vae, text)
