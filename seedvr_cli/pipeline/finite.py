"""NaN and infinity checks on a window's tensors that do not stall the device: ``FiniteGuard``.

A damaged checkpoint (or an fp16 overflow) turns a window into NaNs, and the quantiser makes those
black frames: a silent, finished-looking output. ``watch`` records one on-device flag per step of a
window (no copy to the host, so the GPU keeps its queue); ``check`` reads every flag recorded so far
in one transfer and raises ``NonFiniteError`` for the first bad one, naming the step to blame.
"""

from __future__ import annotations

import torch

from seedvr_cli.pipeline.temporal import Window

# Step -> what produced its tensor (the model to suspect when it holds NaN or infinity).
STAGES = {"encode": "VAE encoder", "dit": "DiT", "decode": "VAE decoder", "color": "colour correction"}


class NonFiniteError(RuntimeError):
    """A window's ``stage`` (a key of ``STAGES``) produced NaN or infinite values."""

    def __init__(self, stage: str, window: Window) -> None:
        self.stage, self.window = stage, window
        super().__init__(f"the {STAGES[stage]} produced NaN or infinite values in window {window.index} "
                         f"(frames {window.start}-{window.stop - 1})")


class FiniteGuard:
    """Collects ``torch.isfinite(x).all()`` flags on the device; ``check`` syncs once for all of them."""

    def __init__(self) -> None:
        self._flags: list[tuple[str, Window, torch.Tensor]] = []

    def watch(self, stage: str, window: Window, tensor: torch.Tensor) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {tuple(STAGES)}")
        self._flags.append((stage, window, torch.isfinite(tensor).all()))

    def check(self) -> None:
        """Raise ``NonFiniteError`` for the first watched tensor that was not finite, then forget them all."""
        flags, self._flags = self._flags, []
        if not flags:
            return
        finite = torch.stack([flag for _, _, flag in flags]).cpu().tolist()
        for (stage, window, _), ok in zip(flags, finite):
            if not ok:
                raise NonFiniteError(stage, window)
