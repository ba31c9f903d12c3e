"""Single images and image sequences: finding the files, reading and writing them with PyAV."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from seedvr_cli.errors import MediaError
from seedvr_cli.media.frameindex import constant_rate_index
from seedvr_cli.media.pixels import ColorTags, frame_to_array, pixel_format_facts, reformat
from seedvr_cli.media.probe import MediaInfo, open_container
from seedvr_cli.media.reader import FrameReader

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".dpx", ".exr"})
_PRINTF = re.compile(r"%(0?)(\d*)d")
# A file name whose last run of digits is its frame number: prefix, number, suffix.
_NUMBERED = re.compile(r"\A(.*?)(\d+)(\D*)\Z")


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def printf_regex(pattern: str) -> re.Pattern:
    """The file names a printf frame pattern produces (``%06d.png`` -> six or more digits + ``.png``)."""
    return re.compile(_PRINTF.sub(lambda m: r"\d{%d,}" % int(m.group(2) or 1), re.escape(pattern)))


def is_sequence_pattern(text: str) -> bool:
    """True for a printf-style frame pattern such as ``frames/%06d.png``."""
    return bool(_PRINTF.search(Path(text).name))


def natural_key(path: Path) -> tuple:
    """Sort key that puts ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name))


def resolve_sequence(path_or_pattern: str | Path) -> list[Path]:
    """The files of an image sequence in frame order: a directory's images or a printf pattern's matches."""
    text = str(path_or_pattern)
    if is_sequence_pattern(text):
        pattern = Path(text)
        folder = pattern.parent
        if not folder.is_dir():
            raise MediaError(f"{text}: folder {folder} does not exist; check the sequence pattern")
        match = _PRINTF.search(pattern.name)
        assert match is not None
        pad, width = match.group(1), match.group(2)
        digits = rf"\d{{{int(width)}}}" if pad and width else r"\d+"
        regex = re.compile(re.escape(pattern.name[: match.start()]) + f"({digits})" + re.escape(pattern.name[match.end():]) + r"\Z")
        numbered = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_file() and (m := regex.match(p.name))]
        files = [p for _, p in sorted(numbered)]
        if not files:
            raise MediaError(f"{text}: no file matches this sequence pattern; check the folder and the number of digits")
        return files
    folder = Path(text)
    if not folder.is_dir():
        raise MediaError(f"{text}: is not a folder; an image sequence is a folder or a pattern like frames/%06d.png")
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_path(p)), key=natural_key)
    if not files:
        raise MediaError(f"{text}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the folder")
    return files


def sequence_numbers(files) -> list[int] | None:
    """The frame number of each file when all names share one template (``shot_0001.png``), else None."""
    matches = [_NUMBERED.match(Path(f).name) for f in files]
    if not matches or any(m is None for m in matches):
        return None
    if len({(m.group(1), m.group(3)) for m in matches}) != 1:
        return None
    return [int(m.group(2)) for m in matches]


def missing_numbers(numbers: list[int]) -> list[int]:
    """Numbers between the first and the last that no file has (gaps in a sequence)."""
    present = set(numbers)
    return [n for n in range(min(numbers), max(numbers) + 1) if n not in present]


def _decode_image(path: Path):
    import av

    container = open_container(path)
    try:
        if not container.streams.video:
            raise MediaError(f"{path}: holds no picture; give a PNG, JPEG, WebP, TIFF or BMP image")
        try:
            return next(container.decode(video=0)), container.format.name, container.streams.video[0].codec_context.codec.canonical_name
        except (StopIteration, av.error.FFmpegError) as err:
            raise MediaError(f"{path}: the image cannot be decoded ({err or 'empty'}); the file may be damaged") from None
    finally:
        container.close()


def _palette_has_alpha(frame) -> bool:
    rgba = reformat(frame, format="rgba").to_ndarray()
    return bool((rgba[..., 3] < 255).any())


def probe_image(path: Path) -> MediaInfo:
    frame, container_name, codec = _decode_image(path)
    facts = pixel_format_facts(frame.format.name)
    has_alpha = _palette_has_alpha(frame) if frame.format.has_palette else facts.has_alpha
    rotation = int(round(frame.rotation or 0))
    width, height = (frame.height, frame.width) if rotation % 180 else (frame.width, frame.height)
    return MediaInfo(
        path=path, kind="image", container=container_name, codec=codec, width=width, height=height,
        frame_count=1, frame_count_source="image", fps=Fraction(25), time_base=Fraction(1, 25),
        duration=0.0, start_time=0.0, vfr=False, sample_aspect_ratio=Fraction(1),
        display_aspect_ratio=Fraction(width, height), rotation=rotation, pix_fmt=frame.format.name,
        bit_depth=facts.bit_depth, has_alpha=has_alpha,
        color=ColorTags(frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range),
    )


