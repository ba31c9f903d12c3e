"""Facts about pixel formats and colour tags, and the frame <-> array conversions built on them.

Array convention used everywhere in ``seedvr_cli.media``: frames are ``[H, W, C]`` (batches
``[N, H, W, C]``), RGB or RGBA, ``uint8`` for sources of 8 bits or fewer per component and
``uint16`` for deeper ones. ``uint16`` values always span the full ``0..65535`` range whatever the
source depth (a 10-bit white of 1023 reads as 65535), so code never needs to know the depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# H.273 code points with FFmpeg's short names; a few values exist only in newer standards.
PRIMARIES = {
    1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
TRANSFERS = {
    1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
    8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
    13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428",
    18: "arib-std-b67",
}
MATRICES = {
    0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
    13: "chroma-derived-c", 14: "ictcp",
}
RANGES = {0: "unknown", 1: "tv", 2: "pc"}

UNSPECIFIED = 2
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2

# swscale only knows these YCbCr matrices; every other tag falls back to the nearest family.
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


@dataclass(frozen=True)
class ColorTags:
    """The four colour tags of a video stream, as H.273 code points (2 / 0 mean unspecified)."""

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    range: int = RANGE_UNSPECIFIED

    def names(self) -> dict[str, str]:
        return {
            "primaries": PRIMARIES.get(self.primaries, str(self.primaries)),
            "transfer": TRANSFERS.get(self.transfer, str(self.transfer)),
            "matrix": MATRICES.get(self.matrix, str(self.matrix)),
            "range": RANGES.get(self.range, str(self.range)),
        }

    def resolved(self, height: int) -> "ColorTags":
        """Tags with the unspecified ones replaced by what players assume for this frame height.

        SD material (below 720 lines) is taken as BT.601, HD as BT.709, limited range; writers
        tag their output with these so the guess made when reading is stated, not repeated.
        """
        hd = height >= 720
        return ColorTags(
            primaries=self.primaries if self.primaries != UNSPECIFIED else (1 if hd else 6),
            transfer=self.transfer if self.transfer != UNSPECIFIED else (1 if hd else 6),
            matrix=self.matrix if self.matrix != UNSPECIFIED else (1 if hd else 6),
            range=self.range if self.range != RANGE_UNSPECIFIED else RANGE_LIMITED,
        )


def sws_matrix(tags: ColorTags, height: int) -> str:
    return _SWS_MATRIX.get(tags.resolved(height).matrix, "ITU709" if height >= 720 else "ITU601")


@dataclass(frozen=True)
class PixelFormatFacts:
    name: str
    bit_depth: int
    has_alpha: bool
    is_rgb: bool
    is_gray: bool
    chroma_subsampled: bool


def pixel_format_facts(name: str) -> PixelFormatFacts:
    import av

    fmt = av.VideoFormat(name)
    components = fmt.components
    color_bits = [c.bits for c in components if not c.is_alpha]
    has_alpha = any(c.is_alpha for c in components)
    if fmt.has_palette:
        # A palette can carry alpha; we cannot tell without the palette, so assume it may.
        has_alpha, color_bits = True, [8]
    is_gray = name.startswith(("gray", "ya", "mono"))
    subsampled = fmt.chroma_width(64) < 64 or fmt.chroma_height(64) < 64
    return PixelFormatFacts(
        name=name,
        bit_depth=max(color_bits) if color_bits else 8,
        has_alpha=has_alpha,
        is_rgb=bool(fmt.is_rgb),
        is_gray=is_gray,
        chroma_subsampled=bool(subsampled) and not fmt.is_rgb and not is_gray,
    )


def reformat(frame, **kwargs):
    """``frame.reformat`` on one thread.

    The swscale bundled with PyAV 18 (FFmpeg 8) writes wrong pixels at the start of slice
    boundaries when it converts with several threads (seen rgb48le -> yuv444p10le: rows H/3 and
    2H/3, first 8 columns, off by up to 26000 of 65535, in about half of the runs). One thread is
    exact and the conversion is a small part of the work.
    """
    return frame.reformat(threads=1, **kwargs)


def array_format(bit_depth: int, has_alpha: bool) -> str:
    """The packed RGB(A) format a frame is converted to for an array of our convention."""
    if bit_depth > 8:
        return "rgba64le" if has_alpha else "rgb48le"
    return "rgba" if has_alpha else "rgb24"


def frame_to_array(frame, *, deep: bool, alpha: bool, tags: ColorTags | None = None) -> np.ndarray:
    """Convert a decoded ``av.VideoFrame`` to an ``[H, W, 3|4]`` array of our convention.

    The frame's own colour tags pick the YCbCr matrix and range unless ``tags`` overrides them;
    RGB sources are copied without any matrix.
    """
    target = array_format(16 if deep else 8, alpha)
    facts = pixel_format_facts(frame.format.name)
    kwargs: dict = {}
    if not facts.is_rgb and not facts.is_gray and not frame.format.has_palette:
        frame_tags = tags or ColorTags(matrix=frame.colorspace, range=frame.color_range)
        if frame.format.name.startswith("yuvj"):
            frame_tags = ColorTags(matrix=frame_tags.matrix, range=RANGE_FULL)
        resolved = frame_tags.resolved(frame.height)
        kwargs = {
            "src_colorspace": sws_matrix(frame_tags, frame.height),
            "dst_colorspace": sws_matrix(frame_tags, frame.height),
            "src_color_range": "JPEG" if resolved.range == RANGE_FULL else "MPEG",
            "dst_color_range": "JPEG",
        }
    array = reformat(frame, format=target, **kwargs).to_ndarray()
    return np.ascontiguousarray(array)


def array_to_frame(array: np.ndarray):
    """Wrap one ``[H, W, 3|4]`` uint8/uint16 array as an RGB(A) ``av.VideoFrame``."""
    import av

    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected a [H, W, 3|4] frame, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        fmt = "rgba" if array.shape[2] == 4 else "rgb24"
    elif array.dtype == np.uint16:
        fmt = "rgba64le" if array.shape[2] == 4 else "rgb48le"
    else:
        raise ValueError(f"frames must be uint8 or uint16, got {array.dtype}")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)
