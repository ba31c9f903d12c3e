"""``seedvr models list|download|verify|inspect``: the registry of published checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from seedvr_cli.cli.app import app, console, console_err

models_app = typer.Typer(
    help="Published SeedVR2 and FlashVSR checkpoints: list them, download them, verify local copies.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

ModelDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--model-dir",
        envvar="SEEDVR_MODEL_DIR",
        help="Folder of pre-staged model files, searched before the Hugging Face cache (a ComfyUI "
        "models/SEEDVR2 folder works as it is; it may be read-only).",
        show_default=False,
    ),
]


@models_app.command("list")
def list_models(
    model_dir: ModelDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array instead of a table.")] = False,
) -> None:
    """Show every published file: repository, size, format, whether a local copy exists and where."""
    import json

    from rich.table import Table

    from seedvr_cli.weights.download import find_local
    from seedvr_cli.weights.registry import MODEL_FILES

    rows = []
    for entry in MODEL_FILES:
        local = find_local(entry, model_dir)
        rows.append((entry, local))
    if as_json:
        payload = [{"name": e.name, "repo": e.repo, "path": e.path, "kind": e.kind, "variant": e.variant,
                    "format": e.format, "size": e.size, "sha256": e.sha256, "aliases": list(e.aliases),
                    "note": e.note, "url": e.url, "local": str(local) if local else None} for e, local in rows]  # fmt: skip
        console.print_json(json.dumps(payload))
        return
    title = "SeedVR2 checkpoints (name or alias works with --model and `models download`)"
    if console.width < _TABLE_MIN_WIDTH:
        _print_stacked(title, rows)
        return
    table = Table(title=title)
    table.add_column("name / aliases", no_wrap=True)
    table.add_column("model")
    table.add_column("format")
    table.add_column("size", justify="right")
    table.add_column("source / local copy", overflow="fold")
    table.add_column("note", overflow="fold")
    for entry, local in rows:
        name = entry.name + (f"\n[dim]{', '.join(entry.aliases)}[/]" if entry.aliases else "")
        where = f"[green]{local}[/]" if local else f"[dim]{entry.url or entry.repo}[/]"
        table.add_row(name, entry.variant, entry.format, entry.size_label, where, entry.note)
    console.print(table)


# Below this width the six-column table squeezes names and notes into slivers (an 80-column
# terminal is the common case): each file gets a few lines of its own instead.
_TABLE_MIN_WIDTH = 120


def _print_stacked(title: str, rows: list) -> None:
    """One block per file: its full name on a line of its own (copyable), then the details indented."""
    from rich.markup import escape
    from rich.padding import Padding

    console.print(f"[bold]{escape(title)}[/]", highlight=False)
    for entry, local in rows:
        console.print()
        console.print(f"[bold]{escape(entry.name)}[/]", highlight=False, overflow="fold")
        size = "size unknown" if entry.size_label == "?" else entry.size_label
        facts = f"{entry.variant}, {entry.format}, {size}"
        if entry.aliases:
            facts += f"; aliases: {', '.join(entry.aliases)}"
        lines = [escape(facts)]
        lines.append(f"[green]here: {escape(str(local))}[/]" if local else f"[dim]from {escape(entry.url or entry.repo)}[/]")
        if entry.note:
            lines.append(f"[dim]{escape(entry.note)}[/]")
        for line in lines:
            console.print(Padding(line, (0, 0, 0, 2), expand=False), highlight=False, overflow="fold")


@models_app.command("download")
def download_models(
    names: Annotated[list[str], typer.Argument(help="File names or aliases from `seedvr models list`, or a "
                                                    "FlashVSR model (e.g. flashvsr-v1.1-tiny) for all its files "
                                                    "and the prompt embedding.")],
    model_dir: ModelDirOption = None,
    to: Annotated[
        Optional[Path],
        typer.Option("--to", help="Download into this folder instead of the Hugging Face cache.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when a copy exists.")] = False,
    with_vae: Annotated[
        bool, typer.Option("--vae/--no-vae", help="Also fetch the VAE (ema_vae_fp16.safetensors) with a DiT: "
                                                  "every run needs one.")
    ] = True,
    with_text_embedding: Annotated[
        bool, typer.Option("--text-embedding/--no-text-embedding", help="Also fetch pos_emb.pt with a DiT.")
    ] = True,
) -> None:
    """Download files (resumable, sha256-checked) into the Hugging Face cache or --to FOLDER.

    A DiT comes with what a run needs beside it: the VAE and the text embedding.
    """
    from seedvr_cli.errors import CheckpointError
    from seedvr_cli.weights.download import MissingModelFile, download, find_local, missing_message, verify_file
    from seedvr_cli.weights.registry import get_model

    entries = _with_companions([entry for name in names for entry in _named(name)], vae=with_vae,
                               text_embedding=with_text_embedding)
    for entry in entries:
        local = None if force else find_local(entry, to or model_dir)
        if local is not None:
            verify_file(local, entry)
            console_err.print(f"{entry.name}: already present at {local}", highlight=False)
            console.print(str(local), highlight=False, soft_wrap=True)
            continue
        console_err.print(f"{entry.name}: downloading from {entry.url or entry.repo} ({entry.size_label})",
                          highlight=False)
        try:
            path = download(entry, model_dir=model_dir, local_dir=to, force=force)
        except MissingModelFile as err:
            # Not "run `seedvr models download`": that is the command which has just failed.
            raise CheckpointError(missing_message([entry], to or model_dir, err.reason, suggest_download=False)) from None
        console.print(str(path), highlight=False, soft_wrap=True)


def _named(name: str) -> list:
    """The registry entries ``name`` stands for: one file, or every file of a FlashVSR model."""
    from seedvr_cli.pipeline.flashvsr.choices import find_flashvsr_model
    from seedvr_cli.weights.registry import FLASHVSR_PROMPT, flashvsr_files, get_model

    choice = find_flashvsr_model(name)
    if choice is None:
        return [get_model(name)]
    return [*flashvsr_files(choice.version, choice.mode), FLASHVSR_PROMPT]


def _with_companions(entries: list, *, vae: bool, text_embedding: bool) -> list:
    """``entries`` plus the VAE and text embedding a DiT among them cannot run without."""
    from seedvr_cli.config import DEFAULT_VAE
    from seedvr_cli.weights.registry import get_model, text_embedding_entry

    wanted = list(entries)
    if any(e.kind == "dit" for e in entries):
        if vae and not any(e.kind == "vae" for e in entries):
            wanted.append(get_model(DEFAULT_VAE))
        if text_embedding and text_embedding_entry() not in entries:
            wanted.append(text_embedding_entry())
    return wanted


@models_app.command("verify")
def verify_models(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Names to check (default: every file present locally).")
    ] = None,
    model_dir: ModelDirOption = None,
    rehash: Annotated[bool, typer.Option("--rehash", help="Hash again instead of trusting remembered results.")] = False,
) -> None:
    """Check local copies against the published sha256 and say what each file holds."""
    from seedvr_cli.errors import CheckpointError
    from seedvr_cli.weights.detect import inspect_checkpoint
    from seedvr_cli.weights.download import find_local, verify_file
    from seedvr_cli.weights.registry import MODEL_FILES, get_model

    entries = [get_model(n) for n in names] if names else list(MODEL_FILES)
    checked = failed = 0
    for entry in entries:
        local = find_local(entry, model_dir)
        if local is None:
            if names:
                console_err.print(f"[yellow]{entry.name}: no local copy[/]", highlight=False)
                failed += 1
            continue
        checked += 1
        try:
            ok = verify_file(local, entry, force=rehash)
            # FlashVSR files are not SeedVR2 checkpoints: only their bytes are checked here.
            what = inspect_checkpoint(local).describe() if entry.kind in ("dit", "vae") else entry.kind
        except CheckpointError as err:
            failed += 1
            console_err.print(f"[bold red]FAILED[/] {err}", highlight=False)
            continue
        status = "sha256 ok" if ok else "no published sha256"
        console.print(f"[green]OK[/] {entry.name} ({status}): {what} at {local}", highlight=False, soft_wrap=True)
    if checked == 0 and not names:
        console_err.print("no registered files found locally; see `seedvr models list`", highlight=False)
    if failed:
        raise CheckpointError(f"{failed} of {len(entries) if names else checked} files failed verification (see above)")


@models_app.command("inspect")
def inspect_models(files: Annotated[list[Path], typer.Argument(help="Checkpoint files to describe.")]) -> None:
    """Say which model and format a checkpoint file holds (header only where possible)."""
    from seedvr_cli.weights.detect import inspect_checkpoint

    for path in files:
        console.print(f"{path}: {inspect_checkpoint(path).describe()}", highlight=False, soft_wrap=True)
