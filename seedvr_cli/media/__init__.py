"""Media I/O with PyAV: probe, frame-accurate readers, writers, input discovery and output naming.

The public names below are importable from here (``from seedvr_cli.media import open_reader``);
they load their module on first use so that importing the package stays cheap. The probe
function is exported as ``probe_media``: ``seedvr_cli.media.probe`` is the module of that name.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "probe_media": "probe", "MediaInfo": "probe", "AudioStreamInfo": "probe", "SubtitleStreamInfo": "probe",
    "open_reader": "reader", "FrameReader": "reader", "VideoReader": "reader",
    "FrameIndex": "frameindex",
    "open_writer": "writer", "FrameWriter": "writer", "VideoWriter": "writer",
    "OutputSettings": "settings", "Encoding": "settings", "required_multiple": "settings",
    "discover_jobs": "discovery", "Job": "discovery",
    "ColorTags": "pixels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    attribute = "probe" if name == "probe_media" else name
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
