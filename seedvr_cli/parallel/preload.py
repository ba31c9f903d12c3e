"""Imported by the workers' fork server (``launcher``): the modules every worker needs before its
first chunk, as the application listed them in ``SEEDVR_WORKER_PRELOAD`` (comma-separated).

Importing this module has only that effect. A module that fails here is left out; a worker that
needs it imports it again and reports the real error with its device.
"""

import importlib
import os

for _name in filter(None, os.environ.get("SEEDVR_WORKER_PRELOAD", "").split(",")):
    try:
        importlib.import_module(_name.strip())
    except Exception:  # noqa: BLE001  (see the module docstring)
        pass
