"""Writers for videos, image sequences and single images, all written under a temporary name.

``open_writer(path, settings, width=..., height=..., source=reader)`` picks the writer from the
path: a video suffix (.mp4 .mkv .mov .webm), a printf pattern (``out/%06d.png``), a single image
(``out.png``), or a folder when ``settings.codec`` is an image codec. ``write(frames)`` takes
``[n, H, W, C]`` uint8/uint16 torch tensors or numpy arrays (RGB or RGBA, see
``seedvr_cli.media.pixels``) in frame order; ``close()`` finishes the file and renames it into
place; ``abort()`` deletes what was written. Used as a context manager, an exception aborts.

With a ``source`` reader, a video keeps the source's frame rate, per-frame timestamps (VFR stays
VFR), colour tags, display rotation and sample aspect ratio, and gets its audio and subtitle
streams (see ``passthrough``), so the output lasts exactly as long as the input.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path

import numpy as np

from seedvr_cli.arrays import as_numpy
from seedvr_cli.errors import MediaError, UsageError, UserError
from seedvr_cli.media.images import IMAGE_SUFFIXES, encode_image, is_sequence_pattern, sequence_numbers
from seedvr_cli.media.pixels import ColorTags, array_to_frame, pixel_format_facts, reformat, sws_matrix
from seedvr_cli.media.settings import DEFAULT_SEQUENCE_PATTERN, IMAGE_CODECS, OutputSettings, required_multiple
from seedvr_cli.system import process_alive

_X265_MIN_SIDE = 64


def temporary_sibling(path: Path, *, keep_suffix: bool = True) -> Path:
    """A hidden name in the same folder, so the final rename never crosses file systems.

    The name carries the writing process's id; partial files of the same output left by a process
    that no longer exists (a killed run that is now being resumed) are removed here.
    """
    suffix = path.suffix if keep_suffix else ""
    _remove_orphaned_partials(path, suffix)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.stem}.partial-{tag}{suffix}")


def _remove_orphaned_partials(path: Path, suffix: str) -> None:
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.partial-(\d+)-[0-9a-f]{{8}}{re.escape(suffix)}$")
    if not path.parent.is_dir():
        return
    for candidate in path.parent.iterdir():
        match = pattern.match(candidate.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)


def refuse_existing(path: Path, settings: OutputSettings) -> None:
    if path.exists() and not settings.overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it or --skip-existing to skip it")


def _as_numpy(frames) -> np.ndarray:
    frames = as_numpy(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[3] not in (3, 4):
        raise ValueError(f"frames must be [n, H, W, 3|4], got shape {tuple(frames.shape)}")
    if frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be uint8 or uint16, got {frames.dtype}")
    return frames


class FrameWriter(ABC):
    path: Path
    notes: list[str]
    frames_written: int = 0

    @abstractmethod
    def write(self, frames) -> None: ...

    @abstractmethod
    def close(self) -> Path:
        """Finish the output and move it to ``path``; returns ``path``."""

    @abstractmethod
    def abort(self) -> None:
        """Stop and delete everything written so far; ``path`` is left untouched."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(FrameWriter):
    """Encodes frames into a video container with PyAV. Build it with ``open_writer``."""

    def __init__(
        self,
        path: Path,
        settings: OutputSettings,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        pts: np.ndarray | None = None,
        end_pts: int | None = None,
        color: ColorTags | None = None,
        source_height: int | None = None,
        rotation: int = 0,
        sample_aspect_ratio: Fraction | None = None,
        deep: bool = False,
        alpha: bool = False,
        source_path: Path | None = None,
    ) -> None:
        import av

        self.path = path
        self.notes = []
        self.frames_written = 0
        self.encoding = settings.encoding_for(path, deep=deep, alpha=alpha)
        multiple_w, multiple_h = required_multiple(self.encoding.pix_fmt)
        if width % multiple_w or height % multiple_h:
            raise MediaError(
                f"{path}: {width}x{height} cannot be stored as {self.encoding.pix_fmt}, which needs an even width "
                "and height; choose an even output size or --pix-fmt yuv444p"
            )
        if self.encoding.encoder == "libx265" and min(width, height) < _X265_MIN_SIDE:
            # libx265 corrupts its heap on some frames this small (seen with 40x40, 48x32, 34x22).
            raise MediaError(
                f"{path}: {width}x{height} is too small for libx265 (needs at least {_X265_MIN_SIDE}x{_X265_MIN_SIDE}); "
                "use --codec h264 for tiny outputs"
            )
        refuse_existing(path, settings)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self._pts = None if pts is None else np.asarray(pts, dtype=np.int64)
        self._end_pts = end_pts
        self._nominal = max(1, round(1 / (self.fps * self.time_base)))
        self._durations: dict[int, int] = {}
        self._rgb = pixel_format_facts(self.encoding.pix_fmt).is_rgb
        # Unspecified source tags are resolved the way the reader decoded them, then written down.
        # Frames from RGB sources (images) carry sRGB colours, whose primaries are BT.709's.
        if color is None or color.matrix == 0:
            tags = ColorTags(primaries=1, transfer=1, matrix=1, range=1)
        else:
            tags = color.resolved(source_height or height)
        self._tags = tags
        self._matrix = sws_matrix(tags, source_height or height)

        if self.encoding.encoder == "libsvtav1":
            # SVT-AV1 prints its whole configuration to stderr unless told to log errors only.
            os.environ.setdefault("SVT_LOG", "1")
        self._temp = temporary_sibling(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._temp), "w", format=self.encoding.container)
        try:
            stream = self._container.add_stream(self.encoding.encoder, rate=self.fps.limit_denominator(1_000_000))
            ctx = stream.codec_context
            ctx.width, ctx.height = width, height
            ctx.pix_fmt = self.encoding.pix_fmt
            ctx.time_base = self.time_base
            stream.time_base = self.time_base
            if not self._rgb:
                ctx.color_primaries, ctx.color_trc = tags.primaries, tags.transfer
                ctx.colorspace, ctx.color_range = tags.matrix, tags.range
            if sample_aspect_ratio and sample_aspect_ratio != 1:
                ctx.sample_aspect_ratio = sample_aspect_ratio
            ctx.options = dict(self.encoding.options)
            stream.thread_type = "AUTO"
            if rotation:
                stream.set_display_rotation(rotation)
            self._stream = stream
            self._passthrough = None
            if source_path is not None and (settings.keep_audio or settings.keep_subtitles):
                from seedvr_cli.media.passthrough import Passthrough

                self._passthrough = Passthrough(source_path, self._container, settings.keep_audio, settings.keep_subtitles)
                self.notes.extend(self._passthrough.notes)
        except Exception:
            self.abort()
            raise
        self._width, self._height = width, height
        self._closed = False

    def _timestamp(self, number: int) -> tuple[int, int]:
        """pts and duration of output frame ``number``: the source's, or continued at the nominal rate."""
        if self._pts is not None and number < len(self._pts):
            pts = int(self._pts[number])
            if number + 1 < len(self._pts):
                return pts, int(self._pts[number + 1]) - pts
            end = self._end_pts if self._end_pts is not None else pts + self._nominal
            return pts, max(1, end - pts)
        if self._pts is not None and len(self._pts):
            last_end = self._end_pts if self._end_pts is not None else int(self._pts[-1]) + self._nominal
            return last_end + (number - len(self._pts)) * self._nominal, self._nominal
        return number * self._nominal, self._nominal

    def write(self, frames) -> None:
        import av

        array = _as_numpy(frames)
        if array.shape[1:3] != (self._height, self._width):
            raise ValueError(f"{self.path}: frames are {array.shape[2]}x{array.shape[1]}, the writer was opened for {self._width}x{self._height}")
        try:
            for image in array:
                frame = array_to_frame(image)
                if self._rgb:
                    frame = reformat(frame, format=self.encoding.pix_fmt)
                else:
                    frame = reformat(
                        frame,
                        format=self.encoding.pix_fmt, src_colorspace=self._matrix, dst_colorspace=self._matrix,
                        src_color_range="JPEG", dst_color_range="JPEG" if self._tags.range == 2 else "MPEG",
                    )
                    frame.color_range = self._tags.range
                    frame.colorspace = self._tags.matrix
                    frame.color_primaries = self._tags.primaries
                    frame.color_trc = self._tags.transfer
                pts, duration = self._timestamp(self.frames_written)
                frame.pts, frame.time_base = pts, self.time_base
                frame.duration = duration
                self._durations[pts] = duration
                self.frames_written += 1
                self._mux(self._stream.encode(frame))
        except av.error.FFmpegError as err:
            self.abort()
            if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                # The settings are fine; the disk is not (the caller says which and how much is needed).
                raise MediaError(f"{self.path}: writing failed ({err})") from None
            raise MediaError(f"{self.path}: encoding failed ({err}); check --codec, --pix-fmt and -e options") from None

    def _mux(self, packets) -> None:
        latest = None
        for packet in packets:
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            # Read the time before muxing: mux() rescales the packet to the stream's time base
            # (1/1000 in Matroska), and a time read afterwards in ours kept the audio back until
            # close, so the muxer held every video packet in memory.
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None:
                latest = float(stamp * self.time_base)
            self._container.mux(packet)
        if latest is not None and self._passthrough is not None:
            self._passthrough.pump(latest)

    def close(self) -> Path:
        import av

        if self._closed:
            return self.path
        try:
            self._mux(self._stream.encode(None))
            if self._passthrough is not None:
                self._passthrough.pump(None)
                self._passthrough.close()
            self._container.close()
        except av.error.FFmpegError as err:
            self.abort()
            raise MediaError(f"{self.path}: finishing the file failed ({err})") from None
        self._closed = True
        if self.frames_written == 0:
            self._temp.unlink(missing_ok=True)
            raise MediaError(f"{self.path}: no frames were written, so no file was made")
        os.replace(self._temp, self.path)
        return self.path

    def abort(self) -> None:
        self._closed = True
        try:
            if getattr(self, "_passthrough", None) is not None:
                self._passthrough.close()
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            pass
        self._temp.unlink(missing_ok=True)


