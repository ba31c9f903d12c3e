"""``seedvr assemble``: join the parts that render-farm shards left in work directories into the
output the whole job would have written."""

from __future__ import annotations

from pathlib import Path

from seedvr_cli.errors import UserError
from seedvr_cli.media.reader import open_reader
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.media.writer import open_writer
from seedvr_cli.parallel.engine import assemble
from seedvr_cli.parallel.journal import Journal
from seedvr_cli.run.outputs import DropLeadingFrames


def assemble_parts(workdirs: list[Path], output: str | None, *, overwrite: bool, keep: bool, progress=None):
    """Join the parts (work directories of one job); returns the output path, the engine's result
    and notes for the user."""
    meta = Journal.load(workdirs[0]).meta
    settings_meta = dict(meta.get("output_settings") or {})
    settings_meta["overwrite"] = overwrite
    settings_meta["skip_existing"] = False
    settings = OutputSettings(**settings_meta)
    target = output or meta["output"]
    reader = None
    source_path = Path(meta["input"])
    if source_path.exists() or meta.get("sequence") or "%" in meta["input"]:
        try:
            reader = open_reader(meta["input"], sequence=bool(meta.get("sequence")), fps=meta.get("fps"))
        except UserError:
            reader = None
    whole = reader is not None and meta.get("first_frame", 0) == 0 and meta.get("frames") == reader.num_frames
    writer = open_writer(target, settings, width=meta["width"], height=meta["height"],
                         source=reader if whole else None, fps=reader.fps if reader is not None else meta.get("fps"),
                         deep=bool(meta.get("deep")), alpha=bool(meta.get("alpha")))
    try:
        result = assemble(workdirs, DropLeadingFrames(writer, int(meta.get("prepend", 0))), keep_workdir=keep,
                          progress=progress)
    except BaseException:
        writer.abort()
        raise
    finally:
        if reader is not None:
            reader.close()
    notes = list(getattr(writer, "notes", []) or [])
    if reader is None:
        notes.append(f"{meta['input']} not found: written at the recorded frame rate without its audio")
    return target, result, notes
