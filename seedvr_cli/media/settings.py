"""``OutputSettings``: how outputs are encoded and named, as the ``seedvr upscale`` flags fill it.

``OutputSettings.encoding_for(path, deep=..., alpha=...)`` turns the settings plus an output path
and the source's depth/alpha into a concrete ``Encoding`` (container, encoder, pixel format,
options), refusing impossible combinations with one line that says what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seedvr_cli.errors import UsageError

# Output file suffix -> FFmpeg muxer.
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
IMAGE_OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".webp", ".bmp", ".dpx")


@dataclass(frozen=True)
class VideoCodec:
    """One user-facing codec name and what it means for the encoder."""

    encoder: str
    family: str  # FFmpeg codec name the muxer knows (what ``supported_codecs`` lists)
    pix_fmt_8bit: str
    pix_fmt_deep: str
    pix_fmt_alpha: str | None = None  # None: the codec cannot store alpha
    pix_fmt_deep_alpha: str | None = None
    crf: int | None = None
    preset: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    alpha_options: tuple[tuple[str, str], ...] = ()


VIDEO_CODECS: dict[str, VideoCodec] = {
    "h264": VideoCodec("libx264", "h264", "yuv420p", "yuv420p10le", crf=16, preset="medium"),
    "h265": VideoCodec("libx265", "hevc", "yuv420p", "yuv420p10le", crf=18, preset="medium",
                       options=(("x265-params", "log-level=error"),)),
    "av1": VideoCodec("libsvtav1", "av1", "yuv420p", "yuv420p10le", crf=24, preset="6"),
    # ProRes is always 10-bit; 422 HQ for plain video, 4444 when alpha must survive.
    "prores": VideoCodec("prores_ks", "prores", "yuv422p10le", "yuv422p10le", options=(("profile", "3"),)),
    "prores4444": VideoCodec("prores_ks", "prores", "yuv444p10le", "yuv444p10le", "yuva444p10le", "yuva444p10le",
                             options=(("profile", "4"),), alpha_options=(("alpha_bits", "16"),)),
    # FFV1 stores RGB losslessly, so it gets the frames exactly as the pipeline made them.
    "ffv1": VideoCodec("ffv1", "ffv1", "bgr0", "gbrp16le", "bgra", "gbrap16le", options=(("level", "3"),)),
}
CODEC_ALIASES = {"x264": "h264", "avc": "h264", "libx264": "h264", "x265": "h265", "hevc": "h265",
                 "libx265": "h265", "svtav1": "av1", "prores_ks": "prores", "prores422": "prores",
                 "prores_4444": "prores4444"}
IMAGE_CODECS = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp", "dpx": ".dpx"}
# Where a video goes when the user asks for an image codec without naming a file pattern.
DEFAULT_SEQUENCE_PATTERN = "%06d"


@dataclass(frozen=True)
class Encoding:
    """A concrete encoder setup for one output file."""

    container: str
    codec: str
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    keeps_alpha: bool


@dataclass
class OutputSettings:
    """Output flags of ``seedvr upscale``; ``None`` means "the default for this output and source".

    Defaults: H.264 CRF 16, preset medium, yuv420p in .mp4/.mkv; 10-bit sources (or ``ten_bit``)
    get H.265 yuv420p10le; sources with alpha in .mov get ProRes 4444 and in .mkv FFV1, which keep
    it. ``encoder_options`` are passed to the encoder as ``-e key=value`` pairs, overriding ours.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    encoder_options: dict[str, str] = field(default_factory=dict)
    ten_bit: bool | None = None  # None: follow the source (deeper than 8 bits -> 10-bit output)
    keep_audio: bool = True
    keep_subtitles: bool = True
    overwrite: bool = False
    skip_existing: bool = False
    suffix: str = "_upscaled"

    def __post_init__(self) -> None:
        if self.codec is not None:
            name = self.codec.lower()
            name = CODEC_ALIASES.get(name, name)
            if name not in VIDEO_CODECS and name not in IMAGE_CODECS:
                known = ", ".join([*VIDEO_CODECS, *IMAGE_CODECS])
                raise UsageError(f"--codec {self.codec}: unknown codec; choose one of {known}")
            self.codec = name
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UsageError(f"--crf {self.crf}: out of range; use 0 (lossless) to 51 for h264/h265, up to 63 for av1")
        if self.overwrite and self.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other; pass only one")
        if "/" in self.suffix or "\\" in self.suffix:
            raise UsageError(f"--suffix {self.suffix!r}: must not contain a path separator; use -o DIR to choose a folder")
        if self.pix_fmt is not None:
            _check_pix_fmt(self.pix_fmt)

    @staticmethod
    def parse_encoder_options(pairs: list[str]) -> dict[str, str]:
        """``["key=value", ...]`` from repeated ``-e`` flags into a dict."""
        options: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"-e {pair!r}: expected KEY=VALUE, e.g. -e tune=film or -e x265-params=aq-mode=3")
            options[key.strip()] = value.strip()
        return options

    def is_image_codec(self) -> bool:
        return self.codec in IMAGE_CODECS

    def encoding_for(self, path: str | Path, *, deep: bool, alpha: bool) -> Encoding:
        """The encoder setup for a video written to ``path`` from frames of this depth and alpha."""
        path = Path(path)
        suffix = path.suffix.lower()
        container = VIDEO_CONTAINERS.get(suffix)
        if container is None:
            raise UsageError(
                f"{path}: unknown video type {suffix or '(none)'!r}; use .mp4, .mkv, .mov or .webm, "
                "or an image pattern such as out/%06d.png"
            )
        if self.codec in IMAGE_CODECS:
            raise UsageError(f"--codec {self.codec} writes images; give -o a folder or a pattern like out/%06d{IMAGE_CODECS[self.codec]}")
        ten_bit = deep if self.ten_bit is None else self.ten_bit
        name = self.codec or _default_codec(container, ten_bit=ten_bit, alpha=alpha)
        if self.codec is None and self.pix_fmt and "10" in self.pix_fmt and name == "h264":
            name = "h265"
        codec = VIDEO_CODECS[name]
        if name == "prores" and alpha:
            codec, name = VIDEO_CODECS["prores4444"], "prores4444"
        _check_container(path, container, codec, name)
        keeps_alpha = alpha and codec.pix_fmt_alpha is not None
        if self.pix_fmt:
            pix_fmt = self.pix_fmt
            keeps_alpha = alpha and _pix_fmt_has_alpha(pix_fmt)
        elif keeps_alpha:
            pix_fmt = codec.pix_fmt_deep_alpha if ten_bit or deep else codec.pix_fmt_alpha
        else:
            pix_fmt = codec.pix_fmt_deep if ten_bit else codec.pix_fmt_8bit
        _check_encoder_pix_fmt(codec.encoder, pix_fmt)
        options = dict(codec.options)
        if keeps_alpha:
            options.update(codec.alpha_options)
        crf = self.crf if self.crf is not None else codec.crf
        if crf is not None and codec.crf is not None:
            options["crf"] = str(crf)
        elif self.crf is not None:
            raise UsageError(f"--crf applies to h264, h265 and av1, not {name}; leave it out or pick one of those codecs")
        preset = self.preset or codec.preset
        if preset is not None and codec.preset is not None:
            options["preset"] = preset
        elif self.preset is not None:
            raise UsageError(f"--preset applies to h264, h265 and av1, not {name}; leave it out or pick one of those codecs")
        for key, value in self.encoder_options.items():
            if key == "x265-params" and "log-level" not in value and key in options:
                value = f"{value}:{options[key]}"  # keep x265 quiet unless asked otherwise
            options[key] = value
        return Encoding(container, name, codec.encoder, pix_fmt, options, keeps_alpha)


