"""Hyper-parameters of the SeedVR2 NaDiT, and the table of known variants.

A variant is data: ``dit_config("3b")``, ``dit_config("7b")`` and the tiny debug variants
(``"tiny-3b"``, ``"tiny-7b"``: exactly the parity fixtures' configs) differ only in these fields.
The "3B style" (official ``dit_v2``) and "7B style" (official ``dit``) switches are explicit
fields so that a config read from a foreign fixture maps onto them one to one
(docs/reference-behaviour.md R23).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rope import ROPE_KINDS, RopeSpec

MLP_KINDS = ("swiglu", "gelu_tanh")
WINDOW_METHODS = ("regular", "shifted")


def swiglu_hidden(width: int, expand_ratio: int = 4) -> int:
    """The reference SwiGLU hidden size: two thirds of ``expand_ratio·width``, rounded up to 256."""
    hidden = int(2 * expand_ratio * width / 3)
    return (hidden + 255) // 256 * 256


def alternating_windows(num_layers: int) -> tuple[str, ...]:
    """Even blocks use the regular partition, odd blocks the shifted one."""
    return tuple(WINDOW_METHODS[i % 2] for i in range(num_layers))


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of one NaDiT variant (docs/reference-behaviour.md R23)."""

    name: str
    width: int  # vid_dim = txt_dim
    heads: int
    head_dim: int
    num_layers: int
    # Blocks [0, mm_layers) own separate .vid/.txt weights; later blocks share one .all set.
    mm_layers: int
    mlp: str  # "swiglu" (3B: no biases) or "gelu_tanh" (7B: with biases)
    mlp_hidden: int
    rope_kind: str  # "mmrope3d" (3B) or "pixel" (7B)
    rope_dim: int  # 3B: the config's rope_dim; 7B: head_dim // 2
    txt_in_dim: int
    emb_dim: int
    window_methods: tuple[str, ...]
    window: tuple[int, int, int] = (4, 3, 3)
    vid_in_channels: int = 33
    vid_out_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    # 3B only: RMSNorm(weight) + modulation before the output projection.
    out_norm: bool = False
    # 3B only: the last block's ada/mlp are video-only; text enters its attention unmodulated.
    last_block_video_only: bool = False
    eps: float = 1e-5
    time_embed_dim: int = 256

    def __post_init__(self) -> None:
        problems = []
        if self.width != self.heads * self.head_dim:
            problems.append(f"width {self.width} != heads {self.heads} x head_dim {self.head_dim}")
        if self.emb_dim != 6 * self.width:
            problems.append(f"emb_dim {self.emb_dim} must be 6 x width {self.width} (shift/scale/gate x attn/mlp)")
        if not 0 <= self.mm_layers <= self.num_layers:
            problems.append(f"mm_layers {self.mm_layers} outside [0, num_layers={self.num_layers}]")
        if self.mlp not in MLP_KINDS:
            problems.append(f"mlp {self.mlp!r} not in {MLP_KINDS}")
        if self.rope_kind not in ROPE_KINDS:
            problems.append(f"rope_kind {self.rope_kind!r} not in {ROPE_KINDS}")
        elif (self.rope_dim // 3) // 2 < 1 or 6 * ((self.rope_dim // 3) // 2) > self.head_dim:
            problems.append(f"rope_dim {self.rope_dim} rotates no dims or more than head_dim {self.head_dim}")
        if len(self.window_methods) != self.num_layers:
            problems.append(f"{len(self.window_methods)} window methods for {self.num_layers} blocks")
        if any(m not in WINDOW_METHODS for m in self.window_methods):
            problems.append(f"window methods must be in {WINDOW_METHODS}, got {sorted(set(self.window_methods))}")
        if len(self.window) != 3 or min(self.window) < 1:
            problems.append(f"window {self.window} must be three positive window counts (t, h, w)")
        if len(self.patch) != 3 or min(self.patch) < 1:
            problems.append(f"patch {self.patch} must be three positive sizes (t, h, w)")
        if self.mlp_hidden < 1 or self.num_layers < 1 or self.eps <= 0:
            problems.append("mlp_hidden, num_layers and eps must be positive")
        if self.time_embed_dim % 2:
            problems.append(f"time_embed_dim {self.time_embed_dim} must be even (sin and cos halves)")
        if problems:
            raise ValueError(f"invalid DiTConfig {self.name!r}: " + "; ".join(problems))

    @property
    def rope(self) -> RopeSpec:
        return RopeSpec(self.rope_kind, self.rope_dim)

    @property
    def patch_channels(self) -> int:
        pt, ph, pw = self.patch
        return pt * ph * pw * self.vid_in_channels

    @property
    def out_patch_channels(self) -> int:
        pt, ph, pw = self.patch
        return pt * ph * pw * self.vid_out_channels

    def block_is_shared(self, index: int) -> bool:
        return index >= self.mm_layers

    def block_is_video_only(self, index: int) -> bool:
        return self.last_block_video_only and index == self.num_layers - 1


def _style_3b(name: str, width: int, heads: int, head_dim: int, num_layers: int, mm_layers: int,
              rope_dim: int, txt_in_dim: int) -> DiTConfig:
    return DiTConfig(
        name=name, width=width, heads=heads, head_dim=head_dim, num_layers=num_layers,
        mm_layers=mm_layers, mlp="swiglu", mlp_hidden=swiglu_hidden(width), rope_kind="mmrope3d",
        rope_dim=rope_dim, txt_in_dim=txt_in_dim, emb_dim=6 * width,
        window_methods=alternating_windows(num_layers), out_norm=True, last_block_video_only=True,
    )  # fmt: skip


def _style_7b(name: str, width: int, heads: int, head_dim: int, num_layers: int, txt_in_dim: int) -> DiTConfig:
    return DiTConfig(
        name=name, width=width, heads=heads, head_dim=head_dim, num_layers=num_layers,
        mm_layers=num_layers, mlp="gelu_tanh", mlp_hidden=4 * width, rope_kind="pixel",
        rope_dim=head_dim // 2, txt_in_dim=txt_in_dim, emb_dim=6 * width,
        window_methods=alternating_windows(num_layers),
    )  # fmt: skip


DIT_VARIANTS: dict[str, DiTConfig] = {
    "3b": _style_3b("3b", width=2560, heads=20, head_dim=128, num_layers=32, mm_layers=10, rope_dim=128,
                    txt_in_dim=5120),
    "7b": _style_7b("7b", width=3072, heads=24, head_dim=128, num_layers=36, txt_in_dim=5120),
    # The parity fixtures' tiny models (shared/fixtures/dit/tiny_*/config.json).
    "tiny-3b": _style_3b("tiny-3b", width=128, heads=2, head_dim=64, num_layers=4, mm_layers=2, rope_dim=64,
                         txt_in_dim=64),
    "tiny-7b": _style_7b("tiny-7b", width=128, heads=2, head_dim=64, num_layers=4, txt_in_dim=64),
}  # fmt: skip


def dit_config(name: str) -> DiTConfig:
    """The config of a known variant ("3b", "7b", "tiny-3b", "tiny-7b")."""
    try:
        return DIT_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown DiT variant {name!r}; known: {', '.join(DIT_VARIANTS)}") from None




# The reference's window-method names, per block.
_REFERENCE_WINDOW_METHODS = {"720pwin_by_size_bysize": "regular", "720pswin_by_size_bysize": "shifted"}
_REFERENCE_MLPS = {"swiglu": "swiglu", "normal": "gelu_tanh"}


def dit_config_from_reference(kwargs: dict[str, Any], name: str = "reference") -> DiTConfig:
    """Map the reference ``NaDiT(**kwargs)`` constructor arguments (a fixture's config.json) to a DiTConfig.

    3B style (official ``dit_v2``) is recognised by ``rope_type``/``mm_layers``; 7B style (official
    ``dit``) by ``qk_rope``. Settings this implementation does not cover raise ValueError by name.
    """
    style_3b = "rope_type" in kwargs or "mm_layers" in kwargs
    width = int(kwargs["vid_dim"])
    if int(kwargs.get("txt_dim", width)) != width:
        raise ValueError(f"{name}: txt_dim {kwargs['txt_dim']} != vid_dim {width} is not supported")
    num_layers = int(kwargs["num_layers"])
    heads, head_dim = int(kwargs["heads"]), int(kwargs["head_dim"])
    expand_ratio = int(kwargs.get("expand_ratio", 4))

    windows = {tuple(int(n) for n in w) for w in _per_block(kwargs["window"], num_layers)}
    if len(windows) != 1:
        raise ValueError(f"{name}: different window params per block are not supported: {sorted(windows)}")
    try:
        methods = tuple(_REFERENCE_WINDOW_METHODS[m] for m in _per_block(kwargs["window_method"], num_layers))
        mlp = _REFERENCE_MLPS[kwargs.get("mlp_type", "normal")]
    except KeyError as missing:
        raise ValueError(f"{name}: unsupported reference setting {missing}") from None
    for key, expected in (("ada", "single"), ("qk_bias", False), ("norm", "fusedrms"), ("qk_norm", "fusedrms")):
        if key in kwargs and kwargs[key] != expected:
            raise ValueError(f"{name}: {key}={kwargs[key]!r} is not supported (only {expected!r})")

    if style_3b:
        if kwargs.get("rope_type") != "mmrope3d":
            raise ValueError(f"{name}: rope_type {kwargs.get('rope_type')!r} is not supported (only 'mmrope3d')")
        rope_kind, rope_dim = "mmrope3d", int(kwargs["rope_dim"])
        mm_layers = int(kwargs.get("mm_layers", num_layers))
        out_norm = kwargs.get("vid_out_norm") not in (None, "None")
    else:
        if not kwargs.get("qk_rope", False):
            raise ValueError(f"{name}: a 7B-style model without qk_rope is not supported")
        if kwargs.get("shared_mlp") or kwargs.get("shared_qkv"):
            raise ValueError(f"{name}: shared_mlp/shared_qkv are not supported")
        rope_kind, rope_dim, mm_layers, out_norm = "pixel", head_dim // 2, num_layers, False

    return DiTConfig(
        name=name,
        width=width,
        heads=heads,
        head_dim=head_dim,
        num_layers=num_layers,
        mm_layers=mm_layers,
        mlp=mlp,
        mlp_hidden=swiglu_hidden(width, expand_ratio) if mlp == "swiglu" else expand_ratio * width,
        rope_kind=rope_kind,
        rope_dim=rope_dim,
        txt_in_dim=int(kwargs["txt_in_dim"]),
        emb_dim=int(kwargs["emb_dim"]),
        window_methods=methods,
        window=windows.pop(),
        vid_in_channels=int(kwargs.get("vid_in_channels", 33)),
        vid_out_channels=int(kwargs.get("vid_out_channels", 16)),
        patch=tuple(int(p) for p in kwargs.get("patch_size", (1, 2, 2))),
        out_norm=out_norm,
        last_block_video_only=style_3b,
        eps=float(kwargs.get("norm_eps", 1e-5)),
    )


def _per_block(value: Any, num_layers: int) -> list:
    """The reference accepts one setting for all blocks or a list with one per block."""
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and isinstance(value[0], int)):
        return [value] * num_layers
    if len(value) != num_layers:
        raise ValueError(f"{len(value)} per-block settings for {num_layers} blocks")
    return list(value)
