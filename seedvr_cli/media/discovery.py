"""Turning the INPUT arguments of ``seedvr upscale`` into a list of jobs, each with its output name.

An input is a file, a folder (searched recursively; its tree is mirrored under ``-o DIR``), a glob
(``clips/*.mp4``, ``**`` allowed), or an image sequence (a printf pattern such as
``frames/%06d.png``, or a folder with ``sequence=True``). Images of a folder are independent jobs.
Pure functions of the file system: nothing is read beyond names, nothing is written.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from seedvr_cli.errors import UsageError, UserError
from seedvr_cli.media.images import IMAGE_SUFFIXES, is_sequence_pattern, natural_key
from seedvr_cli.media.outputs import check_not_input, default_output, is_side_output, looks_like_file, output_exists
from seedvr_cli.media.settings import OutputSettings

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".flv", ".wmv", ".3gp", ".y4m", ".gif", ".mxf", ".ogv",
})


@dataclass(frozen=True)
class Job:
    """One input and where its result goes. ``kind`` is ``video``, ``image`` or ``sequence``.

    ``input``/``output`` are strings because a sequence is a pattern, not a path. ``skip`` is set
    when the output exists and ``skip_existing`` was asked for.
    """

    input: str
    output: str
    kind: str
    skip: bool = False


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def discover_jobs(
    inputs: Sequence[str | Path],
    output: str | Path | None = None,
    settings: OutputSettings | None = None,
    *,
    sequence: bool = False,
) -> list[Job]:
    """Jobs for ``inputs`` in a stable order, outputs named by ``settings`` and ``output`` (``-o``).

    Raises ``UsageError`` for impossible requests (``-o FILE`` with several inputs, an output that
    would replace an input, two inputs with one output) and ``UserError`` for missing inputs or
    existing outputs (unless ``settings.overwrite``; with ``settings.skip_existing`` they are
    returned with ``skip=True``).
    """
    settings = settings or OutputSettings()
    if not inputs:
        raise UsageError("no INPUT given; pass a video, an image, a folder, a glob or a pattern like frames/%06d.png")
    out_text = None if output is None else str(output)
    out_is_file = out_text is not None and looks_like_file(out_text)
    out_folder = None if out_text is None or out_is_file else Path(out_text)

    # (input, kind, folder the input was found under, for mirroring)
    found: list[tuple[str, str, Path | None]] = []
    for item in inputs:
        found.extend(_expand(str(item), sequence=sequence, skip_under=out_folder, suffix=settings.suffix))
    if not found:
        raise UserError(f"no video or image found in {', '.join(map(str, inputs))}; check the paths")

    if out_is_file and len(found) > 1:
        raise UsageError(
            f"-o {out_text} names one output but {len(found)} inputs were found; give -o a folder instead"
        )
    jobs: list[Job] = []
    for input_text, kind, root in found:
        if out_is_file:
            target = out_text
        elif out_folder is not None:
            folder = out_folder
            if root is not None:
                folder = out_folder / Path(input_text).parent.relative_to(root)
            target = default_output(input_text, kind, settings, folder=folder)
        else:
            target = default_output(input_text, kind, settings)
        check_not_input(input_text, target)
        jobs.append(Job(input_text, target, kind))
    _check_distinct(jobs)
    return _apply_existing(jobs, settings)


def _expand(text: str, *, sequence: bool, skip_under: Path | None, suffix: str) -> list[tuple[str, str, Path | None]]:
    path = Path(text)
    if is_sequence_pattern(text):
        return [(text, "sequence", None)]
    if path.is_dir():
        if sequence:
            return [(text, "sequence", None)]
        return [(str(p), kind, path) for p, kind in _walk(path, skip_under, suffix)]
    if path.is_file():
        kind = kind_of(path)
        if kind is None:
            raise UserError(f"{path}: not a video or image this tool reads (by its suffix); rename it or convert it first")
        return [(text, kind, None)]
    if path.exists():
        raise UserError(f"{path}: not a regular file (a pipe, a device or a socket); save the stream to a file "
                        "and pass that")
    if glob.has_magic(text):
        matches = sorted((Path(m) for m in glob.glob(text, recursive=True)), key=lambda p: (str(p.parent), natural_key(p)))
        result = [(str(p), kind_of(p), None) for p in matches if p.is_file() and kind_of(p) is not None]
        if not result:
            raise UserError(f"{text}: the pattern matches no video or image; check the pattern")
        return result
    raise UserError(f"{text}: no such file or folder; check the path")


def _walk(root: Path, skip_under: Path | None, suffix: str):
    """Media files under ``root``, in natural order, leaving out hidden files, our unfinished
    outputs and earlier results (``x{suffix}.mp4`` beside ``x.mp4``, and the ``--compare`` and
    ``--preview`` files beside those), and the ``-o`` folder."""
    skip = skip_under.resolve() if skip_under is not None else None
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: (_parts_key(p.relative_to(root))))
    for path in files:
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if skip is not None and (skip == path.parent.resolve() or skip in path.resolve().parents):
            continue
        kind = kind_of(path)
        if kind is None:
            continue
        if is_side_output(path.stem, suffix):
            continue
        if suffix and path.stem.endswith(suffix):
            original = path.stem[: -len(suffix)]
            if any(path.with_name(original + ext).exists() for ext in {path.suffix, *VIDEO_SUFFIXES, *IMAGE_SUFFIXES}):
                continue
        yield path, kind


def _parts_key(relative: Path) -> tuple:
    return tuple(natural_key(Path(part)) for part in relative.parts)


def _check_distinct(jobs: list[Job]) -> None:
    seen: dict[str, str] = {}
    for job in jobs:
        key = str(Path(job.output).resolve())
        if key in seen:
            raise UsageError(
                f"{job.input} and {seen[key]} would both be written to {job.output}; pass them separately with -o"
            )
        seen[key] = job.input
    inputs = {str(Path(job.input).resolve()) for job in jobs}
    for job in jobs:
        if str(Path(job.output).resolve()) in inputs:
            raise UsageError(f"{job.output}: is both an input and the output of {job.input}; choose another --suffix or -o")


def _apply_existing(jobs: list[Job], settings: OutputSettings) -> list[Job]:
    existing = [job for job in jobs if output_exists(job.output)]
    if not existing or settings.overwrite:
        return jobs
    if settings.skip_existing:
        skipped = {job.output for job in existing}
        return [Job(job.input, job.output, job.kind, skip=job.output in skipped) for job in jobs]
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    raise UserError(
        f"{existing[0].output}: already exists{more}; pass --overwrite to replace it or --skip-existing to skip it"
    )
