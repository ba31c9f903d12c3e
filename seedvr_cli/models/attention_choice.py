"""Which attention backend a device runs for ``--attention auto|sdpa|flash|flex`` (the choices:
``pipeline.choices.ATTENTION_CHOICES``).

"auto" takes the fastest backend the device has: "flash" (every window in one varlen call) where
its kernels run, else "sdpa". A backend asked for by name that the device lacks falls back to
"sdpa", with one line saying why, so a command line written for one machine still runs on another.
"""

from __future__ import annotations

import torch

from .packed_attention import flex_available, varlen_available
# Why a backend cannot run on a device (None: it can); backends not named here run anywhere.
_MISSING = {"flash": varlen_available, "flex": lambda device, dtype: flex_available(device)}


def choose_attention(requested: str, device: torch.device,
                     dtype: torch.dtype = torch.bfloat16) -> tuple[str, str | None]:
    """(backend name, note or None) for ``requested`` on ``device`` with activations of ``dtype``."""
    if requested == "auto":
        return ("flash", None) if varlen_available(device, dtype) is None else ("sdpa", None)
    missing = _MISSING.get(requested)
    why = missing(device, dtype) if missing is not None else None
    if why is not None:
        return "sdpa", f"--attention {requested} is not available ({why}); using sdpa"
    return requested, None
