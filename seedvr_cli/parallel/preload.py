"""Imported by the workers' fork server (``launcher``): what every worker needs before its first chunk.

Importing this module has only that effect. A module that fails here is left out; a worker that
needs it imports it again and reports the real error with its device.
"""

import importlib

MODULES = (
    "torch",
    "numpy",
    "av",
    "seedvr_cli.parallel.worker",
    "seedvr_cli.pipeline.processor",
    "seedvr_cli.weights.loader",
    "seedvr_cli.models.dit",
    "seedvr_cli.models.vae",
    "seedvr_cli.media.reader",
)

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001  (see the module docstring)
        pass
