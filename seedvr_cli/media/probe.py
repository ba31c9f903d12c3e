"""``probe()``: what a video, image or image sequence holds, as one ``MediaInfo``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from seedvr_cli.errors import MediaError
from seedvr_cli.media.pixels import ColorTags, pixel_format_facts

# Demuxers whose sample tables give an exact frame list without reading the media data.
_INDEXED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
DEFAULT_SEQUENCE_FPS = Fraction(25)


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    channels: int
    layout: str
    sample_rate: int
    bit_rate: int | None
    language: str | None


@dataclass(frozen=True)
class SubtitleStreamInfo:
    index: int
    codec: str
    language: str | None
    title: str | None


@dataclass(frozen=True)
class MediaInfo:
    """Facts about one input.

    ``kind`` is ``"video"``, ``"image"`` or ``"sequence"``. ``frame_count_source`` says how the
    count was found: ``container`` (header count that agreed with the sample table), ``index``
    (the sample table, because the header count disagreed), ``packets`` (demuxed every packet),
    ``decoded`` (decoded every frame), ``files`` (one file per frame) or ``image``.
    ``rotation`` is the counter-clockwise display rotation in degrees that players apply; readers
    return the frames as stored and writers carry the rotation over.
    ``promised_frames`` is what the container's header announces (a frame count, or a duration
    that reaches past the last frame found), ``None`` when it announces nothing usable; more than
    ``frame_count`` means frames are missing: a cut-off or damaged file (``short``).
    """

    path: Path
    kind: str
    container: str
    codec: str
    width: int
    height: int
    frame_count: int
    frame_count_source: str
    fps: Fraction
    time_base: Fraction
    duration: float
    start_time: float
    vfr: bool | None
    sample_aspect_ratio: Fraction
    display_aspect_ratio: Fraction
    rotation: int
    pix_fmt: str
    bit_depth: int
    has_alpha: bool
    color: ColorTags
    video_stream: int | None = None
    audio: tuple[AudioStreamInfo, ...] = ()
    subtitles: tuple[SubtitleStreamInfo, ...] = ()
    files: tuple[Path, ...] = field(default=(), repr=False)
    promised_frames: int | None = None

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    @property
    def short(self) -> bool:
        """True when fewer frames can be read than the container announces."""
        return self.promised_frames is not None and self.promised_frames > self.frame_count

    def to_dict(self) -> dict:
        """JSON-ready facts; rationals become ``"num/den"`` strings so nothing is rounded."""
        data = asdict(self)
        data.pop("files")
        data["path"] = str(self.path)
        for key in ("fps", "time_base", "sample_aspect_ratio", "display_aspect_ratio"):
            value = getattr(self, key)
            data[key] = f"{value.numerator}/{value.denominator}"
        data["fps_float"] = round(float(self.fps), 6)
        data["color"] = self.color.names()
        if self.kind == "sequence":
            data["first_file"] = str(self.files[0]) if self.files else None
        return data


def probe(path: str | Path, *, sequence: bool = False, fps: Fraction | float | None = None) -> MediaInfo:
    """Probe a video file, a single image, or an image sequence.

    An image sequence is a directory with ``sequence=True`` or a printf pattern such as
    ``frames/%06d.png``; its frame rate is ``fps`` (25 when not given). Raises ``MediaError`` with
    one line naming the file when it cannot be read.
    """
    from seedvr_cli.media import images

    target = Path(path)
    if images.is_sequence_pattern(str(path)) or (sequence and target.is_dir()):
        return _probe_sequence(str(path), fps)
    if target.is_dir():
        raise MediaError(f"{target}: is a directory; pass --sequence to read its images as one image sequence")
    if not target.exists():
        raise MediaError(f"{target}: no such file; check the path")
    if not target.is_file():
        # Opening a pipe would wait for a writer forever, and a device never ends.
        raise MediaError(f"{target}: not a regular file (a pipe, a device or a socket); save the stream to a file "
                         "and pass that")
    if images.is_image_path(target):
        return images.probe_image(target)
    return _probe_video(target)


def _probe_sequence(path_or_pattern: str, fps: Fraction | float | None) -> MediaInfo:
    from seedvr_cli.media import images

    files = images.resolve_sequence(path_or_pattern)
    first = images.probe_image(files[0])
    rate = Fraction(fps).limit_denominator(1_000_000) if fps else DEFAULT_SEQUENCE_FPS
    return MediaInfo(
        path=Path(path_or_pattern), kind="sequence", container="image sequence", codec=first.codec,
        width=first.width, height=first.height, frame_count=len(files), frame_count_source="files",
        fps=rate, time_base=1 / rate, duration=float(len(files) / rate), start_time=0.0, vfr=False,
        sample_aspect_ratio=first.sample_aspect_ratio, display_aspect_ratio=first.display_aspect_ratio,
        rotation=first.rotation, pix_fmt=first.pix_fmt, bit_depth=first.bit_depth,
        has_alpha=first.has_alpha, color=first.color, files=tuple(files),
    )


def open_container(path: Path):
    import av

    try:
        return av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError(
            f"{path}: cannot be read as a video or image ({_reason(err)}); check that the file is complete "
            "and in a format FFmpeg knows"
        ) from None


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


def _probe_video(path: Path) -> MediaInfo:
    try:
        return _probe_video_streams(path)
    except MediaError:
        # A file cut off before its end (a copy or download that stopped) reads as anything from
        # "no video stream" to "no decoder": say what really happened where the container shows it.
        cut = _cut_off_box(path)
        if cut is None:
            raise
        raise MediaError(f"{path}: the file is cut off ({cut}); it is damaged or incomplete: copy or download it "
                         "again") from None


# Top-level box types an MP4 / MOV file may start with (ISO base media file format, QuickTime).
_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


def _cut_off_box(path: Path) -> str | None:
    """For an MP4 / MOV file: which top-level box runs past the end of the file, or None when all
    are whole (or the file is not made of such boxes). Reads only the box headers."""
    size = path.stat().st_size
    offset = 0
    with path.open("rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(16)
            kind = header[4:8]
            if offset == 0 and kind not in _FIRST_BOXES:
                return None
            if len(header) < 8:
                return "it ends inside a box header"
            if not kind.isascii() or not kind.decode("ascii").isprintable():
                return None
            length = int.from_bytes(header[:4], "big")
            if length == 1:  # a 64-bit size follows the type
                if len(header) < 16:
                    return "it ends inside a box header"
                length = int.from_bytes(header[8:16], "big")
            if length == 0:  # the last box, up to the end of the file by definition
                return None
            if length < 8:
                return None
            if offset + length > size:
                return f"its {kind.decode('ascii')} box lacks {offset + length - size} bytes"
            offset += length
    return None


def _probe_video_streams(path: Path) -> MediaInfo:
    import av

    container = open_container(path)
    try:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream; give a video or an image file")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError) as err:
            reason = "no frame could be decoded" if isinstance(err, StopIteration) else _reason(err)
            raise MediaError(f"{path}: the video stream cannot be decoded ({reason}); the file may be damaged") from None
        pix_fmt = first.format.name
        facts = pixel_format_facts(pix_fmt)
        count, source, frame_index = _count_frames(path, container, stream)
        time_base = Fraction(stream.time_base)
        rate = _frame_rate(stream, frame_index)
        if frame_index is not None and len(frame_index):
            duration = frame_index.duration_seconds
            start = float(int(frame_index.pts[0]) * time_base)
        else:
            duration = float(stream.duration * time_base) if stream.duration else (container.duration or 0) / 1e6
            start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        sar = Fraction(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else Fraction(1)
        width, height = first.width, first.height
        dar = Fraction(width, height) * sar
        return MediaInfo(
            path=path, kind="video", container=container.format.name, codec=ctx.codec.canonical_name,
            width=width, height=height, frame_count=count, frame_count_source=source,
            fps=rate, time_base=time_base, duration=duration, start_time=start,
            vfr=frame_index.is_vfr if frame_index is not None else _index_entries_vfr(stream),
            sample_aspect_ratio=sar, display_aspect_ratio=dar, rotation=int(round(first.rotation or 0)),
            pix_fmt=pix_fmt, bit_depth=facts.bit_depth, has_alpha=facts.has_alpha,
            color=ColorTags(first.color_primaries, first.color_trc, first.colorspace, first.color_range),
            video_stream=stream.index,
            audio=tuple(_audio_info(s) for s in container.streams.audio),
            subtitles=tuple(_subtitle_info(s) for s in container.streams.subtitles),
            promised_frames=_promised_frames(container, stream, frame_index),
        )
    finally:
        container.close()


def _count_frames(path: Path, container, stream):
    """Frame count, how it was found, and the frame index when one was built on the way."""
    from seedvr_cli.media.frameindex import scan_frame_index

    header_count = stream.frames or 0
    if any(name in _INDEXED_FORMATS for name in container.format.name.split(",")):
        entries = stream.index_entries
        kept = sum(1 for entry in entries if not entry.is_discard)
        if kept:
            if kept == header_count:
                return kept, "container", None
            return kept, "index", None
    # A fresh demuxer: the caller's one has already read ahead to decode the first frame.
    scan = open_container(path)
    try:
        index = scan_frame_index(scan, scan.streams.video[0])
    finally:
        scan.close()
    if index is not None:
        return len(index), "packets", index
    return _decode_count(path), "decoded", None


def _promised_frames(container, stream, frame_index) -> int | None:
    """The frame count the container's header announces, to compare with the frames found.

    A header frame count (AVI, MP4) is taken as it is. Matroska/WebM announce a duration instead:
    the time it reaches past the last frame found, at the clip's median frame step, is the frames
    missing at the end. Holes inside the clip are not counted: a variable-rate recording with
    dropped frames has them too, and is not damaged.
    """
    import numpy as np

    if stream.frames:
        return int(stream.frames)
    seconds = _header_seconds(container, stream)
    if seconds is None or frame_index is None or len(frame_index) < 2:
        return None
    # Measured from time 0, not from the first frame: a late first frame never reads as missing ones.
    missing = seconds - float(frame_index.end_pts * frame_index.time_base)
    step = float(np.median(np.diff(frame_index.pts)) * frame_index.time_base)
    return len(frame_index) + max(0, round(missing / step))


def _header_seconds(container, stream) -> float | None:
    """The video stream's duration as the header states it (not measured from the packets)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska's per-track duration, "HH:MM:SS.nnnnnnnnn"
    if tag:
        try:
            hours, minutes, secs = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(secs)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        # The container's duration is the longest stream's: only the video's when it is alone.
        return container.duration / 1e6
    return None


