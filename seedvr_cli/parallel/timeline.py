"""Opt-in record of when each stage of a run happened, in the parent and in every worker.

Off unless ``SEEDVR_TIMELINE`` names a file: then every process appends one JSON line per span,
``{"who": "cpu:0", "stage": "read", "chunk": 3, "start": ..., "end": ...}`` (wall-clock seconds, so
the lines of different processes share one clock). ``scripts/io_timeline.py`` turns them into the
time the workers and the parent spent waiting on file I/O. Spans are per chunk or per write batch,
so recording costs nothing measurable; when the variable is unset, ``span`` only reads a field.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

TIMELINE_ENV = "SEEDVR_TIMELINE"


class Timeline:
    """Spans of one process (or one role in it, ``who``), appended to the file ``SEEDVR_TIMELINE`` names."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.path = os.environ.get(TIMELINE_ENV) or None

    @contextmanager
    def span(self, stage: str, chunk: int | None = None) -> Iterator[None]:
        if self.path is None:
            yield
            return
        start = time.time()
        try:
            yield
        finally:
            self._append({"who": self.who, "stage": stage, "chunk": chunk, "start": start, "end": time.time()})

    def _append(self, record: dict) -> None:
        # One write() on an O_APPEND descriptor: lines of concurrent processes never interleave.
        line = (json.dumps(record) + "\n").encode()
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(handle, line)
            finally:
                os.close(handle)
        except OSError:
            pass  # a measurement aid must never fail the run (e.g. on a full disk)
