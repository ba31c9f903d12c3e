"""Hyper-parameters of the FlashVSR streaming DiT (Wan2.1-T2V-1.3B topology) and its variants.

``"real"`` is the published model (1,418,996,800 parameters, reference/flashvsr WEIGHTS.md);
``"tiny"`` is the parity fixtures' model (shared/fixtures/flashvsr ``tiny_io`` metadata).
"""

from __future__ import annotations

from dataclasses import dataclass

# Attention windows (= sparse attention blocks) in latent tokens: 2 frames x 8 x 8.
WINDOW = (2, 8, 8)


@dataclass(frozen=True)
class FlashDiTConfig:
    name: str
    dim: int = 1536
    heads: int = 12
    num_layers: int = 30
    ffn_dim: int = 8960
    freq_dim: int = 256  # sinusoidal timestep embedding size
    text_dim: int = 4096  # prompt embedding width (UMT5)
    in_channels: int = 16
    out_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        problems = []
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} is not a multiple of heads {self.heads}")
        elif any(part % 2 for part in self.rope_dims):
            problems.append(f"head_dim {self.head_dim} must split into even RoPE parts, got {self.rope_dims}")
        if self.freq_dim % 2:
            problems.append(f"freq_dim {self.freq_dim} must be even (cos and sin halves)")
        if problems:
            raise ValueError(f"FlashVSR DiT config {self.name}: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Head dims rotated by the frame, row and column positions."""
        third = self.head_dim // 3
        return self.head_dim - 2 * third, third, third


@dataclass(frozen=True)
class SparseAttentionSettings:
    """The runtime knobs of the block-sparse self-attention and the KV cache (reference defaults:
    ``topk_ratio_for(2.0, H, W)``, kv_ratio 3, local_range 11)."""

    topk_ratio: float
    kv_ratio: float = 3.0
    local_range: int = 11
    backend: str = "reference"

    def __post_init__(self) -> None:
        if self.kv_ratio < 1:
            raise ValueError(f"kv_ratio must be >= 1 (time slices kept in the KV cache), got {self.kv_ratio}")
        if self.local_range < 1:
            raise ValueError(f"local_range must be >= 1, got {self.local_range}")

    @property
    def kv_slices(self) -> int:
        """Time slices of windows the KV cache keeps after a step (the reference's ``int(kv_ratio)``)."""
        return int(self.kv_ratio)


FLASH_DIT_VARIANTS = {
    "real": FlashDiTConfig("real"),
    "tiny": FlashDiTConfig("tiny", dim=48, heads=2, num_layers=2, ffn_dim=96, freq_dim=16, text_dim=32),
}


def flash_dit_config(name: str) -> FlashDiTConfig:
    try:
        return FLASH_DIT_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown FlashVSR DiT variant {name!r}; known: {', '.join(FLASH_DIT_VARIANTS)}") from None