class ImageSequenceWriter(FrameWriter):
    """One image file per frame, written into a hidden sibling folder and moved into place on close."""

    def __init__(self, folder: Path, names: list[str] | None, pattern: str, settings: OutputSettings, *, start_number: int = 1) -> None:
        self.path = folder
        self.notes = []
        self.frames_written = 0
        self._names = names
        self._pattern = pattern
        self._start = start_number
        self._overwrite = settings.overwrite
        self._options = dict(settings.encoder_options)
        self._suffix = Path(pattern if names is None else names[0]).suffix
        self._temp = temporary_sibling(folder, keep_suffix=False)
        self._temp.mkdir(parents=True)
        self._written: list[str] = []

    def name_of(self, number: int) -> str:
        if self._names is not None and number < len(self._names):
            return self._names[number]
        return self._pattern % (self._start + number)

    def write(self, frames) -> None:
        for image in _as_numpy(frames):
            name = self.name_of(self.frames_written)
            final = self.path / name
            if final.exists() and not self._overwrite:
                self.abort()
                raise UserError(f"{final}: already exists; pass --overwrite to replace it or --skip-existing to skip it")
            (self._temp / name).write_bytes(encode_image(image, self._suffix, options=self._options))
            self._written.append(name)
            self.frames_written += 1

    def close(self) -> Path:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temp, self.path)
            return self.path
        # The folder exists already (made by the user or an earlier run): move file by file.
        for name in self._written:
            os.replace(self._temp / name, self.path / name)
        shutil.rmtree(self._temp, ignore_errors=True)
        if self._overwrite and self._names is None:
            self._remove_stale_frames()
        return self.path

    def _remove_stale_frames(self) -> None:
        """With --overwrite, frames of an earlier, longer run under the same pattern would trail the
        new ones and read as part of the sequence: remove exactly those (nothing else is touched)."""
        from seedvr_cli.media.images import printf_regex

        regex = printf_regex(self._pattern)
        written = set(self._written)
        for candidate in self.path.iterdir():
            if candidate.is_file() and candidate.name not in written and regex.fullmatch(candidate.name):
                candidate.unlink()

    def abort(self) -> None:
        shutil.rmtree(self._temp, ignore_errors=True)


