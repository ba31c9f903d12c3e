"""3-axis rotary position embedding of the NaDiT: the 3B "mmrope3d" and the 7B "pixel" rope.

Everything here is float32 and computed from the formula (docs/reference-behaviour.md R28).
Angles of the 7B reach 128·pi rad, where bf16 or fp16 angles are meaningless, so neither
checkpoint copies of the frequencies nor the activation dtype are ever used for them.

Convention: angle vectors are ``[A_t | A_h | A_w]``, each axis block holding every frequency twice
in place (f0, f0, f1, f1, ...); dims ``(2m, 2m+1)`` are rotated as a pair ("interleaved"), dims past
the angle vector's length pass through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ROPE_KINDS = ("mmrope3d", "pixel")
# The 3B's language-style frequencies use the LLM base.
LANG_THETA = 10000.0
# The 7B's pixel frequencies span pi·[1, PIXEL_MAX_FREQ].
PIXEL_MAX_FREQ = 128.0


@dataclass(frozen=True)
class RopeSpec:
    """What a block's rope computes. ``dim`` is the reference's rope width (3B ``rope_dim``, 7B
    ``head_dim // 2``); a third of it goes to each axis."""

    kind: str
    dim: int

    def __post_init__(self) -> None:
        if self.kind not in ROPE_KINDS:
            raise ValueError(f"rope kind {self.kind!r} is not one of {ROPE_KINDS}")
        if self.num_freqs < 1:
            raise ValueError(f"rope dim {self.dim} leaves no frequency per axis (needs >= 6)")

    @property
    def num_freqs(self) -> int:
        return (self.dim // 3) // 2

    @property
    def rotated_dims(self) -> int:
        return 3 * 2 * self.num_freqs

    @property
    def rotates_text(self) -> bool:
        # Only the 3B rope gives text tokens positions; the 7B leaves text q/k unrotated.
        return self.kind == "mmrope3d"

    def frequencies(self, device: torch.device | str | None = None) -> Tensor:
        """The per-axis frequency vector (the checkpoint's ``rope.freqs`` buffer), float32."""
        axis_dim = self.dim // 3
        if self.kind == "mmrope3d":
            exponents = torch.arange(0, axis_dim, 2, device=device)[: self.num_freqs].float() / axis_dim
            return 1.0 / (LANG_THETA**exponents)
        return torch.linspace(1.0, PIXEL_MAX_FREQ, self.num_freqs, dtype=torch.float32, device=device) * math.pi

    def video_angles(self, window_thw: tuple[int, int, int], txt_len: int, device=None) -> Tensor:
        """Angles (nt·nh·nw, rotated_dims) for the video tokens of one window, (t, y, x) raster.

        3B: window-local integer positions with time offset by the sample's text length.
        7B: the window's own coordinates, ``linspace(-1, 1, n)`` per axis.
        """
        if self.kind == "mmrope3d":
            offsets = (txt_len, 0, 0)
            positions = [
                torch.arange(n, device=device).float() + float(offset) for n, offset in zip(window_thw, offsets)
            ]
        else:
            positions = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device) for n in window_thw]
        return _axial_angles(positions, self.frequencies(device))

    def text_angles(self, txt_len: int, device=None) -> Tensor | None:
        """Angles (txt_len, rotated_dims) of text token j at position (j, j, j); None for the 7B."""
        if not self.rotates_text:
            return None
        per_axis = _duplicated(torch.arange(txt_len, device=device).float()[:, None] * self.frequencies(device))
        return per_axis.repeat(1, 3)


def _duplicated(angles: Tensor) -> Tensor:
    return angles.repeat_interleave(2, dim=-1)


def _axial_angles(positions: list[Tensor], freqs: Tensor) -> Tensor:
    """Concatenate per-axis angle blocks over the 3-D grid spanned by ``positions``."""
    nt, nh, nw = (len(p) for p in positions)
    width = 2 * freqs.numel()
    t, h, w = (_duplicated(p[:, None] * freqs) for p in positions)
    grid = torch.cat(
        [
            t[:, None, None, :].expand(nt, nh, nw, width),
            h[None, :, None, :].expand(nt, nh, nw, width),
            w[None, None, :, :].expand(nt, nh, nw, width),
        ],
        dim=-1,
    )
    return grid.reshape(nt * nh * nw, 3 * width)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs of the first ``cos.shape[-1]`` dims of ``x`` (float32 maths).

    ``cos``/``sin`` must broadcast against ``x[..., :r]`` (e.g. (S, 1, r) for x of (..., S, H, hd)).
    """
    rotated = cos.shape[-1]
    # Only the rotated dims go through float32; the rest are copied as they are.
    head = x[..., :rotated].float()
    pairs = head.unflatten(-1, (-1, 2))
    # (x0, x1) -> (-x1, x0): the quarter turn that, scaled by sin, completes the rotation.
    quarter = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    head = head * cos + quarter * sin
    return torch.cat((head.to(x.dtype), x[..., rotated:]), dim=-1)


class RotaryFrequencies(nn.Module):
    """Holder of the checkpoint's ``rope.freqs`` buffer, kept so strict loading sees its key.

    The buffer is never read for compute. Whatever a file stores there (fp16-rounded, or destroyed
    by fp8) is accepted on load and replaced by the float32 formula value.
    """

    def __init__(self, spec: RopeSpec) -> None:
        super().__init__()
        self.spec = spec
        # On the CPU even when the model is built on the meta device: arithmetic on meta tensors
        # goes through torch's Python decompositions, whose first use imports torch._dynamo
        # (seconds of every worker's start-up).
        self.register_buffer("freqs", spec.frequencies("cpu"), persistent=True)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        key = prefix + "freqs"
        if key not in state_dict:
            missing_keys.append(key)
            return
        stored = state_dict[key]
        if tuple(stored.shape) != (self.spec.num_freqs,):
            error_msgs.append(
                f"size mismatch for {key}: checkpoint has {tuple(stored.shape)}, "
                f"a {self.spec.kind} rope of dim {self.spec.dim} has ({self.spec.num_freqs},)"
            )
            return
        device = stored.device if stored.device.type != "meta" else self.freqs.device
        self.freqs = self.spec.frequencies(device)


class RotaryEmbedding3d(nn.Module):
    """The block's ``attn.rope`` module (named like the reference so the buffer key matches)."""

    def __init__(self, spec: RopeSpec) -> None:
        super().__init__()
        self.spec = spec
        self.rope = RotaryFrequencies(spec)


def full_width_tables(cos: Tensor, sin: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """``apply_rope``'s tables widened to the whole head for ``apply_rope_full``: cos 1 and sin 0
    on the dims that pass through, and sin carrying the quarter turn's sign (-s, +s per pair)."""
    rotated = cos.shape[-1]
    if rotated > head_dim:
        raise ValueError(f"rope tables of width {rotated} do not fit heads of dim {head_dim}")
    lead = cos.shape[:-1]
    full_cos = cos.new_ones(*lead, head_dim)
    full_sin = sin.new_zeros(*lead, head_dim)
    full_cos[..., :rotated] = cos
    full_sin[..., :rotated] = sin
    full_sin[..., 0:rotated:2] *= -1
    return full_cos, full_sin


def apply_rope_full(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``apply_rope`` with tables from ``full_width_tables``: the same float32 products, bit for
    bit, in one expression over the whole head (no slicing and no concatenation), which lets a
    compiled block fuse the rotation into a single pass."""
    x32 = x.float()
    # Each pair swapped, (x0, x1) -> (x1, x0); the table's signs turn it into (-x1, x0).
    swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x32 * cos + swapped * sin).to(x.dtype)
