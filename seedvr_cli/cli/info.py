"""``seedvr info``: versions of the tool and its libraries, visible devices and their free memory."""

from __future__ import annotations

from seedvr_cli.cli.app import app, console


@app.command()
def info() -> None:
    """Show versions, visible compute devices and free VRAM."""
    from seedvr_cli.system import collect_system_info, render_system_info

    console.print(render_system_info(collect_system_info()))
