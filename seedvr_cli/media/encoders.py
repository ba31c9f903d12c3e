"""Open an output's encoder with the run's options before any frame exists.

PyAV opens an encoder at the first frame, so a bad ``--preset`` or ``-e`` value used to surface only
after all the GPU work, and an option the encoder does not know was dropped without a word. Here
the same encoder is opened with the same pixel format and options on a small throwaway frame size,
and a refusal becomes a usage error naming the flag.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

from seedvr_cli.errors import UsageError
from seedvr_cli.media.images import image_encoding
from seedvr_cli.media.settings import Encoding, OutputSettings

# The trial frame size: libx265 misbehaves below 64 px (see media.writer).
_TRIAL_SIDE = 64


def has_encoder_choices(settings: OutputSettings) -> bool:
    """Whether the user chose anything an encoder may refuse (our own defaults it always takes)."""
    return bool(settings.preset or settings.crf is not None or settings.encoder_options)


def check_video_encoding(encoding: Encoding, settings: OutputSettings) -> None:
    """UsageError when ``encoding.encoder`` refuses ``encoding.options`` or ignores one of them."""
    _check(encoding.encoder, encoding.pix_fmt, encoding.options, _flags(settings, encoding.options))


def check_image_options(suffix: str, settings: OutputSettings, *, deep: bool, alpha: bool) -> None:
    """The same for the ``-e`` options of images written as ``suffix`` (.png, .jpg, ...)."""
    if settings.encoder_options:
        encoder, pix_fmt = image_encoding(suffix, deep=deep, alpha=alpha)
        options = settings.encoder_options
        _check(encoder, pix_fmt, options, _flags(settings, options))


def _flags(settings: OutputSettings, options: dict[str, str]) -> dict[str, str]:
    """Option key -> the flag it came from, for the options the user chose (``-e`` wins, as in
    ``OutputSettings.encoding_for``)."""
    flags = {}
    if settings.preset and "preset" in options:
        flags["preset"] = f"--preset {settings.preset}"
    if settings.crf is not None and "crf" in options:
        flags["crf"] = f"--crf {settings.crf}"
    for key, value in settings.encoder_options.items():
        flags[key] = f"-e {key}={value}"
    return flags


def _check(encoder: str, pix_fmt: str, options: dict[str, str], flags: dict[str, str]) -> None:
    refusal, ignored = _trial_open(encoder, pix_fmt, options)
    if refusal is not None:
        # Name the one flag the encoder refuses on its own, when there is one.
        ours = {key: value for key, value in options.items() if key not in flags}
        culprits = [flag for key, flag in flags.items()
                    if _trial_open(encoder, pix_fmt, {**ours, key: options[key]})[0] is not None]  # fmt: skip
        named = ", ".join(culprits[:1] or flags.values()) or "the encoder options"
        raise UsageError(f"{named}: {encoder} refuses it ({refusal}); `ffmpeg -h encoder={encoder}` lists what "
                         "it accepts")
    unknown = [flags.get(key, key) for key in ignored]
    if unknown:
        raise UsageError(f"{unknown[0]}: {encoder} has no such option; `ffmpeg -h encoder={encoder}` lists its "
                         "options")


def _trial_open(encoder: str, pix_fmt: str, options: dict[str, str]) -> tuple[str | None, list[str]]:
    """Open ``encoder`` once: (why it refused, or None; the option keys it left unused)."""
    import av
    import av.logging

    ctx = av.CodecContext.create(encoder, "w")
    ctx.width = ctx.height = _TRIAL_SIDE
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.options = dict(options)
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # as the writer does: no configuration dump on stderr
    level, skip_repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    # FFmpeg's log says why, once PyAV listens; without repeats skipped, a repeat of an earlier
    # trial's line is not handed in late, into this trial's log.
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture() as logs, _stderr_lines() as printed:
            try:
                ctx.open()
            except (av.error.FFmpegError, ValueError) as err:
                failed = getattr(err, "strerror", None) or str(err).splitlines()[0]
            else:
                failed = None
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip_repeated)
    if failed is None:
        return None, list(ctx.options)
    # The most specific words first: what the library printed itself ("invalid preset 'foo'"),
    # then FFmpeg's log ("Value 99 for parameter 'preset' out of range [-2 - 13]").
    reasons = [line.split("]: ", 1)[-1].strip() for line in printed if line.strip()]
    reasons += [message.strip() for _, name, message in logs if name == encoder]
    return (reasons[0] if reasons else failed).rstrip("."), []


@contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """What is written to the process's stderr meanwhile, kept off the terminal: libx264 prints its
    complaints itself ("x264 [error]: invalid preset 'foo'"), past FFmpeg's log."""
    sys.stderr.flush()
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())
