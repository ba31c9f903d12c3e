"""Which files a FlashVSR run loads: the DiT, the LQ projector and the decoder of the chosen
version and mode (registry entries, downloaded where allowed), and the prompt embedding
(``posi_prompt.pth``, which is not on Hugging Face: ``--text-embedding``, beside the DiT, or the
registry's copy fetched from the official GitHub repository)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seedvr_cli.config import ModelSettings
from seedvr_cli.errors import CheckpointError
from seedvr_cli.pipeline.flashvsr.choices import FlashVSRModel
from seedvr_cli.weights.download import (
    MissingModelFile,
    download as fetch_registered_file,
    find_local,
    missing_message,
    model_dir_or_env,
    resolve_model_file,
)
from seedvr_cli.weights.registry import FLASHVSR_PROMPT, flashvsr_files

PROMPT_FILE = "posi_prompt.pth"
_PROMPT_SOURCE = ("it ships in the FlashVSR GitHub repositories (OpenImagingLab/FlashVSR "
                  "examples/WanVSR/prompt_tensor/, the ComfyUI node's folder)")


@dataclass(frozen=True)
class FlashVSRFiles:
    """Local files of one FlashVSR model (already resolved or downloaded by the parent)."""

    dit: Path
    lq_proj: Path
    decoder: Path  # TCDecoder.ckpt (tiny modes) or Wan2.1_VAE.pth (full)
    prompt: Path

    def identity(self) -> dict[str, str]:
        """Name and size of each file, for the resume key (as ``run.models.ModelFiles.identity``)."""
        return {role: f"{path.name}:{path.stat().st_size}" for role, path in
                (("dit", self.dit), ("lq_proj", self.lq_proj), ("decoder", self.decoder), ("prompt", self.prompt))}


def resolve_flashvsr_files(settings: ModelSettings, model: FlashVSRModel) -> FlashVSRFiles:
    """The files ``model`` needs, every missing one named in one error line."""
    missing: list[MissingModelFile] = []
    download = settings.download
    found: list[Path] = []
    for entry in flashvsr_files(model.version, model.mode):
        try:
            found.append(resolve_model_file(entry.aliases[0], model_dir=settings.model_dir, download=download))
        except MissingModelFile as err:
            missing.append(err)
            download = False  # offline or unreachable: name the rest without trying each
    if missing:
        if len(missing) == 1:
            raise missing[0]
        raise CheckpointError(missing_message([err.entry for err in missing], settings.model_dir, missing[0].reason))
    dit, lq_proj, decoder = found
    return FlashVSRFiles(dit, lq_proj, decoder, find_prompt(settings, dit, download=settings.download))


def find_prompt(settings: ModelSettings, dit: Path | None, *, download: bool = False) -> Path:
    """``--text-embedding``, else ``posi_prompt.pth`` beside the DiT or in ``--model-dir``, else the
    registry's copy (fetched from GitHub when ``download`` allows)."""
    if settings.text_embedding is not None:
        path = Path(settings.text_embedding).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file; give the FlashVSR prompt embedding ({PROMPT_FILE}) "
                                  "with --text-embedding")
        return path
    places = [folder / PROMPT_FILE for folder in (dit.parent if dit is not None else None,
                                                   model_dir_or_env(settings.model_dir)) if folder is not None]
    for place in places:
        if place.is_file():
            return place
    cached = find_local(FLASHVSR_PROMPT, settings.model_dir)
    if cached is not None:
        return cached
    if download:
        return fetch_registered_file(FLASHVSR_PROMPT, model_dir=settings.model_dir)
    raise CheckpointError(f"{PROMPT_FILE} not found (looked in: {', '.join(map(str, places)) or 'nowhere'}); "
                          f"{_PROMPT_SOURCE}: put it beside the DiT, pass --text-embedding FILE, or allow the "
                          "download (`seedvr models download flashvsr-prompt`)")


def describe_flashvsr(settings: ModelSettings, model: FlashVSRModel) -> str:
    """What a run of ``model`` would load, without downloading anything (for ``--dry-run``)."""
    parts = []
    for entry in flashvsr_files(model.version, model.mode):
        local = find_local(entry, settings.model_dir)
        parts.append(str(local) if local is not None else f"{entry.name} (not here yet, downloaded on first use)")
    return f"{model.name} (FlashVSR v{model.version}, {model.mode}, decoder {model.decoder}): {', '.join(parts)}"
