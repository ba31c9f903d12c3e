"""The SeedVR2 NaDiT transformer (3B and 7B variants by ``DiTConfig``; docs/reference-behaviour.md R23-R29).

Module and parameter names equal the published checkpoints' keys, so
``NaDiT(dit_config("3b")).load_state_dict(state_dict, strict=True)`` needs no key map.

Layout ("NA", native resolution): every sample's latent positions are packed row-wise, no padding.
``forward(vid (L, 33), txt (Lt, txt_in_dim), vid_shape (b, 3), txt_shape (b, 1), timestep (b,))``
returns the velocity (L, 16) in the same row layout. Multi-sample calls use each sample's own text
(the intended semantics; the official 3B reads later samples' text q/k from the wrong rows).

The forward is a straight line: ``embed -> run the blocks -> head``. The block loop is a seam:

    vid, txt = runner(model.blocks, vid, txt, ctx)

where ``runner`` defaults to ``run_blocks`` (a plain loop calling ``block(vid, txt, ctx)``). A
memory manager (BlockSwap: prefetch block i+1 while block i computes, offload afterwards) passes
its own runner as ``forward(..., block_runner=runner)`` or sets ``model.block_runner``; the blocks
and the model stay untouched. ``BlockContext`` carries everything a block needs besides its own
weights (timestep embedding, window plans, text rope tables, attention backend), so a runner only
moves blocks and calls them in order.

Attention backend: ``NaDiT(config, attention_backend="sdpa")``, the ``model.attention_backend``
attribute, or ``forward(..., attention_backend=name)``; names are the keys of
``attention.ATTENTION_BACKENDS`` ("sdpa" default, "reference" per-window oracle).

Dtypes: the model computes in ``model.compute_dtype`` (default: its parameters' dtype); RMSNorm statistics, the timestep sinusoid,
RoPE angles and rotation, and the text mean over windows are float32 whatever that dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    PACKED_BACKENDS,
    AttentionBackend,
    WindowPlan,
    attention_backend,
    build_window_plan,
    text_rope_tables,
    with_packed_layout,
)
from .dit_config import DiTConfig
from .norms import RMSNorm, modulated_rms_norm, rms_norm
from .rope import RotaryEmbedding3d, apply_rope

ATTN, MLP = 0, 1  # layer index into the timestep embedding's [d][2][3] layout
SHIFT, SCALE, GATE = 0, 1, 2
_PLAN_CACHE_SIZE = 8


@dataclass(frozen=True)
class BlockContext:
    """Per-call inputs shared by every block: built once by ``NaDiT.context``."""

    emb: Tensor  # (b, d, 2, 3): timestep embedding read as [channel][layer][shift, scale, gate]
    vid_lens: tuple[int, ...]  # video tokens per sample (after patching)
    txt_lens: tuple[int, ...]
    # The same lengths on emb's device (None for one sample), made once so that no block copies them.
    vid_repeats: Tensor | None
    txt_repeats: Tensor | None
    plans: dict[str, WindowPlan]  # by window method
    txt_rope: tuple[Tensor, Tensor] | None  # cos/sin of the packed text tokens (3B only)
    attention: AttentionBackend

    def modulation(self, ada: AdaSingle, layer: int, stream: str) -> tuple[Tensor, Tensor, Tensor]:
        """(shift, scale, gate) of ``layer`` for every row of ``stream`` ("vid" or "txt")."""
        lens, repeats = (self.vid_lens, self.vid_repeats) if stream == "vid" else (self.txt_lens, self.txt_repeats)
        return tuple(_per_row(p, lens, repeats) for p in ada.modulation(self.emb, layer))


BlockRunner = Callable[[nn.ModuleList, Tensor, Tensor, BlockContext], tuple[Tensor, Tensor]]


def run_blocks(blocks: nn.ModuleList, vid: Tensor, txt: Tensor, ctx: BlockContext) -> tuple[Tensor, Tensor]:
    """The default block loop: every block in order."""
    for block in blocks:
        vid, txt = block(vid, txt, ctx)
    return vid, txt


def _per_row(per_sample: Tensor, lens: Sequence[int], repeats: Tensor | None = None) -> Tensor:
    # One sample (the usual call) broadcasts; several samples get their rows' values.
    if per_sample.shape[0] == 1:
        return per_sample
    if repeats is None:
        repeats = torch.tensor(lens, device=per_sample.device)
    # output_size: without it repeat_interleave reads the repeats back to the host (a sync).
    return per_sample.repeat_interleave(repeats, dim=0, output_size=sum(lens))


# ---------------------------------------------------------------------------------------------
# Building blocks


class StreamPair(nn.Module):
    """A module per stream: ``vid`` and ``txt`` (separate weights), or one ``all`` used for both.

    ``video_only`` (3B last block): no text module at all.
    """

    def __init__(self, make: Callable[[], nn.Module], shared: bool, video_only: bool = False) -> None:
        super().__init__()
        self.shared = shared
        self.video_only = video_only
        if shared:
            self.all = make()
        else:
            self.vid = make()
            if not video_only:
                self.txt = make()

    @property
    def for_vid(self) -> nn.Module:
        return self.all if self.shared else self.vid

    @property
    def for_txt(self) -> nn.Module:
        if self.video_only:
            raise RuntimeError("this module has no text branch (video-only last block)")
        return self.all if self.shared else self.txt


class AdaSingle(nn.Module):
    """Learned offsets to the shared timestep embedding ("ada: single", docs/reference-behaviour.md R24)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        for name in ("attn_shift", "attn_scale", "attn_gate", "mlp_shift", "mlp_scale", "mlp_gate"):
            self.register_parameter(name, nn.Parameter(torch.zeros(dim)))

    def modulation(self, emb: Tensor, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        prefix = ("attn", "mlp")[layer]
        return tuple(
            emb[:, :, layer, g] + getattr(self, f"{prefix}_{name}")
            for g, name in ((SHIFT, "shift"), (SCALE, "scale"), (GATE, "gate"))
        )


class OutAda(nn.Module):
    """3B output modulation: offsets to the attn-layer shift/scale slice of the embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_shift = nn.Parameter(torch.zeros(dim))
        self.out_scale = nn.Parameter(torch.zeros(dim))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        # Registration order follows the checkpoint's key order.
        self.proj_in_gate = nn.Linear(dim, hidden, bias=False)
        self.proj_out = nn.Linear(hidden, dim, bias=False)
        self.proj_in = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_out(F.silu(self.proj_in_gate(x)) * self.proj_in(x))


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        # The tanh approximation is what the weights were trained with (exact GELU is off by ~4e-4).
        return self.proj_out(F.gelu(self.proj_in(x), approximate="tanh"))


class PatchIn(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.patch = config.patch
        self.proj = nn.Linear(config.patch_channels, config.width)

    def forward(self, vid: Tensor, latent_grids: Sequence[tuple[int, int, int]]) -> Tensor:
        pt, ph, pw = self.patch
        samples = vid.split([math.prod(g) for g in latent_grids])
        patched = []
        for x, (t, h, w) in zip(samples, latent_grids):
            x = x.reshape(t // pt, pt, h // ph, ph, w // pw, pw, -1)
            patched.append(x.permute(0, 2, 4, 1, 3, 5, 6).reshape((t // pt) * (h // ph) * (w // pw), -1))
        return self.proj(torch.cat(patched))


class PatchOut(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.patch = config.patch
        self.proj = nn.Linear(config.width, config.out_patch_channels)

    def forward(self, vid: Tensor, latent_grids: Sequence[tuple[int, int, int]]) -> Tensor:
        pt, ph, pw = self.patch
        vid = self.proj(vid)
        samples = vid.split([math.prod(g) // (pt * ph * pw) for g in latent_grids])
        unpatched = []
        for x, (t, h, w) in zip(samples, latent_grids):
            x = x.reshape(t // pt, h // ph, w // pw, pt, ph, pw, -1)
            unpatched.append(x.permute(0, 3, 1, 4, 2, 5, 6).reshape(t * h * w, -1))
        return torch.cat(unpatched)


def timestep_sinusoid(timestep: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``[sin(t·w_i) | cos(t·w_i)]``, ``w_i = max_period^(-i/(dim/2))``, float32 (t reaches 1000 rad).

    Computed on the CPU (b x dim values) and moved: a GPU's sin/cos of 1000-rad arguments differ
    from the CPU's by a few ulps, which the network amplifies to ~1e-5 at the output.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
    angles = timestep.detach().float().cpu()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(timestep.device)


class TimeEmbedding(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.sinusoid_dim = config.time_embed_dim
        self.proj_in = nn.Linear(config.time_embed_dim, config.width)
        self.proj_hid = nn.Linear(config.width, config.width)
        self.proj_out = nn.Linear(config.width, config.emb_dim)

    def forward(self, timestep: Tensor, dtype: torch.dtype) -> Tensor:
        x = timestep_sinusoid(timestep, self.sinusoid_dim).to(dtype)
        return self.proj_out(F.silu(self.proj_hid(F.silu(self.proj_in(x)))))


class WindowAttention(nn.Module):
    """q/k/v per stream, q/k RMSNorm per head, RoPE, windowed attention, output projection per stream."""

    def __init__(self, config: DiTConfig, shared: bool) -> None:
        super().__init__()
        d, inner = config.width, config.heads * config.head_dim
        self.heads, self.head_dim = config.heads, config.head_dim
        self.proj_qkv = StreamPair(lambda: nn.Linear(d, 3 * inner, bias=False), shared)
        self.proj_out = StreamPair(lambda: nn.Linear(inner, d), shared)
        self.norm_q = StreamPair(lambda: RMSNorm(config.head_dim, config.eps), shared)
        self.norm_k = StreamPair(lambda: RMSNorm(config.head_dim, config.eps), shared)
        self.rope = RotaryEmbedding3d(config.rope)

    def _qkv(self, x: Tensor, stream: str) -> tuple[Tensor, Tensor, Tensor]:
        pick = "for_vid" if stream == "vid" else "for_txt"
        qkv = getattr(self.proj_qkv, pick)(x).view(x.shape[0], 3, self.heads, self.head_dim)
        q, k, v = qkv.unbind(dim=1)
        return getattr(self.norm_q, pick)(q), getattr(self.norm_k, pick)(k), v

    def forward(
        self, vid: Tensor, txt: Tensor, plan: WindowPlan, ctx: BlockContext, need_txt: bool
    ) -> tuple[Tensor, Tensor | None]:
        vid_qkv = self._qkv(vid, "vid")
        q_txt, k_txt, v_txt = self._qkv(txt, "txt")
        if ctx.txt_rope is not None:
            q_txt, k_txt = apply_rope(q_txt, *ctx.txt_rope), apply_rope(k_txt, *ctx.txt_rope)
        out_vid, out_txt = ctx.attention(vid_qkv, (q_txt, k_txt, v_txt), plan, need_txt)
        out_vid = self.proj_out.for_vid(out_vid.flatten(1))
        if out_txt is not None:
            out_txt = self.proj_out.for_txt(out_txt.flatten(1))
        return out_vid, out_txt


class NaDiTBlock(nn.Module):
    """One "mmdit_sr" block (docs/reference-behaviour.md R25). The streams meet only inside attention.

    ``video_only`` (3B last block): text enters attention normalised but unmodulated and is not
    updated. In the last block of either variant the text stream's output is never used, so it is
    not computed (the returned text is the input text).
    """

    def __init__(self, config: DiTConfig, index: int) -> None:
        super().__init__()
        shared = config.block_is_shared(index)
        self.video_only = config.block_is_video_only(index)
        self.is_last = index == config.num_layers - 1
        self.window_method = config.window_methods[index]
        self.eps = config.eps
        mlp = SwiGLU if config.mlp == "swiglu" else GeluMLP
        self.attn = WindowAttention(config, shared)
        self.mlp = StreamPair(lambda: mlp(config.width, config.mlp_hidden), shared, self.video_only)
        self.ada = StreamPair(lambda: AdaSingle(config.width), shared, self.video_only)

    def forward(self, vid: Tensor, txt: Tensor, ctx: BlockContext) -> tuple[Tensor, Tensor]:
        v_shift, v_scale, v_gate = ctx.modulation(self.ada.for_vid, ATTN, "vid")
        attn_vid = modulated_rms_norm(vid, v_scale, v_shift, eps=self.eps)
        if self.video_only:
            attn_txt = rms_norm(txt, eps=self.eps)
        else:
            t_shift, t_scale, t_gate = ctx.modulation(self.ada.for_txt, ATTN, "txt")
            attn_txt = modulated_rms_norm(txt, t_scale, t_shift, eps=self.eps)
        out_vid, out_txt = self.attn(attn_vid, attn_txt, ctx.plans[self.window_method], ctx, not self.is_last)
        vid = vid + out_vid.mul_(v_gate)
        vid = vid + self._mlp(vid, self.mlp.for_vid, self.ada.for_vid, ctx, "vid")
        if self.is_last:
            return vid, txt
        txt = txt + (out_txt if self.video_only else out_txt.mul_(t_gate))
        if not self.video_only:
            txt = txt + self._mlp(txt, self.mlp.for_txt, self.ada.for_txt, ctx, "txt")
        return vid, txt

    def _mlp(self, x: Tensor, mlp: nn.Module, ada: AdaSingle, ctx: BlockContext, stream: str) -> Tensor:
        shift, scale, gate = ctx.modulation(ada, MLP, stream)
        return mlp(modulated_rms_norm(x, scale, shift, eps=self.eps)).mul_(gate)


# ---------------------------------------------------------------------------------------------
# The model


class NaDiT(nn.Module):
    """SeedVR2 NaDiT; see the module docstring for the call, the block-loop seam and backends."""

    def __init__(self, config: DiTConfig, attention_backend: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.attention_backend = attention_backend
        self.block_runner: BlockRunner = run_blocks
        # Activations' dtype. None: that of the (plain) weights. Loaders of compressed files (fp8,
        # GGUF), whose weights are upcast at use, set it to the dtype to compute in.
        self.compute_dtype: torch.dtype | None = None
        self.vid_in = PatchIn(config)
        self.txt_in = nn.Linear(config.txt_in_dim, config.width)
        self.emb_in = TimeEmbedding(config)
        self.blocks = nn.ModuleList(NaDiTBlock(config, i) for i in range(config.num_layers))
        if config.out_norm:
            self.vid_out_norm = RMSNorm(config.width, config.eps)
            self.vid_out_ada = OutAda(config.width)
        self.vid_out = PatchOut(config)
        self._plan_cache: dict[tuple, WindowPlan] = {}

    def forward(
        self,
        vid: Tensor,
        txt: Tensor,
        vid_shape: Tensor,
        txt_shape: Tensor,
        timestep: Tensor,
        *,
        block_runner: BlockRunner | None = None,
        attention_backend: str | None = None,
    ) -> Tensor:
        latent_grids, txt_lens = self._check_inputs(vid, txt, vid_shape, txt_shape, timestep)
        dtype = self.compute_dtype or self.vid_in.proj.weight.dtype
        grids = self.token_grids(latent_grids)

        x = self.vid_in(vid.to(dtype), latent_grids)
        t = self.txt_in(txt.to(dtype))
        emb = self.emb_in(timestep.reshape(-1), dtype)
        ctx = self.context(emb, grids, txt_lens, x.device, attention_backend)
        x, _ = (block_runner or self.block_runner)(self.blocks, x, t, ctx)
        return self.head(x, ctx, latent_grids)

    def head(self, vid: Tensor, ctx: BlockContext, latent_grids: Sequence[tuple[int, int, int]]) -> Tensor:
        if self.config.out_norm:
            vid = self.vid_out_norm(vid)
            # The reference reuses the attn-layer shift/scale slice of the embedding here.
            shift = _per_row(ctx.emb[:, :, ATTN, SHIFT] + self.vid_out_ada.out_shift, ctx.vid_lens, ctx.vid_repeats)
            scale = _per_row(ctx.emb[:, :, ATTN, SCALE] + self.vid_out_ada.out_scale, ctx.vid_lens, ctx.vid_repeats)
            vid = vid * scale + shift
        return self.vid_out(vid, latent_grids)

    def token_grids(self, latent_grids: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return [tuple(n // p for n, p in zip(g, self.config.patch)) for g in latent_grids]

    def context(
        self,
        emb: Tensor,
        grids: Sequence[tuple[int, int, int]],
        txt_lens: Sequence[int],
        device: torch.device,
        backend: str | None = None,
    ) -> BlockContext:
        methods = sorted(set(self.config.window_methods))
        rope = self.config.rope
        name = backend or self.attention_backend
        vid_lens = tuple(math.prod(g) for g in grids)
        several = len(vid_lens) > 1
        return BlockContext(
            emb=emb.view(emb.shape[0], self.config.width, 2, 3),
            vid_lens=vid_lens,
            txt_lens=tuple(txt_lens),
            vid_repeats=torch.tensor(vid_lens, device=emb.device) if several else None,
            txt_repeats=torch.tensor(tuple(txt_lens), device=emb.device) if several else None,
            plans={m: self.window_plan(grids, txt_lens, m, device, backend=name) for m in methods},
            txt_rope=text_rope_tables(rope, txt_lens, device=device),
            attention=attention_backend(name),
        )

    def window_plan(self, grids, txt_lens, method: str, device: torch.device, backend: str = "sdpa") -> WindowPlan:
        """The partition plan for these shapes, cached (index tensors on ``device``); for a backend
        that attends to all windows in one call, with the packed layout it reads."""
        packed = backend in PACKED_BACKENDS
        key = (tuple(map(tuple, grids)), tuple(txt_lens), method, str(device), backend if packed else None)
        plan = self._plan_cache.get(key)
        if plan is None:
            if len(self._plan_cache) >= _PLAN_CACHE_SIZE:
                self._plan_cache.clear()
            plan = build_window_plan(grids, txt_lens, method, self.config.window, self.config.rope, device)
            if packed:
                plan = with_packed_layout(plan, self.config.head_dim, backend)
            self._plan_cache[key] = plan
        return plan

    def _check_inputs(self, vid, txt, vid_shape, txt_shape, timestep):
        latent_grids = [tuple(int(n) for n in row) for row in vid_shape.tolist()]
        txt_lens = [int(row[0]) for row in txt_shape.reshape(len(txt_shape), -1).tolist()]
        cfg = self.config
        if len(latent_grids) != len(txt_lens) or timestep.numel() != len(latent_grids):
            raise ValueError(
                f"{len(latent_grids)} video shapes, {len(txt_lens)} text shapes and {timestep.numel()} timesteps"
            )
        for grid in latent_grids:
            if any(n % p for n, p in zip(grid, cfg.patch)):
                raise ValueError(f"latent shape {grid} is not divisible by the patch {cfg.patch}")
        if vid.shape != (sum(math.prod(g) for g in latent_grids), cfg.vid_in_channels):
            raise ValueError(f"vid has shape {tuple(vid.shape)}; vid_shape {latent_grids} needs "
                             f"({sum(math.prod(g) for g in latent_grids)}, {cfg.vid_in_channels})")  # fmt: skip
        if txt.shape != (sum(txt_lens), cfg.txt_in_dim):
            raise ValueError(f"txt has shape {tuple(txt.shape)}; txt_shape needs ({sum(txt_lens)}, {cfg.txt_in_dim})")
        return latent_grids, txt_lens