def _index_entries_vfr(stream) -> bool | None:
    """Variable rate from a sample table's decode times (the same steps as presentation times)."""
    import numpy as np

    from seedvr_cli.media.frameindex import steps_vary

    stamps = np.array([e.timestamp for e in stream.index_entries if not e.is_discard], dtype=np.int64)
    if stamps.size < 3:
        return None if stamps.size == 0 else False
    return steps_vary(np.diff(np.sort(stamps)), Fraction(stream.time_base))


def _decode_count(path: Path) -> int:
    import av

    container = open_container(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: decoding failed while counting frames ({_reason(err)}); the file may be damaged") from None
    finally:
        container.close()


def _frame_rate(stream, frame_index) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if frame_index is not None and frame_index.average_rate():
        return frame_index.average_rate().limit_denominator(1001 * 1000)
    return DEFAULT_SEQUENCE_FPS


def _audio_info(stream) -> AudioStreamInfo:
    ctx = stream.codec_context
    layout = ctx.layout.name if ctx.layout is not None else ""
    return AudioStreamInfo(
        index=stream.index, codec=ctx.codec.canonical_name, channels=ctx.channels, layout=layout,
        sample_rate=ctx.sample_rate, bit_rate=ctx.bit_rate or None, language=stream.language,
    )


def _subtitle_info(stream) -> SubtitleStreamInfo:
    return SubtitleStreamInfo(
        index=stream.index, codec=stream.codec_context.codec.canonical_name, language=stream.language,
        title=stream.metadata.get("title"),
    )
