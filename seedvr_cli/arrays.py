"""Frames handed over as torch tensors (on any device) or array-likes, as numpy arrays: the one
conversion the writer and the spill files share, without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(frames: Any) -> np.ndarray:
    """``frames`` as a C-contiguous numpy array; a tensor is detached and copied to the host."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    return np.ascontiguousarray(frames)
