"""One temporal segment through FlashVSR: preprocessing, the streamed models, colour fix, tiles.

``SegmentStreamer`` is the seam to the models (LQ projector, DiT with its KV cache, TCDecoder or
Wan VAE decoder): given the LQ video of one segment at output size and its noise, it yields
decoded frames chunk by chunk, in order. Everything around it is here and is the same for every
mode: ``upscale_segment``

1. pads the segment in time (``preprocess.padded_indices``) and upscales it (``upscale_and_crop``),
2. cuts it into DiT tiles, or takes the whole frame as one tile (``tiles``),
3. per tile: draws the noise from the seed on the CPU (the same on every device), streams the
   tile, colour-fixes each chunk against its LQ frames (``color.adain_color_fix``),
4. feathers the tiles together, maps to [0, 1] and trims the padding (a one-frame segment, a
   still, becomes the temporal median of its outputs, as the node does for single images).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from seedvr_cli.pipeline.flashvsr.color import adain_color_fix
from seedvr_cli.pipeline.flashvsr.preprocess import TAIL_FRAMES, padded_indices, unit_range, upscale_and_crop
from seedvr_cli.pipeline.flashvsr.tiles import feather_mask, output_tile, plan_tiles

# The reference's top-k share is given for a 768x1280 frame and scaled by the frame's area.
_REFERENCE_AREA = 768 * 1280
LATENT_CHANNELS = 16
LATENT_SCALE = 8  # pixels per latent pixel
FRAMES_PER_LATENT = 4


@dataclass(frozen=True)
class StreamOptions:
    """Per call: the sparse attention's knobs for this tile's size (see SPEC.md section 6)."""

    topk_ratio: float  # sparse_ratio * 768 * 1280 / (height * width)
    kv_ratio: float
    local_range: int


class SegmentStreamer(Protocol):
    """What the FlashVSR models provide to the glue (one per worker, loaded once)."""

    def stream(self, lq: torch.Tensor, noise: torch.Tensor, options: StreamOptions) -> Iterable[torch.Tensor]:
        """Upscale one segment (or one DiT tile of it), chunk by chunk.

        ``lq``: ``[1, 3, F, H, W]`` in [-1, 1], compute dtype, on the worker's device; F = 8n+1 >= 25,
        H and W multiples of 128. ``noise``: ``[1, 16, (F-1)//4, H/8, W/8]``, same dtype and device.
        Yields ``[1, 3, f, H, W]`` frames in about [-1, 1], F - 4 of them in all, in order (the
        reference schedule gives 21 for the first DiT chunk and 8 per later one; any split is fine).
        Every call starts fresh: no KV cache, projector or decoder state survives from an earlier call.
        """
        ...


@dataclass(frozen=True)
class SegmentSettings:
    """The pixel-changing FlashVSR settings of a run (``config.FlashVSRSettings`` fills them)."""

    scale: int
    sparse_ratio: float
    kv_ratio: float
    local_range: int
    color_fix: bool
    seed: int
    tiled_dit: bool = False
    tile_size: int = 256  # input pixels
    tile_overlap: int = 24  # input pixels


def stream_options(settings: SegmentSettings, height: int, width: int) -> StreamOptions:
    return StreamOptions(topk_ratio=settings.sparse_ratio * _REFERENCE_AREA / (height * width),
                         kv_ratio=settings.kv_ratio, local_range=settings.local_range)


def segment_noise(frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """The noise of one streamed tile, float32 on the CPU: a function of its size and the seed only."""
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (1, LATENT_CHANNELS, (frames - 1) // FRAMES_PER_LATENT, height // LATENT_SCALE, width // LATENT_SCALE)
    return torch.randn(shape, generator=generator)


@torch.inference_mode()
def upscale_segment(frames: torch.Tensor, streamer: SegmentStreamer, settings: SegmentSettings,
                    dtype: torch.dtype) -> torch.Tensor:
    """``frames`` ``[t, h, w, C]`` (uint8, uint16 or float in [0, 1]; C >= 3, extra channels
    ignored) on the worker's device -> ``[t, H, W, 3]`` float32 in [0, 1] on the same device (a
    view of the segment's one output buffer, not contiguous)."""
    count = frames.shape[0]
    index = torch.tensor(padded_indices(count), device=frames.device)
    lq = upscale_and_crop(unit_range(frames[..., :3]).index_select(0, index), settings.scale, dtype)
    outputs = lq.shape[2] - TAIL_FRAMES
    if not settings.tiled_dit:
        video = _stream_tile(lq, streamer, settings, outputs)
    else:
        video = _stream_tiles(lq, streamer, settings, outputs)
    video = video.add_(1.0).mul_(0.5)[0].permute(1, 2, 3, 0)  # [F-4, H, W, 3]: a view, not a copy
    if count == 1:
        return video.median(dim=0, keepdim=True).values.contiguous()
    return video[:count]


def _stream_tiles(lq: torch.Tensor, streamer: SegmentStreamer, settings: SegmentSettings,
                  outputs: int) -> torch.Tensor:
    """The tiled DiT: each tile streamed on its own, the tiles feathered together (``tiles``)."""
    height, width = lq.shape[3], lq.shape[4]
    size, overlap = output_tile(settings.tile_size, settings.tile_overlap, settings.scale)
    total = torch.zeros((1, 3, outputs, height, width), dtype=torch.float32, device=lq.device)
    weight = torch.zeros((height, width), dtype=torch.float32, device=lq.device)
    for top, left, th, tw in plan_tiles(height, width, size, overlap):
        tile = _stream_tile(lq[..., top : top + th, left : left + tw].contiguous(), streamer, settings, outputs)
        mask = feather_mask((top, left, th, tw), (height, width), overlap).to(lq.device)
        total[..., top : top + th, left : left + tw] += tile * mask
        weight[top : top + th, left : left + tw] += mask
        del tile
    return total.div_(weight)


def _stream_tile(lq: torch.Tensor, streamer: SegmentStreamer, settings: SegmentSettings,
                 outputs: int) -> torch.Tensor:
    """One tile's frames ``[1, 3, F-4, h, w]`` in [-1, 1], float32, colour-fixed chunk by chunk."""
    _, _, streamed, height, width = lq.shape
    noise = segment_noise(streamed, height, width, settings.seed).to(device=lq.device, dtype=lq.dtype)
    result = torch.empty((1, 3, outputs, height, width), dtype=torch.float32, device=lq.device)
    done = 0
    for chunk in streamer.stream(lq, noise, stream_options(settings, height, width)):
        count = chunk.shape[2]
        if chunk.shape != (1, 3, count, height, width) or done + count > outputs:
            raise ValueError(f"the streamer gave {tuple(chunk.shape)} after {done} of {outputs} frames of "
                             f"{width}x{height}")
        if settings.color_fix:
            chunk = adain_color_fix(chunk, lq[:, :, done : done + count])
        result[:, :, done : done + count] = chunk
        done += count
    if done != outputs:
        raise ValueError(f"the streamer gave {done} frames for an input of {streamed}; expected {outputs}")
    return result
