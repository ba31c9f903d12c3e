"""The output encoder on a thread of its own, fed through a bounded queue.

The assembler reads finished chunks back from their spill files and blends their shared frames;
the sink (the media writer) encodes. One after the other on one thread, every spill read waited
for the encoder and every encode for the disk. ``EncoderThread`` lets the assembler read the next
batch while the encoder works on the one before. At most ``depth`` batches wait in the queue
besides the one being encoded (a batch is what the assembler writes at once, at most its
``batch_bytes``), so the parent's memory stays bounded whatever the clip's length.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from seedvr_cli.parallel.timeline import Timeline

_END = object()
_HAND_OVER_S = 0.1  # how often a writer blocked on a full queue looks whether the encoder failed


class EncoderThread:
    """A ``FrameSink`` that passes ``write``s to ``sink`` on a background thread, in order.

    An error of ``sink.write`` is raised, as it was raised, by the next ``write`` or by ``close``;
    frames after it are not encoded. ``close`` waits for the queue to drain and then closes
    ``sink`` on the calling thread; ``abort`` drops what is queued, waits for the batch being
    encoded, and aborts ``sink``.
    """

    def __init__(self, sink: Any, *, depth: int = 1) -> None:
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._dropping = threading.Event()
        self._timeline = Timeline("parent")
        self._thread = threading.Thread(target=self._encode, name="seedvr-encoder", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        while True:
            frames = self._queue.get()
            if frames is _END:
                return
            if self._error is not None or self._dropping.is_set():
                continue
            try:
                with self._timeline.span("encode"):
                    self.sink.write(frames)
            except BaseException as exc:  # re-raised on the caller's thread by write() or close()
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _put(self, item: Any) -> None:
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("frames written after the output was closed or aborted")
            try:
                self._queue.put(item, timeout=_HAND_OVER_S)
                return
            except queue.Full:
                continue

    def write(self, frames: Any) -> None:
        self._put(frames)

    def close(self) -> None:
        """Encode what is queued, then finish the output (``sink.close``)."""
        self._put(_END)
        self._thread.join()
        self._raise_error()
        self.sink.close()

    def abort(self) -> None:
        """Drop what is queued and abort the output (``sink.abort``); never raises the encoder's error
        (the run is failing already, for that reason or another)."""
        self._dropping.set()
        try:
            while self._thread.is_alive():
                self._drain()
                try:
                    self._queue.put(_END, timeout=_HAND_OVER_S)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        finally:
            self.sink.abort()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
