"""The Typer application object and the consoles the commands print to."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

# Exit codes of every command (README): success, failure, usage error, some files of a batch
# failed, interrupted.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(
    name="seedvr",
    help="Upscale and restore videos and images with the SeedVR2 one-step diffusion models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Results go to stdout; progress, warnings and errors to stderr, so output stays pipeable. Piped
# into a file or a farm's log there is no terminal width: tables get room instead of 80 columns.
_LOG_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() else _LOG_WIDTH)
console_err = Console(stderr=True, width=None if sys.stderr.isatty() else _LOG_WIDTH)


def version_callback(value: bool) -> None:
    if value:
        from seedvr_cli import __version__

        console.print(f"seedvr-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Upscale and restore videos and images with the SeedVR2 one-step diffusion models."""
