"""Output names: where the result of one input goes, and the checks that keep inputs safe."""

from __future__ import annotations

from pathlib import Path

from seedvr_cli.errors import UsageError, UserError
from seedvr_cli.media.images import IMAGE_SUFFIXES, is_sequence_pattern
from seedvr_cli.media.settings import IMAGE_CODECS, IMAGE_OUTPUT_SUFFIXES, VIDEO_CODECS, VIDEO_CONTAINERS, OutputSettings

# A container every codec we write fits in, for inputs whose own container we cannot write.
FALLBACK_VIDEO_SUFFIX = ".mkv"
# Where each codec goes when the input's own container cannot hold it.
_CODEC_HOME = {"prores": ".mov", "prores4444": ".mov", "ffv1": ".mkv", "av1": ".mkv"}
_CODECS_IN = {
    ".mp4": {"h264", "h265", "av1"}, ".m4v": {"h264", "h265", "av1"},
    ".mov": {"h264", "h265", "av1", "prores", "prores4444"},
    ".mkv": set(VIDEO_CODECS), ".webm": {"av1"},
}


def video_suffix_for(input_suffix: str, settings: OutputSettings) -> str:
    """The output suffix for a video: the input's when it can hold the chosen codec, else the codec's home."""
    suffix = input_suffix.lower()
    if suffix not in VIDEO_CONTAINERS:
        suffix = FALLBACK_VIDEO_SUFFIX
    if settings.codec in VIDEO_CODECS and settings.codec not in _CODECS_IN[suffix]:
        return _CODEC_HOME.get(settings.codec, ".mp4")
    return suffix


def default_output(input_path: str | Path, kind: str, settings: OutputSettings, folder: Path | None = None) -> str:
    """``{stem}{suffix}.{ext}`` beside the input (or in ``folder``) for one input of ``kind``.

    Videos keep their container when it can hold the codec; an image codec (``--codec png``)
    turns a video into a folder of numbered images. Images keep their type unless an image codec
    is asked for. Sequences become a sibling folder with the same file pattern, or a video file
    when a video codec is asked for.
    """
    text = str(input_path)
    if kind == "sequence":
        pattern = Path(text) if is_sequence_pattern(text) else None
        source_folder = pattern.parent if pattern else Path(text)
        parent = folder or source_folder.parent
        name = source_folder.name + settings.suffix
        if settings.codec in VIDEO_CODECS:
            return str(parent / (name + _CODEC_HOME.get(settings.codec, ".mp4")))
        if pattern is not None:
            file_pattern = pattern.name
            if settings.codec in IMAGE_CODECS:
                file_pattern = str(Path(file_pattern).with_suffix(IMAGE_CODECS[settings.codec]))
            return str(parent / name / file_pattern)
        return str(parent / name)
    path = Path(text)
    parent = folder or path.parent
    stem = path.stem + settings.suffix
    if kind == "image":
        suffix = IMAGE_CODECS[settings.codec] if settings.codec in IMAGE_CODECS else path.suffix
        if suffix.lower() not in IMAGE_OUTPUT_SUFFIXES:
            suffix = ".tif"  # a type we read but cannot write (EXR): 16-bit TIFF keeps the depth
        return str(parent / (stem + suffix))
    if settings.codec in IMAGE_CODECS:
        return str(parent / stem / f"%06d{IMAGE_CODECS[settings.codec]}")
    return str(parent / (stem + video_suffix_for(path.suffix, settings)))


def looks_like_file(output: str | Path) -> bool:
    """True when ``-o`` names one output (a known media suffix or a sequence pattern), not a folder."""
    text = str(output)
    path = Path(text)
    if text.endswith(("/", "\\")) or path.is_dir():
        return False
    return is_sequence_pattern(text) or path.suffix.lower() in VIDEO_CONTAINERS or path.suffix.lower() in IMAGE_SUFFIXES


def output_exists(output: str) -> bool:
    """An output exists when its file does, or, for an image pattern, when any of its frames do."""
    if is_sequence_pattern(output):
        from seedvr_cli.media.images import resolve_sequence

        try:
            resolve_sequence(output)
        except UserError:
            return False
        return True
    return Path(output).exists()


def check_not_input(input_path: str, output: str) -> None:
    if _same_place(input_path, output) or _writes_into_sequence(input_path, output):
        raise UsageError(f"{input_path}: the output would replace the input; choose another --suffix or -o")


def _writes_into_sequence(input_path: str, output: str) -> bool:
    """An image-sequence output in the folder an image-sequence input is read from: its frames could
    overwrite input frames (``frames/%04d.png`` both ways, or the folder itself)."""
    def folder(text: str) -> Path:
        return Path(text).parent if is_sequence_pattern(text) else Path(text)

    if not (is_sequence_pattern(input_path) or Path(input_path).is_dir()):
        return False
    if not (is_sequence_pattern(output) or not Path(output).suffix):
        return False
    return _same_place(str(folder(input_path)), str(folder(output)))


def _same_place(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.samefile(pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


# What `--compare` and `--preview N` add to an output's name; a folder re-run must not take these
# side outputs for new inputs (``discovery``).
COMPARE_TAG = "_compare"
PREVIEW_TAG = "_preview_"


def _name_base(output: str) -> tuple[Path, str, str]:
    """``(folder, stem, suffix)`` of an output; an image pattern is named by its folder."""
    path = Path(output)
    if is_sequence_pattern(output):
        folder = path.parent
        return folder.parent, folder.name or folder.resolve().name, ""
    return path.parent, path.stem if path.suffix else path.name, path.suffix


def compare_output(output: str) -> str:
    """Where ``--compare`` writes the input-beside-output version of ``output``: the same kind of
    file (or image folder, same pattern) with ``_compare`` after the stem."""
    folder, stem, suffix = _name_base(output)
    if is_sequence_pattern(output):
        return str(folder / (stem + COMPARE_TAG) / Path(output).name)
    return str(folder / (stem + COMPARE_TAG + suffix))


def preview_output(output: str, frame: int) -> Path:
    """Where ``--preview N`` writes its PNG: beside ``output`` (beside its folder for image
    sequences, so the preview never mixes with the sequence's frames)."""
    folder, stem, _ = _name_base(output)
    return folder / f"{stem}{PREVIEW_TAG}{frame}.png"


def is_side_output(stem: str, suffix: str) -> bool:
    """Whether a file stem is a ``--compare`` or ``--preview`` output of a run with ``--suffix suffix``."""
    if not suffix:
        return False
    if stem.endswith(suffix + COMPARE_TAG):
        return True
    head, tag, number = stem.rpartition(PREVIEW_TAG)
    return bool(tag) and head.endswith(suffix) and number.isdigit()