class ImageWriter(FrameWriter):
    """A single image file; accepts exactly one frame."""

    def __init__(self, path: Path, settings: OutputSettings) -> None:
        refuse_existing(path, settings)
        self.path = path
        self.notes = []
        self.frames_written = 0
        self._options = dict(settings.encoder_options)
        self._temp = temporary_sibling(path)

    def write(self, frames) -> None:
        array = _as_numpy(frames)
        if self.frames_written + len(array) > 1:
            self.abort()
            raise UsageError(
                f"{self.path}: a single image holds one frame; for a video give -o a pattern like "
                f"out/%06d{self.path.suffix} or a video file"
            )
        if len(array):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._temp.write_bytes(encode_image(array[0], self.path.suffix, options=self._options))
            self.frames_written = 1

    def close(self) -> Path:
        if not self.frames_written:
            raise MediaError(f"{self.path}: no frame was written, so no image was made")
        os.replace(self._temp, self.path)
        return self.path

    def abort(self) -> None:
        self._temp.unlink(missing_ok=True)


def _numbered_names(pattern: str, source) -> list[str] | None:
    """A numbered image sequence written to a pattern keeps its frame numbers (a gap stays a gap, so
    out/0006.png is the upscale of in/0006.png); None numbers from 1."""
    files = getattr(source, "files", None) if source is not None else None
    numbers = sequence_numbers(files) if files else None
    return [pattern % number for number in numbers] if numbers else None


