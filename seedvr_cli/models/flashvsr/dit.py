"""FlashVSR's streaming DiT: the Wan2.1-T2V-1.3B transformer run as a one-step (t=1000) velocity
predictor over a video, one chunk of latent frames at a time (reference/flashvsr SPEC.md §3-6).

A stream starts with ``start_stream(context)`` (the prompt's cross-attention keys and values and
the timestep embedding, computed once) and goes on with ``forward_chunk`` per chunk: 6 latent
frames first, then 2 at a time. Each block's self-attention keys and values (post-norm, post-RoPE,
in window order) are carried in the ``DiTStreamState``; a chunk attends to them and to itself,
block-sparsely, and the cache then drops its oldest time slice of windows when it holds more than
``int(kv_ratio)`` slices. It drops one slice per chunk, as the reference does, and every chunk
after the first adds one, so a stream holds max(3, int(kv_ratio)) slices of windows whatever the
clip's length. Frame positions (RoPE) continue across chunks. Names and shapes follow the
published ``diffusion_pytorch_model_streaming_dmd.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seedvr_cli.models.flashvsr.dit_config import WINDOW, FlashDiTConfig, SparseAttentionSettings
from seedvr_cli.models.flashvsr.sparse_attention import (
    block_sparse_attention,
    local_window_mask,
    select_blocks,
    topk_blocks,
)
from seedvr_cli.models.norms import rms_norm

TIMESTEP = 1000.0  # the one DMD step
THETA = 10000.0  # base of the timestep embedding's and of RoPE's frequencies


# ------------------------------------------------------------------------------------------ maths


def timestep_embedding(dim: int, timestep: Tensor) -> Tensor:
    """``[cos, sin]`` of ``timestep * 10000^(-i/half)``, computed in float64, cast to the input dtype."""
    half = dim // 2
    freqs = torch.pow(THETA, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = torch.outer(timestep.to(torch.float64), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(timestep.dtype)


def rope_angles(dims: tuple[int, int, int], grid: tuple[int, int, int], first_frame: int,
                device: torch.device) -> Tensor:  # fmt: skip
    """Complex rotations ``[f*h*w, 1, head_dim/2]`` (float64) for a token grid whose frames start at
    ``first_frame``; rows and columns start at 0."""
    starts = (first_frame, 0, 0)
    parts = []
    for axis, (dim, size) in enumerate(zip(dims, grid)):
        freqs = 1.0 / THETA ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
        positions = torch.arange(starts[axis], starts[axis] + size, dtype=torch.float64, device=device)
        table = torch.polar(torch.ones(size, dim // 2, dtype=torch.float64, device=device), torch.outer(positions, freqs))
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        parts.append(table.view(shape).expand(*grid, dim // 2))
    return torch.cat(parts, dim=-1).reshape(-1, 1, sum(dims) // 2)


def apply_rope(x: Tensor, angles: Tensor, heads: int) -> Tensor:
    """Rotate adjacent pairs of each head's channels of ``x`` ``[L, dim]`` (in float64)."""
    pairs = x.to(torch.float64).reshape(x.shape[0], heads, -1, 2)
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * angles)
    return rotated.reshape(x.shape).to(x.dtype)


