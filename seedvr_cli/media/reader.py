"""Lazy, frame-accurate readers: ``open_reader(...).read(start, stop)`` returns exactly those frames.

Frames come back as a torch tensor ``[n, H, W, C]``: RGB, or RGBA when the source has alpha;
``uint8`` for sources of up to 8 bits per component, ``uint16`` spanning the full ``0..65535``
range for deeper ones (see ``seedvr_cli.media.pixels``). Frames are returned as stored: the
display rotation is reported in ``rotation`` and carried to the output by the writer.

A video reader never holds more than the frames asked for plus the decoder's own buffers: it seeks
to the keyframe before the first wanted frame and decodes forward, or just keeps decoding when the
wanted range follows the last one read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path

import numpy as np

from seedvr_cli.errors import MediaError
from seedvr_cli.media.frameindex import FrameIndex, constant_rate_index, scan_frame_index
from seedvr_cli.media.pixels import ColorTags, frame_to_array
from seedvr_cli.media.probe import MediaInfo, open_container, probe


class FrameReader(ABC):
    """What every reader offers; subclasses for video files, single images and image sequences."""

    info: MediaInfo
    index: FrameIndex

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def num_frames(self) -> int:
        return len(self.index)

    def __len__(self) -> int:
        return self.num_frames

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def has_alpha(self) -> bool:
        return self.info.has_alpha

    @property
    def channels(self) -> int:
        return 4 if self.has_alpha else 3

    @property
    def deep(self) -> bool:
        """True when frames come back as uint16 (sources deeper than 8 bits)."""
        return self.info.bit_depth > 8

    @property
    def dtype(self):
        import torch

        return torch.uint16 if self.deep else torch.uint8

    @property
    def fps(self) -> Fraction:
        return self.info.fps

    @property
    def time_base(self) -> Fraction:
        return self.index.time_base

    @property
    def pts(self) -> np.ndarray:
        """Presentation timestamp of every frame, in ``time_base`` units (what keeps VFR intact)."""
        return self.index.pts

    @property
    def rotation(self) -> int:
        return self.info.rotation

    @property
    def color(self) -> ColorTags:
        return self.info.color

    def read(self, start: int, stop: int):
        """Frames ``start .. stop-1`` as a ``[n, H, W, C]`` torch tensor (see the module doc)."""
        import torch

        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frame range [{start}, {stop}) is outside 0..{self.num_frames} of {self.path}")
        out = np.empty((stop - start, self.height, self.width, self.channels), dtype=np.uint16 if self.deep else np.uint8)
        if stop > start:
            self._fill(start, stop, out)
        return torch.from_numpy(out)

    def chunks(self, size: int):
        """Yield ``(start, frames)`` for consecutive chunks of at most ``size`` frames."""
        for start in range(0, self.num_frames, size):
            stop = min(start + size, self.num_frames)
            yield start, self.read(start, stop)

    @abstractmethod
    def _fill(self, start: int, stop: int, out: np.ndarray) -> None: ...

    def close(self) -> None:
        """Release open files; reading again reopens them."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoReader(FrameReader):
    """A video file read by frame number. Pass ``index`` (from another reader) to skip the scan."""

    def __init__(self, path: str | Path, *, info: MediaInfo | None = None, index: FrameIndex | None = None) -> None:
        self.info = info or probe(path)
        self._container = None
        self._frames = None
        self._next = 0  # frame number the open decoder yields next
        if index is None:
            container = open_container(self.info.path)
            try:
                index = scan_frame_index(container, container.streams.video[0])
            finally:
                container.close()
        # Without usable timestamps frames are counted in decode order and reached by decoding from
        # the start; correct, but slow for random access.
        self._by_pts = index is not None
        if index is None:
            index = constant_rate_index(self.info.frame_count, self.info.fps)
        self.index = index

    @property
    def exact_index(self) -> FrameIndex | None:
        """The index to hand to another reader of this file: ``None`` when it is a stand-in built
        without timestamps (a reader given it would wrongly seek by pts)."""
        return self.index if self._by_pts else None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None

    def _open(self) -> None:
        self.close()
        self._container = open_container(self.info.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        self._frames = self._container.decode(stream)
        self._next = 0

    def _fill(self, start: int, stop: int, out: np.ndarray) -> None:
        import av

        try:
            if self._by_pts:
                self._fill_by_pts(start, stop, out)
            else:
                self._fill_in_order(start, stop, out)
        except av.error.FFmpegError as err:
            self.close()
            raise MediaError(f"{self.path}: decoding frames {start}..{stop - 1} failed ({err}); the file may be damaged") from None

    def _convert(self, frame) -> np.ndarray:
        return frame_to_array(frame, deep=self.deep, alpha=self.has_alpha)

    def _fill_in_order(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._frames is None or self._next > start:
            self._open()
        for frame in self._frames:
            number = self._next
            self._next += 1
            if number >= start:
                out[number - start] = self._convert(frame)
            if self._next >= stop:
                return
        raise MediaError(f"{self.path}: ended after {self._next} frames while reading up to frame {stop - 1}")

    def _fill_by_pts(self, start: int, stop: int, out: np.ndarray) -> None:
        target = int(self.index.pts[start])
        keyframe = self.index.keyframe_at_or_before(target)
        current = int(self.index.pts[self._next]) if self._next < len(self.index) else None
        keep_decoding = (
            self._frames is not None and self._next <= start and current is not None
            and (keyframe is None or keyframe <= current)
        )
        if keep_decoding and self._decode_into(start, stop, out):
            return
        # Seek to the keyframe before the target; if the decoder starts past it (a keyframe flag
        # that lies, an open GOP) step one keyframe further back, and at worst start from the top.
        seek_pts = keyframe
        while True:
            self._open()
            if seek_pts is not None and seek_pts > int(self.index.pts[0]):
                self._container.seek(seek_pts, stream=self._stream, backward=True, any_frame=False)
                self._next = -1  # unknown until the first frame arrives
            if self._decode_into(start, stop, out):
                return
            if seek_pts is None or seek_pts <= int(self.index.pts[0]):
                break
            seek_pts = self.index.keyframe_before(seek_pts)
        # The timestamps did not describe what the decoder produces: fall back to decode order.
        self._by_pts = False
        self._open()
        self._fill_in_order(start, stop, out)

    def _decode_into(self, start: int, stop: int, out: np.ndarray) -> bool:
        """Decode forward, placing frames by timestamp; False when the range cannot be completed."""
        filled = 0
        for frame in self._frames:
            number = self.index.index_of(frame.pts)
            if number is None:
                return False
            if self._next == -1 and number > start:
                return False  # landed after the wanted frame
            self._next = number + 1
            if number < start:
                continue
            if number >= stop:
                return False
            out[number - start] = self._convert(frame)
            filled += 1
            if number == stop - 1:
                return filled == stop - start
        return False


def open_reader(
    path_or_pattern: str | Path,
    *,
    sequence: bool = False,
    fps: Fraction | float | None = None,
    index: FrameIndex | None = None,
    info: MediaInfo | None = None,
) -> FrameReader:
    """A reader for a video file, a single image, or an image sequence.

    Sequences are a directory with ``sequence=True`` or a printf pattern (``frames/%06d.png``);
    their files are taken in natural order at ``fps`` frames per second (25 when not given).
    ``index`` and ``info`` reuse what another reader of the same file found (``reader.exact_index``,
    ``reader.info``), so that workers opening the file again neither scan nor probe it.
    """
    from seedvr_cli.media import images

    info = info or probe(path_or_pattern, sequence=sequence, fps=fps)
    if info.kind == "sequence":
        return images.ImageSequenceReader(info)
    if info.kind == "image":
        return images.ImageReader(info)
    return VideoReader(info.path, info=info, index=index)
