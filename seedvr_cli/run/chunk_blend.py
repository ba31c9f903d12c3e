"""A chunk's windows blended in float on their device, then quantised once: ``ChunkBlend``.

Each window's float output is weighted by its shares of the plan's fold and added to what the
chunk's earlier windows left on the frames they share. A frame leaves the device as soon as no
later window of the chunk can touch it: quantised when only this chunk covers it, as a float32
partial sum when a neighbouring chunk covers it too (the assembler adds those up and quantises
them). Only the frames of the latest window stay on the device in float.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from seedvr_cli.parallel.spill import ChunkFrames
from seedvr_cli.parallel.tasks import ChunkTask
from seedvr_cli.pipeline.quantize import quantize

_NUMPY_DTYPES = {torch.uint8: np.dtype(np.uint8), torch.uint16: np.dtype(np.uint16)}


class ChunkBlend:
    """Collects ``task``'s windows in timeline order (``add``), then gives its ``ChunkFrames`` (``result``)."""

    def __init__(self, task: ChunkTask, output_dtype: torch.dtype) -> None:
        if output_dtype not in _NUMPY_DTYPES:
            raise ValueError(f"chunks are stored as uint8 or uint16, not {output_dtype}")
        self.task, self.output_dtype = task, output_dtype
        # Weighted sums of timeline frames [_open_start, _open_start + len(_open)): what later
        # windows may still add to.
        self._open: torch.Tensor | None = None
        self._open_start = task.out_start
        self._parts: dict[str, list[np.ndarray]] = {"head": [], "body": [], "tail": []}

    @torch.inference_mode()
    def add(self, start: int, frames: torch.Tensor, shares: Sequence[float]) -> None:
        """Window frames ``[t, H, W, C]`` (float32 in [0, 1]) of timeline frames ``[start, start + t)``.

        ``frames`` is consumed: it is weighted in place.
        """
        open_stop = self._open_start + (0 if self._open is None else self._open.shape[0])
        if not self._open_start <= start <= open_stop < start + frames.shape[0] <= self.task.out_stop:
            raise ValueError(f"window {start}:{start + frames.shape[0]} does not continue chunk "
                             f"{self.task.index}'s frames {self._open_start}:{open_stop} inside "
                             f"{self.task.out_start}:{self.task.out_stop}")
        if len(shares) != frames.shape[0]:
            raise ValueError(f"{len(shares)} shares for a window of {frames.shape[0]} frames")
        weights = torch.from_numpy(np.asarray(shares, dtype=np.float32).copy()).to(frames.device)
        weighted = frames.mul_(weights.view(-1, *([1] * (frames.dim() - 1))))
        if self._open is not None:
            self._emit(self._open_start, self._open[: start - self._open_start])
            weighted[: open_stop - start].add_(self._open[start - self._open_start :])
        self._open, self._open_start = weighted, start

    def _emit(self, start: int, frames: torch.Tensor) -> None:
        """Final sums of timeline frames ``[start, start + len(frames))`` leave the device."""
        local = start - self.task.out_start
        body_start = self.task.shared_head
        body_stop = self.task.out_frames - self.task.shared_tail
        count = frames.shape[0]
        cuts = [0, min(max(body_start - local, 0), count), min(max(body_stop - local, 0), count), count]
        for name, lo, hi in zip(("head", "body", "tail"), cuts, cuts[1:]):
            if hi > lo:
                piece = frames[lo:hi]
                if name == "body":
                    piece = quantize(piece, self.output_dtype)
                self._parts[name].append(piece.cpu().numpy())

    @torch.inference_mode()
    def result(self) -> ChunkFrames:
        if self._open is None or self._open_start + self._open.shape[0] != self.task.out_stop:
            raise ValueError(f"chunk {self.task.index}: its windows do not reach frame {self.task.out_stop}")
        self._emit(self._open_start, self._open)
        self._open = None
        frame = (self._parts["body"] or self._parts["head"] or self._parts["tail"])[0].shape[1:]

        def joined(name: str, dtype: np.dtype) -> np.ndarray:
            parts = self._parts[name]
            return np.concatenate(parts) if parts else np.zeros((0, *frame), dtype=dtype)

        return ChunkFrames(joined("head", np.dtype(np.float32)), joined("body", _NUMPY_DTYPES[self.output_dtype]),
                           joined("tail", np.dtype(np.float32)))
