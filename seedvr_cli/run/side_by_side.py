"""Input beside output: the pictures of ``--preview`` and ``--compare``.

The input frame is scaled to the output's size with the same antialiased bicubic filter the model's
input goes through (``pipeline.preprocess``), so the left half shows what plain resizing gives and
the right half what the model adds. Input on the left, output on the right, no divider: both
halves keep every pixel of their frame.
"""

from __future__ import annotations

import numpy as np
import torch

from seedvr_cli.pipeline.preprocess import resize_bicubic, to_unit_float
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.run.outputs import open_output

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


def input_like_output(inputs, outputs: np.ndarray) -> np.ndarray:
    """Input frames ``[n, h, w, c]`` at the size, depth and channel count of ``outputs`` ``[n, H, W, C]``
    (an alpha channel the output does not keep is dropped)."""
    frames = torch.as_tensor(inputs)[..., :outputs.shape[-1]]
    unit = to_unit_float(frames).permute(0, 3, 1, 2)
    resized = resize_bicubic(unit, tuple(outputs.shape[1:3])).permute(0, 2, 3, 1)
    return quantize(resized, _TORCH_DTYPES[outputs.dtype]).numpy()


def side_by_side(inputs, outputs: np.ndarray, like_output=input_like_output) -> np.ndarray:
    """``[n, H, 2W, C]``: each input frame (scaled to the output by ``like_output``, a function like
    ``input_like_output``) left of its output frame."""
    outputs = np.asarray(outputs)
    return np.concatenate([like_output(inputs, outputs), outputs], axis=2)


class CompareSink:
    """Sink adapter for ``--compare``: output frames go to the output writer and, beside the same
    input frames, to a second writer. Both are finished or dropped together.

    ``frames`` reads input frames by output frame number (``run.sources.OffsetReader``); the
    frames arrive in order, so the input is read once, front to back.
    """

    def __init__(self, output, comparison, frames, like_output=input_like_output) -> None:
        self.output, self.comparison, self.frames = output, comparison, frames
        self.like_output = like_output
        self.written = 0

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.output, "notes", []) or [])

    def write(self, frames) -> None:
        frames = np.asarray(frames)
        self.output.write(frames)
        inputs = self.frames.read(self.written, self.written + len(frames))
        self.written += len(frames)
        self.comparison.write(side_by_side(inputs, frames, self.like_output))

    def close(self):
        try:
            path = self.output.close()
            self.comparison.close()
        finally:
            self.frames.close()
        return path

    def abort(self) -> None:
        try:
            self.output.abort()
            self.comparison.abort()
        finally:
            self.frames.close()


def with_comparison(writer, comparison_path: str, settings, reader, source, *, first_frame: int, frames: int,
                    size: tuple[int, int], deep: bool, alpha: bool, like_output=input_like_output) -> CompareSink:
    """``writer`` plus a writer of ``comparison_path`` (twice the output's width, the output's
    encoding, the input's timing and audio). ``source`` (``run.sources.InputSource``) opens the
    input a second time, for the input frames; ``like_output`` scales them (FlashVSR crops too)."""
    inputs = source.open()
    try:
        comparison = open_output(comparison_path, settings, reader, first_frame=first_frame, frames=frames,
                                 size=(size[0], 2 * size[1]), deep=deep, alpha=alpha)
    except BaseException:
        inputs.close()
        raise
    return CompareSink(writer, comparison, inputs, like_output)