def read_image(path: Path, *, deep: bool, alpha: bool) -> np.ndarray:
    """One image as ``[H, W, 3|4]``; an orientation tag (EXIF) is applied, since images have no other way to keep it."""
    frame, _, _ = _decode_image(path)
    array = frame_to_array(frame, deep=deep, alpha=alpha)
    rotation = int(round(frame.rotation or 0)) % 360
    if rotation:
        array = np.ascontiguousarray(np.rot90(array, k=rotation // 90))
    return array


class ImageReader(FrameReader):
    """A single image as a one-frame clip. ``width``/``height`` are after its orientation tag."""

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        self.index = constant_rate_index(1, info.fps)

    @property
    def rotation(self) -> int:
        return 0  # already applied to the pixels

    def _fill(self, start: int, stop: int, out: np.ndarray) -> None:
        out[0] = read_image(self.info.path, deep=self.deep, alpha=self.has_alpha)


class ImageSequenceReader(FrameReader):
    """Numbered images as frames of a constant-rate clip; every image must have the first one's size."""

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        self.files = list(info.files)
        self.index = constant_rate_index(len(self.files), info.fps)

    @property
    def rotation(self) -> int:
        return 0

    def _fill(self, start: int, stop: int, out: np.ndarray) -> None:
        for number in range(start, stop):
            path = self.files[number]
            array = read_image(path, deep=self.deep, alpha=self.has_alpha)
            if array.shape != out.shape[1:]:
                raise MediaError(
                    f"{path}: is {array.shape[1]}x{array.shape[0]} but the sequence starts at "
                    f"{self.width}x{self.height}; every image of a sequence needs the same size"
                )
            out[number - start] = array


# Encoder and packed pixel format for each image type, by (suffix, deep, alpha).
def image_encoding(suffix: str, *, deep: bool, alpha: bool) -> tuple[str, str]:
    suffix = suffix.lower()
    if suffix == ".png":
        return "png", ("rgba64be" if alpha else "rgb48be") if deep else ("rgba" if alpha else "rgb24")
    if suffix in (".tif", ".tiff"):
        return "tiff", ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
    if suffix in (".jpg", ".jpeg"):
        return "mjpeg", "yuvj444p"
    if suffix == ".webp":
        return "libwebp", "bgra"  # libwebp converts RGB to its YUV itself, with the right range
    if suffix == ".bmp":
        return "bmp", "bgra" if alpha else "bgr24"
    if suffix == ".dpx":
        return "dpx", ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
    raise MediaError(f"cannot write images of type {suffix!r}; use .png, .tif, .jpg, .webp, .bmp or .dpx")


def encode_image(array: np.ndarray, suffix: str, *, options: dict[str, str] | None = None) -> bytes:
    """Encode one ``[H, W, 3|4]`` uint8/uint16 frame into the bytes of an image file of type ``suffix``."""
    import av

    from seedvr_cli.media.pixels import array_to_frame

    deep = array.dtype == np.uint16
    alpha = array.shape[2] == 4
    codec_name, pix_fmt = image_encoding(suffix, deep=deep, alpha=alpha)
    if deep and codec_name in ("mjpeg", "libwebp", "bmp"):
        array = (array >> 8).astype(np.uint8)  # these formats hold 8 bits only
    frame = array_to_frame(array)
    ctx = av.CodecContext.create(codec_name, "w")
    ctx.width, ctx.height = array.shape[1], array.shape[0]
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    defaults: dict[str, str] = {}
    if codec_name == "mjpeg":
        ctx.color_range = 2
        # Fixed quantiser 2 of 31: near-transparent quality, as an upscaler's output should be.
        ctx.qscale = 2
    elif codec_name == "libwebp":
        defaults = {"quality": "95"}
    ctx.options = {**defaults, **(options or {})}
    kwargs = {"dst_color_range": "JPEG"} if pix_fmt.startswith("yuv") else {}
    packets = ctx.encode(reformat(frame, format=pix_fmt, **kwargs)) + ctx.encode(None)
    return b"".join(bytes(packet) for packet in packets)
