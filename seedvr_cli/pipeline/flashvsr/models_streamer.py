"""The FlashVSR models behind the ``stream.SegmentStreamer`` seam: the LQ projector and the DiT
stream a segment chunk by chunk on the reference's schedule, then the decoder of the mode turns the
latents into frames (reference/flashvsr SPEC.md §4, §5, §7).

Schedule (the same in every mode and both versions): a segment of F = 8n+1 LQ frames has
T = 2n latent frames and n-2 DiT chunks. Chunk 0 takes latent frames 0-5 and the projector clips
[0:1], [1:5], ..., [21:25] (the first clip only primes the projector); chunk i >= 1 takes latent
frames 4+2i and 5+2i and the clips [8i+17 : 8i+21], [8i+21 : 8i+25]. Each chunk's latents are
``noise - velocity``: one flow-matching step from t = 1000, where sigma is 1.

Decoders:

- ``tiny``: the TCDecoder once over the whole segment's latents after the last chunk, conditioned
  on the LQ frames [0 : F-4], as the reference's tiny pipeline does;
- ``tiny-long``: the TCDecoder after every chunk, its memory carried from chunk to chunk
  (conditioned on LQ [0:21], then [8i+13 : 8i+21]), so only one chunk of latents is ever held;
  the frames are the same as ``tiny``'s, the memory lower;
- ``full``: the Wan2.1 VAE decoder once after the last chunk, whole or in the reference's
  spatial tiles, clamped to [-1, 1].

Models are passed in already loaded (``run.flashvsr_processor`` loads them); nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from seedvr_cli.models.flashvsr.dit import DiTStreamState, FlashDiT
from seedvr_cli.models.flashvsr.dit_config import SparseAttentionSettings
from seedvr_cli.models.flashvsr.lq_proj import LQProjector, LQProjState
from seedvr_cli.models.flashvsr.tc_decoder import TCDecoder, TCDecoderState
from seedvr_cli.models.flashvsr.wan_vae import CausalCache, WanVAEDecoder
from seedvr_cli.pipeline.flashvsr.stream import StreamOptions

MODES = ("tiny", "tiny-long", "full")
FIRST_CHUNK_LATENTS = 6
LATER_CHUNK_LATENTS = 2
# Frames decoded out of chunk 0 by the streaming TCDecoder (6 latents: 4*6 - 3).
FIRST_CHUNK_FRAMES = 21
# Frames handed to the glue at a time by the one-pass TCDecoder (any split is fine for it).
_FRAMES_PER_YIELD = 8


def chunk_count(frames: int) -> int:
    """DiT chunks of a segment of ``frames`` = 8n+1 LQ frames (n-2; the reference needs n >= 3)."""
    if frames % 8 != 1 or frames < 25:
        raise ValueError(f"a FlashVSR segment streams 8n+1 >= 25 frames, got {frames}")
    return (frames - 1) // 8 - 2


def chunk_clips(chunk: int) -> list[tuple[int, int]]:
    """LQ frame ranges the projector streams for DiT chunk ``chunk``."""
    if chunk == 0:
        return [(0, 1)] + [(4 * j - 3, 4 * j + 1) for j in range(1, 7)]
    return [(8 * chunk + 17, 8 * chunk + 21), (8 * chunk + 21, 8 * chunk + 25)]


def chunk_latents(chunk: int) -> tuple[int, int]:
    """Latent frames [start, stop) of DiT chunk ``chunk``."""
    if chunk == 0:
        return 0, FIRST_CHUNK_LATENTS
    start = FIRST_CHUNK_LATENTS + LATER_CHUNK_LATENTS * (chunk - 1)
    return start, start + LATER_CHUNK_LATENTS


def chunk_condition(chunk: int) -> tuple[int, int]:
    """LQ frames [start, stop) the streaming TCDecoder is conditioned on for chunk ``chunk``: the
    frames its latents decode to."""
    if chunk == 0:
        return 0, FIRST_CHUNK_FRAMES
    return 8 * chunk + 13, 8 * chunk + 21


@dataclass
class ModelsStreamer:
    """A ``SegmentStreamer`` over loaded models (all on one device, in one dtype).

    ``prompt``: the prompt embedding ``[1, S, text_dim]``. ``tiled_vae_decode``: the full mode's
    tiled decode of a whole segment's latents to ``[1, 3, F-4, H, W]`` in [-1, 1]
    (``memory.wan_vae_tiling``, bound to the decoder by the caller), or None for one whole decode.
    ``backend``: the sparse attention's ("flex" on CUDA, "reference" elsewhere)."""

    dit: FlashDiT
    projector: LQProjector
    decoder: TCDecoder | WanVAEDecoder
    mode: str
    prompt: torch.Tensor
    backend: str = "reference"
    tiled_vae_decode: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown FlashVSR mode {self.mode!r}; known: {', '.join(MODES)}")
        wants_vae = self.mode == "full"
        if wants_vae != isinstance(self.decoder, WanVAEDecoder):
            raise ValueError(f"mode {self.mode} needs the {'Wan VAE decoder' if wants_vae else 'TCDecoder'}, "
                             f"got a {type(self.decoder).__name__}")
        # The prompt's cross-attention keys and values and the timestep embedding are the same for
        # every segment: computed once here, each stream starts from a copy with empty KV caches.
        with torch.inference_mode():
            self._base = self.dit.start_stream(self.prompt)

    def _fresh_state(self) -> DiTStreamState:
        base = self._base
        return DiTStreamState(base.time, base.time_mod, base.cross_kv, [None] * len(base.self_kv))

    def latent_chunks(self, lq: torch.Tensor, noise: torch.Tensor,
                      options: StreamOptions) -> Iterator[torch.Tensor]:  # fmt: skip
        """The segment's latents ``[1, 16, t, H/8, W/8]``, chunk by chunk (6 latent frames, then 2)."""
        settings = SparseAttentionSettings(topk_ratio=options.topk_ratio, kv_ratio=options.kv_ratio,
                                           local_range=options.local_range, backend=self.backend)  # fmt: skip
        chunks = chunk_count(lq.shape[2])
        if noise.shape[2] != chunk_latents(chunks - 1)[1]:
            raise ValueError(f"noise has {noise.shape[2]} latent frames for {lq.shape[2]} LQ frames")
        projector_state = LQProjState()
        state = self._fresh_state()
        for chunk in range(chunks):
            tokens = [self.projector.stream(lq[:, :, a:b], projector_state) for a, b in chunk_clips(chunk)]
            tokens = torch.cat([t for t in tokens if t is not None], dim=1)
            start, stop = chunk_latents(chunk)
            chunk_noise = noise[:, :, start:stop]
            yield chunk_noise - self.dit.forward_chunk(chunk_noise, tokens, state, settings)

    def stream(self, lq: torch.Tensor, noise: torch.Tensor, options: StreamOptions) -> Iterator[torch.Tensor]:
        latents = self.latent_chunks(lq, noise, options)
        if self.mode == "tiny-long":
            yield from self._tc_streaming(latents, lq)
        elif self.mode == "tiny":
            yield from self._tc_one_pass(torch.cat(list(latents), dim=2), lq)
        else:
            yield from self._vae(torch.cat(list(latents), dim=2))

    def _tc_frames(self, latents: torch.Tensor, cond: torch.Tensor, state: TCDecoderState) -> Iterator[torch.Tensor]:
        """TCDecoder frames ``[1, 3, H, W]`` mapped from its [0, 1] to the glue's [-1, 1]."""
        # The TCDecoder takes NTCHW latents.
        for frame in self.decoder.iter_frames(latents.transpose(1, 2), cond, state):
            yield frame.mul(2).sub_(1)

    def _tc_one_pass(self, latents: torch.Tensor, lq: torch.Tensor) -> Iterator[torch.Tensor]:
        batch: list[torch.Tensor] = []
        for frame in self._tc_frames(latents, lq[:, :, : lq.shape[2] - 4], TCDecoderState()):
            batch.append(frame)
            if len(batch) == _FRAMES_PER_YIELD:
                yield torch.stack(batch, dim=2)
                batch = []
        if batch:
            yield torch.stack(batch, dim=2)

    def _tc_streaming(self, latents: Iterator[torch.Tensor], lq: torch.Tensor) -> Iterator[torch.Tensor]:
        state = TCDecoderState()
        for chunk, chunk_latents_ in enumerate(latents):
            a, b = chunk_condition(chunk)
            yield torch.stack(list(self._tc_frames(chunk_latents_, lq[:, :, a:b], state)), dim=2)

    def _vae(self, latents: torch.Tensor) -> Iterator[torch.Tensor]:
        if self.tiled_vae_decode is not None:
            yield self.tiled_vae_decode(latents)
            return
        # One causal decode, handed on per latent frame (1 frame, then 4 each): the same frames as
        # the reference's decode-then-clamp without holding the whole decoded segment twice.
        cache = CausalCache()
        for frames in self.decoder.iter_decode(latents, cache):
            yield frames.clamp_(-1, 1)
