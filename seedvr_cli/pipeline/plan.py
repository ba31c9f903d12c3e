"""Output size planning: the frame size the models see and the size that is written.

Four sizes describe one frame (numz's rules: docs/reference-behaviour.md R2-R4):

* ``short_side``: after the short-side resize alone;
* ``resized``: after the short-side resize to ``resolution`` (torchvision ``resize(img, int)``
  semantics: the long side is truncated) and the optional ``max_resolution`` cap;
* ``true``: what is written, ``resized`` rounded down to even sides so that 4:2:0 codecs accept
  it (image formats may keep the odd size with ``even=False``);
* ``padded``: ``resized`` zero-padded bottom/right to multiples of 16, the size the VAE and DiT
  work on; decoded frames are cropped back to ``true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from seedvr_cli.errors import UsageError
from seedvr_cli.pipeline.choices import DEFAULT_RESOLUTION

# The DiT patchifies 8x-downsampled latents 2x2, so model frames are multiples of 16 pixels.
MODEL_SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class FrameSize:
    """Sizes of one output frame, each as (height, width)."""

    input: tuple[int, int]
    short_side: tuple[int, int]
    resized: tuple[int, int]
    true: tuple[int, int]
    padded: tuple[int, int]

    @property
    def latent(self) -> tuple[int, int]:
        return self.padded[0] // 8, self.padded[1] // 8


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def short_side_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """torchvision ``resize(img, resolution)``: short side exact, long side truncated."""
    short, long = min(height, width), max(height, width)
    new_short, new_long = resolution, int(resolution * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def capped_size(height: int, width: int, max_resolution: int) -> tuple[int, int]:
    """The second resize of numz's ``max_resolution``: long side down to the cap, sides rounded."""
    if max_resolution <= 0 or max(height, width) <= max_resolution:
        return height, width
    factor = max_resolution / max(height, width)
    return round(height * factor), round(width * factor)


def resolve_resolution(height: int, width: int, *, resolution: int | None = None, scale: float | None = None) -> int:
    """The short-side target from ``--resolution`` or ``--scale`` (a factor of the input short side).

    The values are checked where the flags become settings (``config.ProcessSettings``)."""
    if resolution is not None and scale is not None:
        raise ValueError("resolution and scale both given")
    if scale is not None:
        resolution = max(1, round(scale * min(height, width)))
    return DEFAULT_RESOLUTION if resolution is None else resolution


def plan_frame_size(
    height: int,
    width: int,
    *,
    resolution: int | None = None,
    max_resolution: int = 0,
    scale: float | None = None,
    even: bool = True,
) -> FrameSize:
    """Sizes for an input of ``height`` x ``width`` (numz "short side" mode)."""
    if height < 1 or width < 1:
        raise UsageError(f"input frame size {height}x{width} is empty")
    target = resolve_resolution(height, width, resolution=resolution, scale=scale)
    short_side = short_side_size(height, width, target)
    resized = capped_size(*short_side, max_resolution)
    if min(resized) < 2 and even:
        raise UsageError(f"output size {resized[0]}x{resized[1]} is too small: raise --resolution")
    true = (2 * (resized[0] // 2), 2 * (resized[1] // 2)) if even else resized
    padded = (round_up(resized[0], MODEL_SIZE_MULTIPLE), round_up(resized[1], MODEL_SIZE_MULTIPLE))
    return FrameSize(input=(height, width), short_side=short_side, resized=resized, true=true, padded=padded)
