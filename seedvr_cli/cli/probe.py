"""``seedvr probe``: what the tool sees in a media file, as a table or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from seedvr_cli.cli.app import app, console, console_err


@app.command()
def probe(
    files: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Videos, images, image-sequence folders (with --sequence) or printf patterns such as "
            "frames/%06d.png.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON array with one object per file (rationals as \"num/den\" strings) instead of tables.",
        ),
    ] = False,
    sequence: Annotated[
        bool,
        typer.Option("--sequence", help="Read a folder given as FILE as one image sequence, one image per frame."),
    ] = False,
    fps: Annotated[
        Optional[float],
        typer.Option("--fps", help="Frame rate of image sequences (default 25); videos keep their own.", min=0.001),
    ] = None,
) -> None:
    """Show frame count, frame rate, size, pixel format, colour tags, audio and subtitles of media files.

    Exits with 1 when a file cannot be read, after reporting the others.
    """
    from seedvr_cli.errors import UsageError, UserError
    from seedvr_cli.media.probe import probe as probe_media

    if not files:
        # Checked here rather than by Typer so the message is one line with the fix, exit code 2.
        raise UsageError("give at least one FILE to probe, e.g. seedvr probe video.mp4")

    results: list[dict] = []
    failures: list[UserError] = []
    for name in files:
        try:
            info = probe_media(name, sequence=sequence, fps=fps)
        except UserError as err:
            failures.append(err)
            results.append({"path": name, "error": str(err)})
            continue
        if as_json:
            results.append(info.to_dict())
        else:
            console.print(render_media_info(info))
    if as_json:
        console.print_json(json.dumps(results))
    from rich.markup import escape

    for err in failures[:-1]:
        console_err.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    if failures:
        # The entry point prints the last one the same way and exits with its code (1).
        raise failures[-1]


def render_media_info(info):
    """A two-column Rich table of one ``MediaInfo``."""
    from rich.table import Table

    table = Table(title=str(info.path), title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for label, value in media_info_rows(info):
        table.add_row(label, value)
    return table


def media_info_rows(info) -> list[tuple[str, str]]:
    kind = {"video": "video", "image": "image", "sequence": f"image sequence of {len(info.files)} files"}[info.kind]
    rows = [
        ("kind", f"{kind} ({info.container})"),
        ("codec", info.codec),
        ("size", f"{info.width}x{info.height}  SAR {_ratio(info.sample_aspect_ratio)}  DAR {_ratio(info.display_aspect_ratio)}"),
        ("frames", f"{info.frame_count}  ({_COUNT_SOURCES.get(info.frame_count_source, info.frame_count_source)})"
                   + (f"  but the container announces {info.promised_frames}: the file looks cut off"
                      if info.short else "")),
    ]
    if info.kind != "image":
        vfr = {True: "  variable rate", False: "  constant rate", None: ""}[info.vfr]
        rows += [
            ("frame rate", f"{_ratio(info.fps)} = {float(info.fps):.6g} fps{vfr}"),
            ("time base", _ratio(info.time_base)),
            ("duration", f"{info.duration:.6g} s" + (f"  (starts at {info.start_time:.6g} s)" if info.start_time else "")),
        ]
    if info.rotation:
        rows.append(("rotation", f"{info.rotation} degrees (display matrix; frames are processed as stored)"))
    rows += [
        ("pixels", f"{info.pix_fmt}, {info.bit_depth}-bit" + (", alpha" if info.has_alpha else ", no alpha")),
        ("colour", "  ".join(f"{k} {v}" for k, v in info.color.names().items())),
    ]
    for audio in info.audio:
        rate = f"{audio.sample_rate} Hz" if audio.sample_rate else ""
        lang = f" [{audio.language}]" if audio.language and audio.language != "und" else ""
        rows.append((f"audio #{audio.index}", f"{audio.codec}, {audio.channels} ch ({audio.layout}), {rate}{lang}"))
    for sub in info.subtitles:
        lang = f" [{sub.language}]" if sub.language and sub.language != "und" else ""
        rows.append((f"subtitles #{sub.index}", f"{sub.codec}{lang}" + (f" {sub.title}" if sub.title else "")))
    if info.kind == "sequence" and info.files:
        rows.append(("first file", str(Path(info.files[0]).name)))
    return rows


_COUNT_SOURCES = {
    "container": "container header, matches its sample table",
    "index": "sample table; the header count disagreed",
    "packets": "counted packets",
    "decoded": "counted by decoding",
    "files": "one per file",
    "image": "single image",
}


def _ratio(value) -> str:
    return f"{value.numerator}/{value.denominator}"
