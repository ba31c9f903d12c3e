"""The ``seedvr`` command line: thin Typer commands that build settings and call one function.

Exit codes: 0 success, 1 failure, 2 usage error, 3 some files of a batch failed, 130 interrupted
(Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP.
Heavy imports (torch, av) happen inside the commands so that ``seedvr --help`` stays instant.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from seedvr_cli.cli.app import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, app, console_err
from seedvr_cli.cli.stopsignals import StopRequest, interrupted_exit_code, stop_on_signals
from seedvr_cli.errors import UserError

# Importing the command modules registers their commands on ``app``.
from seedvr_cli.cli import assemble as _assemble  # noqa: F401,E402
from seedvr_cli.cli import info as _info  # noqa: F401,E402
from seedvr_cli.cli import models as _models  # noqa: F401,E402
from seedvr_cli.cli import probe as _probe  # noqa: F401,E402
from seedvr_cli.cli import upscale as _upscale  # noqa: F401,E402



def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and maps errors to one line and an exit code."""
    usage_errors, click_errors = _click_exception_types()
    try:
        # standalone_mode=False: Typer returns a command's exit code instead of raising it.
        with stop_on_signals() as stop:
            code = app(args=argv, standalone_mode=False)
        # Typer turns an interrupt that a command leaves alone into a silent exit code 130; one that
        # handled it (upscale: what was kept, in its log format) returns 128 + the signal itself.
        if stop.signum is not None and code != stop.exit_code:
            _say_interrupted(stop)
    except UserError as err:
        # soft_wrap: one line whatever the width, so logs and scripts can grep it.
        from rich.markup import escape

        if _json_log_requested(argv):
            # Render farms parse stdout: a run that fails before it starts still says so in JSON.
            import json

            print(json.dumps({"event": "error", "message": str(err), "exit_code": err.exit_code}), flush=True)
        console_err.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt as stop:
        _say_interrupted(stop)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        console_err.print("[yellow]aborted[/]")
        sys.exit(EXIT_INTERRUPTED)
    except usage_errors as err:
        err.show()
        sys.exit(EXIT_USAGE)
    except click_errors as err:
        err.show()
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _say_interrupted(stop: KeyboardInterrupt | StopRequest) -> NoReturn:
    console_err.print(f"[yellow]interrupted ({stop})[/]" if str(stop) else "[yellow]interrupted[/]")
    sys.exit(interrupted_exit_code(stop))


def _json_log_requested(argv: list[str] | None) -> bool:
    args = list(sys.argv[1:] if argv is None else argv)
    return "--log-format=json" in args or any(a == "--log-format" and b == "json" for a, b in zip(args, args[1:]))


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage and other errors of both the installed click and the copy newer Typers vendor."""
    import click

    usage: list[type] = [click.UsageError]
    other: list[type] = [click.ClickException]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        usage.append(vendored.UsageError)
        other.append(vendored.ClickException)
    return tuple(usage), tuple(other)


__all__ = ["app", "main"]