def window_partition(x: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """``[f*h*w, dim]`` tokens -> ``[windows, 128, dim]``, windows ordered (time slice, row, col)."""
    f, h, w = grid
    pf, ph, pw = WINDOW
    return rearrange(x, "(nf pf nh ph nw pw) d -> (nf nh nw) (pf ph pw) d",
                     nf=f // pf, nh=h // ph, nw=w // pw, pf=pf, ph=ph, pw=pw)  # fmt: skip


def window_merge(x: Tensor, grid: tuple[int, int, int]) -> Tensor:
    f, h, w = grid
    pf, ph, pw = WINDOW
    return rearrange(x, "(nf nh nw) (pf ph pw) d -> (nf pf nh ph nw pw) d",
                     nf=f // pf, nh=h // ph, nw=w // pw, pf=pf, ph=ph, pw=pw)  # fmt: skip


# ------------------------------------------------------------------------------------------ state


@dataclass
class KVCache:
    """One block's self-attention keys and values ``[windows, 128, dim]``, oldest time slice first."""

    k: Tensor
    v: Tensor


@dataclass
class DiTStreamState:
    """Everything a stream carries from chunk to chunk; nothing else in the model changes."""

    time: Tensor  # [1, dim] timestep embedding (the head's modulation)
    time_mod: Tensor  # [1, 6, dim] per-block modulation
    cross_kv: list[tuple[Tensor, Tensor]] = field(repr=False)  # per block: prompt keys, values [1, S, dim]
    self_kv: list[KVCache | None] = field(repr=False)
    next_frame: int = 0  # RoPE frame position of the next chunk's first latent frame
    token_grid: tuple[int, int] | None = None  # (rows, cols) of tokens, fixed for a stream

    def cache_windows(self) -> int:
        """Windows held by the largest block cache (the stream's memory, in 128-token blocks)."""
        return max((c.k.shape[0] for c in self.self_kv if c is not None), default=0)


@dataclass(frozen=True)
class ChunkLayout:
    """Shapes of one chunk, shared by all blocks."""

    grid: tuple[int, int, int]  # latent tokens (frames, rows, cols)
    angles: Tensor  # RoPE rotations of the chunk's tokens
    local: Tensor  # [S, S] local window mask
    topk: int


# ------------------------------------------------------------------------------------------ modules


class WanRMSNorm(nn.Module):
    """RMSNorm over the whole width in float32, cast back, times ``weight`` (Wan's order)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, None, self.eps) * self.weight


class AttentionProjections(nn.Module):
    """The q/k/v/o projections and q/k norms both of a block's attentions have (checkpoint names)."""

    def __init__(self, config: FlashDiTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.q, self.k, self.v, self.o = (nn.Linear(config.dim, config.dim) for _ in range(4))
        self.norm_q = WanRMSNorm(config.dim, config.eps)
        self.norm_k = WanRMSNorm(config.dim, config.eps)


class SelfAttention(AttentionProjections):
    def forward(self, x: Tensor, layout: ChunkLayout, cache: KVCache | None,
                settings: SparseAttentionSettings) -> tuple[Tensor, KVCache]:  # fmt: skip
        """``x`` ``[L, dim]`` -> (output ``[L, dim]``, this block's cache after the chunk)."""
        q = apply_rope(self.norm_q(self.q(x)), layout.angles, self.heads)
        k = apply_rope(self.norm_k(self.k(x)), layout.angles, self.heads)
        q_w = window_partition(q, layout.grid)
        k_w = window_partition(k, layout.grid)
        v_w = window_partition(self.v(x), layout.grid)
        if cache is not None:
            k_w = torch.cat([cache.k, k_w])
            v_w = torch.cat([cache.v, v_w])
        blocks = select_blocks(q_w, k_w, self.heads, layout.local, layout.topk)
        out = block_sparse_attention(self._heads_first(q_w), self._heads_first(k_w), self._heads_first(v_w),
                                     blocks, settings.backend)  # fmt: skip
        out = rearrange(out, "n (w t) d -> w t (n d)", t=q_w.shape[1])
        spatial = layout.local.shape[0]
        if k_w.shape[0] // spatial > settings.kv_slices:
            # One time slice leaves per chunk, as in the reference (each later chunk adds one).
            k_w, v_w = k_w[spatial:], v_w[spatial:]
        return self.o(window_merge(out, layout.grid)), KVCache(k_w, v_w)

    def _heads_first(self, windows: Tensor) -> Tensor:
        return rearrange(windows, "w t (n d) -> n (w t) d", n=self.heads)


class CrossAttention(AttentionProjections):
    def prompt_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.norm_k(self.k(context)), self.v(context)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        split = lambda t: rearrange(t, "b s (n d) -> b n s d", n=self.heads)  # noqa: E731
        q = split(self.norm_q(self.q(x)))
        out = F.scaled_dot_product_attention(q, split(kv[0]), split(kv[1]))
        return self.o(rearrange(out, "b n s d -> b s (n d)"))


class DiTBlock(nn.Module):
    def __init__(self, config: FlashDiTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.self_attn = SelfAttention(config)
        self.cross_attn = CrossAttention(config)
        self.norm1 = nn.LayerNorm(dim, eps=config.eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=config.eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=config.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.ffn_dim, dim))  # fmt: skip
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x: Tensor, time_mod: Tensor, cross_kv: tuple[Tensor, Tensor], layout: ChunkLayout,
                cache: KVCache | None, settings: SparseAttentionSettings) -> tuple[Tensor, KVCache]:  # fmt: skip
        """``x`` ``[1, L, dim]``."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.modulation + time_mod).chunk(6, dim=1)
        attn, cache = self.self_attn((self.norm1(x) * (1 + scale_msa) + shift_msa)[0], layout, cache, settings)
        x = x + gate_msa * attn[None]
        x = x + self.cross_attn(self.norm3(x), cross_kv)
        x = x + gate_mlp * self.ffn(self.norm2(x) * (1 + scale_mlp) + shift_mlp)
        return x, cache


class Head(nn.Module):
    def __init__(self, config: FlashDiTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        patch_volume = config.patch[0] * config.patch[1] * config.patch[2]
        self.head = nn.Linear(config.dim, config.out_channels * patch_volume)
        self.modulation = nn.Parameter(torch.zeros(1, 2, config.dim))

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        # Modulated by the timestep embedding itself, not by the blocks' projection of it.
        shift, scale = (self.modulation + time[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class FlashDiT(nn.Module):
    """The streaming DiT; ``forward_chunk`` predicts the velocity of one chunk of noise latents."""

    def __init__(self, config: FlashDiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, kernel_size=config.patch, stride=config.patch)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))  # fmt: skip
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)

    def start_stream(self, context: Tensor, timestep: float = TIMESTEP) -> DiTStreamState:
        """A fresh stream for the prompt embedding ``context`` ``[1, S, text_dim]``."""
        param = self.patch_embedding.weight
        steps = torch.tensor([timestep], dtype=param.dtype, device=param.device)
        time = self.time_embedding(timestep_embedding(self.config.freq_dim, steps))
        time_mod = self.time_projection(time).unflatten(1, (6, self.config.dim))
        prompt = self.text_embedding(context.to(param.dtype))
        cross_kv = [block.cross_attn.prompt_kv(prompt) for block in self.blocks]
        return DiTStreamState(time, time_mod, cross_kv, [None] * len(self.blocks))

    def forward_chunk(self, latents: Tensor, lq_tokens: Tensor, state: DiTStreamState,
                      settings: SparseAttentionSettings) -> Tensor:  # fmt: skip
        """Velocity ``[1, C, f, H, W]`` of noise ``latents`` of that shape, conditioned on the LQ
        projector's tokens of the same frames ``[1, f*(H/2)*(W/2), dim]``; advances ``state``."""
        if latents.shape[0] != 1:
            raise ValueError(f"the streaming DiT takes one video at a time, got a batch of {latents.shape[0]}")
        x = self.patch_embedding(latents.to(self.patch_embedding.weight.dtype))
        grid = tuple(x.shape[2:])
        layout = self._layout(grid, state, settings)
        x = rearrange(x, "b c f h w -> b (f h w) c") + lq_tokens.to(x.dtype)
        for i, block in enumerate(self.blocks):
            x, state.self_kv[i] = block(x, state.time_mod, state.cross_kv[i], layout, state.self_kv[i], settings)
        state.next_frame += grid[0]
        x = self.head(x, state.time)
        pt, ph, pw = self.config.patch
        return rearrange(x, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
                         f=grid[0], h=grid[1], w=grid[2], pf=pt, ph=ph, pw=pw)  # fmt: skip

    def _layout(self, grid: tuple[int, int, int], state: DiTStreamState,
                settings: SparseAttentionSettings) -> ChunkLayout:  # fmt: skip
        f, h, w = grid
        if f % WINDOW[0] or h % WINDOW[1] or w % WINDOW[2]:
            raise ValueError(f"latent token grid {grid} must be a multiple of the {WINDOW} attention windows "
                             "(frames even, output height and width multiples of 128 pixels)")  # fmt: skip
        if state.token_grid not in (None, (h, w)):
            raise ValueError(f"token grid {(h, w)} differs from the stream's {state.token_grid}")
        state.token_grid = (h, w)
        device = self.patch_embedding.weight.device
        rows, cols = h // WINDOW[1], w // WINDOW[2]
        return ChunkLayout(
            grid=grid,
            angles=rope_angles(self.config.rope_dims, grid, state.next_frame, device),
            local=local_window_mask(rows, cols, settings.local_range, device),
            topk=topk_blocks(rows * cols, settings.topk_ratio),
        )
