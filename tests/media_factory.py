"""Tiny test clips made with PyAV: VFR, 10-bit, audio, subtitles, odd sizes, rotation, alpha.

Every frame carries its own number (a bright square whose position and brightness follow the
frame number), so tests can tell frames apart after lossy encoding.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from seedvr_cli.media.pixels import reformat


def pattern_frame(number: int, height: int, width: int, *, deep: bool = False, alpha: bool = False) -> np.ndarray:
    """A smooth gradient plus a moving block; distinct for every ``number``."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    phase = (number * 0.137) % 1.0
    red = np.broadcast_to((x + phase) % 1.0, (height, width))
    green = np.broadcast_to(y, (height, width))
    blue = np.full((height, width), (number * 37 % 256) / 255.0, dtype=np.float32)
    image = np.stack([red, green, blue], axis=-1)
    size = max(2, min(height, width) // 4)
    top = (number * 3) % max(1, height - size)
    left = (number * 5) % max(1, width - size)
    image[top:top + size, left:left + size] = 1.0
    if alpha:
        alpha_plane = np.broadcast_to(((x + y) / 2), (height, width))[..., None]
        image = np.concatenate([image, alpha_plane], axis=-1)
    if deep:
        return np.round(image * 65535).astype(np.uint16)
    return np.round(image * 255).astype(np.uint8)


def make_video(
    path: Path,
    *,
    frames: int = 12,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: Fraction | int = 25,
    pts_ms: list[int] | None = None,
    rotation: int = 0,
    audio: str | None = None,
    audio_rate: int = 48000,
    audio_start_s: float = 0.0,
    subtitles: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a clip. ``pts_ms`` gives per-frame times in milliseconds (a VFR clip, time base 1/1000).
    ``audio_start_s``: the audio's first sample comes that late after the first video frame.

    libx265 needs frames of at least 64x64 here: smaller ones can corrupt its heap.
    """
    fps = Fraction(fps)
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    time_base = Fraction(1, 1000) if pts_ms is not None else 1 / fps
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    stream.codec_context.options = {"g": "5", **({"x265-params": "log-level=error"} if codec == "libx265" else {}), **(options or {})}
    if rotation:
        stream.set_display_rotation(rotation)
    audio_stream = None
    if audio is not None:
        audio_stream = container.add_stream(audio, rate=audio_rate)
        audio_stream.codec_context.layout = "stereo"
    subtitle_stream = container.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if subtitles else None
    fmt = av.VideoFormat(pix_fmt)
    deep = max(c.bits for c in fmt.components) > 8
    alpha = any(c.is_alpha for c in fmt.components)
    times = pts_ms if pts_ms is not None else list(range(frames))
    for number in range(frames):
        frame = av.VideoFrame.from_ndarray(
            pattern_frame(number, height, width, deep=deep, alpha=alpha),
            format=("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24"),
        )
        frame = reformat(frame, format=pix_fmt)
        frame.pts = times[number]
        frame.time_base = time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    if audio_stream is not None:
        seconds = frames / float(fps) if pts_ms is None else (pts_ms[-1] + 40) / 1000
        _write_tone(container, audio_stream, seconds, audio_rate, round(audio_start_s * audio_rate))
    if subtitle_stream is not None:
        _write_subtitle(container, subtitle_stream)
    container.close()
    return path


def _write_tone(container, stream, seconds: float, rate: int, first_sample: int = 0) -> None:
    total = int(seconds * rate)
    ctx = stream.codec_context
    block = ctx.frame_size or 1024
    sample_format = ctx.format.name if ctx.format is not None else "fltp"
    for start in range(0, total, block):
        count = min(block, total - start)
        t = (np.arange(start, start + count) / rate).astype(np.float32)
        tone = 0.2 * np.sin(2 * np.pi * 440 * t)
        planes = np.stack([tone, tone])
        if sample_format == "s16":
            data = (planes.T.reshape(1, -1) * 32767).astype(np.int16)
        elif sample_format == "s16p":
            data = (planes * 32767).astype(np.int16)
        elif sample_format == "u8":
            data = (planes.T.reshape(1, -1) * 127 + 128).astype(np.uint8)
        elif sample_format == "flt":
            data = planes.T.reshape(1, -1).astype(np.float32)
        else:
            data = planes.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="stereo")
        frame.sample_rate = rate
        frame.pts = first_sample + start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _write_subtitle(container, stream) -> None:
    packet = av.Packet(b"hello")
    packet.stream = stream
    packet.pts = packet.dts = 0
    packet.duration = 200
    packet.time_base = Fraction(1, 1000)
    container.mux(packet)


def make_image(path: Path, *, width: int = 33, height: int = 21, deep: bool = False, alpha: bool = False, gray: bool = False) -> np.ndarray:
    """Write one image with PyAV and return the RGB(A) array it holds."""
    image = pattern_frame(7, height, width, deep=deep, alpha=alpha)
    if gray:
        image = np.repeat(image[..., :1], 3, axis=-1) if not alpha else np.concatenate(
            [np.repeat(image[..., :1], 3, axis=-1), image[..., 3:]], axis=-1)
    suffix = path.suffix.lower()
    if gray:
        fmt_in = "gray16le" if deep else "gray"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., 0]), format=fmt_in)
        codec, pix_fmt = ("png", "gray16be" if deep else "gray") if suffix == ".png" else ("tiff", "gray16le" if deep else "gray")
        frame = reformat(frame, format=pix_fmt)
    else:
        from seedvr_cli.media.images import encode_image

        path.write_bytes(encode_image(image, suffix))
        return image
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, pix_fmt, Fraction(1, 25)
    data = b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))
    path.write_bytes(data)
    return image
