"""How a worker reads its frames of an input: a picklable description it opens itself, so that
no decoded frame ever crosses a process boundary."""

from __future__ import annotations

from dataclasses import dataclass

from seedvr_cli.media.reader import open_reader


@dataclass(frozen=True)
class InputSource:
    """One input as the workers open it; frame 0 of the job is file frame ``first_frame``."""

    path: str
    sequence: bool
    fps: float | None
    first_frame: int
    # What the parent's reader found (media.frameindex.FrameIndex, media.probe.MediaInfo): workers
    # reuse them instead of scanning and probing the file once more each.
    index: object = None
    info: object = None

    @classmethod
    def of(cls, path: str, sequence: bool, fps: float | None, first_frame: int, reader) -> InputSource:
        """The input the parent has open as ``reader``, with what that reader already knows."""
        return cls(path, sequence, fps, first_frame, getattr(reader, "exact_index", None), reader.info)

    def open(self) -> OffsetReader:
        reader = open_reader(self.path, sequence=self.sequence, fps=self.fps, index=self.index, info=self.info)
        return OffsetReader(reader, self.first_frame)


class OffsetReader:
    """A reader whose frame 0 is ``offset`` in the file (``--frames START:``)."""

    def __init__(self, reader, offset: int) -> None:
        self.reader, self.offset = reader, offset

    def read(self, start: int, stop: int):
        return self.reader.read(self.offset + start, self.offset + stop)

    def close(self) -> None:
        self.reader.close()