def open_writer(
    path: str | Path,
    settings: OutputSettings | None = None,
    *,
    width: int,
    height: int,
    source=None,
    fps: Fraction | float | None = None,
    deep: bool | None = None,
    alpha: bool | None = None,
) -> FrameWriter:
    """A writer for ``path`` (see the module doc). ``source`` is the input's ``FrameReader``.

    ``deep``/``alpha`` default to the source's (16-bit frames, an alpha channel) and choose the
    encoder's pixel format; ``fps`` is used when there is no source (default 25).
    """
    settings = settings or OutputSettings()
    path_text = str(path)
    path = Path(path)
    deep = bool(source is not None and source.deep) if deep is None else deep
    alpha = bool(source is not None and source.has_alpha) if alpha is None else alpha
    if is_sequence_pattern(path_text):
        return ImageSequenceWriter(path.parent, _numbered_names(path.name, source), path.name, settings)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageWriter(path, settings)
    if settings.is_image_codec():
        suffix = IMAGE_CODECS[settings.codec]
        names = None
        if source is not None and getattr(source, "files", None):
            names = [Path(f).stem + suffix for f in source.files]
        return ImageSequenceWriter(path, names, DEFAULT_SEQUENCE_PATTERN + suffix, settings)
    source_files = list(getattr(source, "files", None) or []) if source is not None else []
    if not path.suffix and source_files:
        # A folder for a sequence read from a folder: the same file names and image type.
        suffix = Path(source_files[0]).suffix.lower()
        return ImageSequenceWriter(path, [Path(f).name for f in source_files], DEFAULT_SEQUENCE_PATTERN + suffix,
                                   settings)
    if source is not None and source.info.kind == "video":
        info = source.info
        return VideoWriter(
            path, settings, width=width, height=height, fps=info.fps, time_base=source.time_base,
            pts=source.pts, end_pts=source.index.end_pts, color=info.color, source_height=info.height,
            rotation=info.rotation, sample_aspect_ratio=info.sample_aspect_ratio, deep=deep, alpha=alpha,
            source_path=info.path,
        )
    rate = Fraction(source.fps if source is not None else (fps or 25)).limit_denominator(1_000_000)
    return VideoWriter(path, settings, width=width, height=height, fps=rate, deep=deep, alpha=alpha)
