"""Which model files a run loads: resolved (or downloaded) once in the parent, checked from their
headers, and identified for the resume key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seedvr_cli.config import MemorySettings, ModelSettings
from seedvr_cli.errors import CheckpointError, UsageError, UserError
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.weights.detect import inspect_checkpoint
from seedvr_cli.weights.download import (
    MissingModelFile,
    missing_message,
    resolve_model_file,
)
from seedvr_cli.weights.loader import check_checkpoint
from seedvr_cli.weights.registry import find_model
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
    """The files ``settings`` name, downloaded where allowed; every missing one is named in one
    error. A swapped, foreign or incomplete checkpoint (a missing tensor, one of the wrong shape)
    and a text embedding that does not fit the DiT fail here, from the headers and the small
    embedding, in one line: inside the workers the same mistake would cost a model load per device
    and a retry before it surfaced."""
    missing: list[MissingModelFile] = []
    download = settings.download

    def resolve(find, *args, **kwargs) -> Path | None:
        nonlocal download
        try:
            return find(*args, model_dir=settings.model_dir, download=download, **kwargs)
        except MissingModelFile as err:
            missing.append(err)
            # The next files would fail the same way (offline, unreachable hub): look for them
            # locally only, so that one message can name everything that is missing.
            download = False
            return None

    dit = resolve(resolve_model_file, settings.model)
    vae = resolve(resolve_model_file, settings.vae)
    text = resolve(find_text_embedding, dit, override=settings.text_embedding)
    if missing:
        if len(missing) == 1:
            raise missing[0]
        raise CheckpointError(missing_message([err.entry for err in missing], settings.model_dir, missing[0].reason))
    assert dit is not None and vae is not None and text is not None
    dit_info = check_checkpoint(dit, "dit")
    check_checkpoint(vae, "vae")
    load_text_embedding(text, expected_dim=dit_config(dit_info.variant).txt_in_dim)
    if memory.blocks_to_swap > dit_info.num_blocks:
        raise UsageError(f"--blocks-to-swap {memory.blocks_to_swap}: {dit.name} has {dit_info.num_blocks} blocks; "
                         f"use at most {dit_info.num_blocks}")
    return ModelFiles(dit, vae, text)


def describe_models(settings: ModelSettings) -> str:
    """Which DiT and VAE a run would load and in which format, without downloading anything
    (for ``--dry-run``): from the file's header where it is here, else from the registry."""
    return ", ".join(f"{role} {_describe_file(name, settings.model_dir)}"
                     for role, name in (("model", settings.model), ("vae", settings.vae)))


def _describe_file(name: str, model_dir: str | None) -> str:
    try:
        path = resolve_model_file(name, model_dir=model_dir, download=False)
        info = inspect_checkpoint(path)
    except UserError:
        entry = find_model(Path(name).name)
        if entry is None:
            return f"{name} (not found)"
        return f"{entry.name} ({entry.variant} {entry.format}; not here yet, downloaded on first use)"
    return f"{path} ({info.variant} {info.format})"
