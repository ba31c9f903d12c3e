"""``seedvr assemble``: join the parts that ``seedvr upscale --shard I/N`` runs left in work directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from seedvr_cli.cli.app import app, console_err


@app.command(no_args_is_help=True)
def assemble(
    workdirs: Annotated[list[Path], typer.Argument(
        help="Work directories of one job (the hidden .OUTPUT.seedvr-* folders the shards wrote; one shared "
             "folder, or one per machine).", show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="Output file \\[default: the output the shards were started with].",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the work directories after a successful join.")] = False,
) -> None:
    """Blend the finished chunks of every shard into the final video, with audio and timing."""
    from seedvr_cli.run.assemble import assemble_parts

    target, result, notes = assemble_parts(list(workdirs), output, overwrite=overwrite, keep=keep)
    console_err.print(f"[green]done[/] wrote {target} ({result.frames_written} frames from {result.chunks_total} chunks, "
                      f"{result.elapsed_s:.1f} s)", highlight=False, soft_wrap=True)
    for note in notes:
        console_err.print(f"  note: {note}", highlight=False, soft_wrap=True)
