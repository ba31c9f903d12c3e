"""Where finished frames go: the output writer of one input, and the facts that choose its format."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seedvr_cli.errors import UserError
from seedvr_cli.media.encoders import check_image_options, check_video_encoding, has_encoder_choices
from seedvr_cli.media.images import IMAGE_SUFFIXES, is_sequence_pattern
from seedvr_cli.media.pixels import pixel_format_facts
from seedvr_cli.media.probe import probe
from seedvr_cli.media.settings import IMAGE_CODECS, VIDEO_CONTAINERS, OutputSettings
from seedvr_cli.media.writer import open_writer


class DropLeadingFrames:
    """Sink adapter: the first ``count`` frames of the timeline are prepended context, not output."""

    def __init__(self, sink, count: int) -> None:
        self.sink, self.remaining = sink, count

    def write(self, frames: np.ndarray) -> None:
        if self.remaining:
            dropped = min(self.remaining, len(frames))
            frames, self.remaining = frames[dropped:], self.remaining - dropped
        if len(frames):
            self.sink.write(frames)

    def close(self) -> None:
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


def is_video_output(output: str, settings: OutputSettings) -> bool:
    return Path(output).suffix.lower() in VIDEO_CONTAINERS and not settings.is_image_codec()


def output_keeps_alpha(output: str, settings: OutputSettings, deep: bool) -> bool:
    """Whether the output format stores alpha: if not, the alpha upscaling is skipped altogether."""
    if is_video_output(output, settings):
        return settings.encoding_for(output, deep=deep, alpha=True).keeps_alpha
    return Path(output).suffix.lower() not in (".jpg", ".jpeg", ".bmp")


def deep_output_asked(settings: OutputSettings) -> bool:
    """``--10bit``, or a pixel format deeper than 8 bits: the chunks must then carry 16-bit values."""
    if settings.ten_bit:
        return True
    if settings.pix_fmt:
        return pixel_format_facts(settings.pix_fmt).bit_depth > 8
    return False


def output_settings_meta(settings: OutputSettings) -> dict:
    """The output flags, stored in the work directory so that ``seedvr assemble`` encodes the same way."""
    return asdict(settings)


@dataclass(frozen=True)
class FileSubset:
    """What a writer needs of an image-sequence source cut by --frames: the files of those frames
    (their names become the output's), the rate, the depth and the alpha."""

    files: tuple
    fps: object
    deep: bool
    has_alpha: bool


def frame_subset(reader, first_frame: int, frames: int) -> FileSubset | None:
    """A sequence's frames keep their own file names under --frames; a video's have no such names
    (and no matching audio), so the writer gets no source and plain timing."""
    files = getattr(reader, "files", None)
    if not files:
        return None
    chosen = tuple(files[first_frame:first_frame + frames])
    return FileSubset(chosen, reader.fps, bool(reader.deep), bool(reader.has_alpha))


def open_output(output: str, settings: OutputSettings, reader, *, first_frame: int, frames: int,
                size: tuple[int, int], deep: bool, alpha: bool):
    """The writer of one input's output. A sub-range (``--frames``) has no matching audio or
    timestamps in the source, so it gets plain constant-rate timing."""
    whole = first_frame == 0 and frames == reader.num_frames
    source = reader if whole else frame_subset(reader, first_frame, frames)
    return open_writer(output, settings, width=size[1], height=size[0], source=source, fps=reader.fps,
                       deep=deep, alpha=alpha)


def check_encoders(jobs, settings: OutputSettings, *, sequence: bool, fps) -> None:
    """Open every encoder the run's outputs will use with the options the user chose (``--preset``,
    ``--crf``, ``-e``), before any model is loaded: what an encoder refuses or does not know is a
    usage error now, not after the GPU work. The encoder follows each input's depth and alpha
    (a 10-bit source gets h265 by default), so the inputs are probed; one that cannot be is
    reported when it is planned."""
    if not has_encoder_choices(settings):
        return
    checked = set()
    for job in jobs:
        if job.skip:
            continue
        try:
            info = probe(job.input, sequence=sequence, fps=fps)
        except UserError:
            continue
        deep = info.bit_depth > 8 or deep_output_asked(settings)
        alpha = info.has_alpha and output_keeps_alpha(job.output, settings, deep)
        if is_video_output(job.output, settings):
            encoding = settings.encoding_for(job.output, deep=deep, alpha=alpha)
            key = (encoding.encoder, encoding.pix_fmt, tuple(encoding.options.items()))
            if key not in checked:
                checked.add(key)
                check_video_encoding(encoding, settings)
        else:
            suffix = _image_suffix(job.output, settings, info.files)
            if (suffix, deep, alpha) not in checked:
                checked.add((suffix, deep, alpha))
                check_image_options(suffix, settings, deep=deep, alpha=alpha)


def _image_suffix(output: str, settings: OutputSettings, source_files) -> str:
    """The image type a non-video output is written as (the choice ``media.writer.open_writer`` makes)."""
    suffix = Path(output).suffix.lower()
    if is_sequence_pattern(output) or suffix in IMAGE_SUFFIXES:
        return suffix
    if settings.is_image_codec():
        return IMAGE_CODECS[settings.codec]
    return Path(source_files[0]).suffix.lower() if source_files else ".png"
