"""Errors that the CLI turns into one readable line instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or settings: the message names the file or flag and says how to fix it.

    ``exit_code`` follows the CLI's contract: 1 failure, 2 usage error.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError):
    """An impossible flag or flag combination."""

    exit_code = 2


class MediaError(UserError):
    """A media file that cannot be read or written."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or not a SeedVR2 file."""


class ChunkOutOfMemory(UserError):
    """A chunk that ran out of GPU memory with the settings in use (and, under ``--vram auto``, every
    saver that could still be added): the message names the settings that need less."""


def out_of_memory_summary(err: BaseException) -> str:
    """The first two sentences of a ``torch.OutOfMemoryError`` ("CUDA out of memory. Tried to allocate
    2.00 GiB"): the rest of its text is the allocator's advice, which our line naming the settings replaces."""
    return ". ".join(str(err).split(". ")[:2])