def _default_codec(container: str, *, ten_bit: bool, alpha: bool) -> str:
    if alpha and container == "mov":
        return "prores4444"
    if alpha and container == "matroska":
        return "ffv1"
    if container == "webm":
        return "av1"
    return "h265" if ten_bit else "h264"


def _check_container(path: Path, container: str, codec: VideoCodec, name: str) -> None:
    import av

    with av.open(_null_sink(), "w", format=container) as probe_output:
        supported = probe_output.supported_codecs
    if codec.family in supported:
        return
    homes = [suffix for suffix, fmt in VIDEO_CONTAINERS.items() if _supports(fmt, codec.family)]
    raise UsageError(
        f"{path}: a {path.suffix} file cannot hold {name}; use {' or '.join(dict.fromkeys(homes))} for {name}, "
        f"or pick another --codec"
    )


def _supports(container: str, family: str) -> bool:
    import av

    with av.open(_null_sink(), "w", format=container) as probe_output:
        return family in probe_output.supported_codecs


def _null_sink():
    import io

    return io.BytesIO()


def _check_pix_fmt(pix_fmt: str) -> None:
    import av

    try:
        av.VideoFormat(pix_fmt)
    except (ValueError, av.error.FFmpegError):
        raise UsageError(f"--pix-fmt {pix_fmt}: unknown pixel format; e.g. yuv420p, yuv420p10le, yuv444p") from None


def _pix_fmt_has_alpha(pix_fmt: str) -> bool:
    from seedvr_cli.media.pixels import pixel_format_facts

    return pixel_format_facts(pix_fmt).has_alpha


def _check_encoder_pix_fmt(encoder: str, pix_fmt: str) -> None:
    import av

    formats = av.Codec(encoder, "w").video_formats or []
    names = [fmt.name for fmt in formats]
    if names and pix_fmt not in names:
        raise UsageError(f"--pix-fmt {pix_fmt}: {encoder} cannot encode it; it takes {', '.join(names[:12])}")


def required_multiple(pix_fmt: str) -> tuple[int, int]:
    """Width and height must be multiples of these for ``pix_fmt`` (2 for 4:2:0 chroma, else 1)."""
    import av

    fmt = av.VideoFormat(pix_fmt)
    return (2 if fmt.chroma_width(64) < 64 else 1, 2 if fmt.chroma_height(64) < 64 else 1)
