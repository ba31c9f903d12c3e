"""One temporal window of frames through the whole model path: ``upscale_window``.

A *window* is what the models see at once: ``--batch-size`` frames (4n+1 after padding).

1. preprocess  2. VAE encode  3. condition + noise  4. one DiT step at t = 1000
5. VAE decode  6. trim padding, crop to the true size  7. colour correction (+ alpha)
8. quantize to uint8 / uint16, or keep float for blending.

Steps 1-2, 3-4 and 5-8 are also separate functions (``encode_window``, ``restore_window``,
``decode_window``) so that a caller can free or move one model's memory between them.

The output depends only on the window's frames, its position (noise seed) and the settings, so
windows can run anywhere in any order. Models are passed in already on their device and in
``settings.dtype``; memory savers (VAE tiling, later BlockSwap) wrap them from outside with the
same call signatures (:class:`LatentCodec`, :class:`VelocityModel`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from seedvr_cli.models.vae import decoder_input_from_latent, latent_from_mean
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.pipeline.alpha import upscale_alpha
from seedvr_cli.pipeline.color import COLOR_METHODS, DEFAULT_COLOR_METHOD, PER_FRAME_COLOR_METHODS, color_correct
from seedvr_cli.pipeline.condition import (
    SHIFT_SHAPES,
    add_input_noise,
    augmentation_noise,
    build_condition,
    dit_tokens,
    noise_latent,
    window_noise,
)
from seedvr_cli.pipeline.finite import FiniteGuard
from seedvr_cli.pipeline.plan import FrameSize
from seedvr_cli.pipeline.preprocess import preprocess, to_unit_float
from seedvr_cli.pipeline.quantize import INTEGER_OUTPUTS, quantize, signed_to_unit
from seedvr_cli.pipeline.sampler import NUM_TRAIN_TIMESTEPS
from seedvr_cli.pipeline.temporal import Window

# The published VAE's latent scale (a pipeline constant in the reference, not a VAE weight).
VAE_SCALING_FACTOR = vae_config("vae").scaling_factor


class LatentCodec(Protocol):
    """What upscale_window needs of the VAE (``models.vae.VideoVAE`` or ``memory.tiling.TiledVAE``)."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # [B,3,T,H,W] -> mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...  # [B,16,T',h,w] -> [B,3,T,H,W]


class VelocityModel(Protocol):
    """What upscale_window needs of the DiT (``models.dit.NaDiT`` or a BlockSwap runner)."""

    def __call__(
        self, vid: torch.Tensor, txt: torch.Tensor, vid_shape: torch.Tensor, txt_shape: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor: ...  # [L, 33] tokens -> [L, 16] velocity


@dataclass(frozen=True)
class WindowSettings:
    """Everything about one window's computation that is not the frames or the models."""

    frame_size: FrameSize
    dtype: torch.dtype = torch.bfloat16
    color: str = DEFAULT_COLOR_METHOD
    input_noise_scale: float = 0.0
    latent_noise_scale: float = 0.0
    # numz shifts the condition-noise timestep for the wrong shape, (h, w, 16) for (T', h, w); "as_called"
    # keeps its pictures, "intended" uses the latent grid.
    latent_noise_shift: str = "as_called"
    seed: int = 42
    # uint8, uint16 (10/16-bit outputs) or None for float32 frames in [0, 1].
    output_dtype: torch.dtype | None = torch.uint8

    def __post_init__(self) -> None:
        if self.color not in COLOR_METHODS:
            raise ValueError(f"color {self.color!r} is not one of {COLOR_METHODS}")
        if self.latent_noise_shift not in SHIFT_SHAPES:
            raise ValueError(f"latent_noise_shift {self.latent_noise_shift!r} is not one of {SHIFT_SHAPES}")
        if self.output_dtype is not None and self.output_dtype not in INTEGER_OUTPUTS:
            raise ValueError(f"output_dtype {self.output_dtype} is not uint8, uint16 or None")
        if self.input_noise_scale < 0 or self.latent_noise_scale < 0:
            raise ValueError("noise scales must be >= 0")


@dataclass(frozen=True)
class WindowNoise:
    """Explicit noises (parity with numz's global generator); ``None`` fields are drawn per window."""

    x_T: torch.Tensor | None = None  # [T', h, w, 16]
    augment: torch.Tensor | None = None  # [T', h, w, 16], the fresh part of the condition noise
    input: torch.Tensor | None = None  # [3, T, H, W]


# ---------------------------------------------------------------- steps


def encode_clip(vae: LatentCodec, clip: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Step 2: clip ``[3, T, H, W]`` -> scaled channels-last latent ``[T', h, w, 16]`` (float32, the mean)."""
    mean, _ = vae.encode(clip.unsqueeze(0).to(dtype))
    return latent_from_mean(mean.to(torch.float32), VAE_SCALING_FACTOR)


def decode_latent(vae: LatentCodec, latent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Step 5: scaled channels-last latent -> decoded clip ``[3, T, H, W]`` float32 (unclamped)."""
    z = decoder_input_from_latent(latent, VAE_SCALING_FACTOR)
    decoded = vae.decode(z.to(dtype))[0].to(torch.float32)
    return decoded if decoded.dim() == 4 else decoded.unsqueeze(1)


def restore_latent(
    dit: VelocityModel, x_T: torch.Tensor, condition: torch.Tensor, text_embedding: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Step 4: one DiT call at t = 1000 on the NA packed layout; returns ``x_0 = x_T - v`` (float32)."""
    tokens, vid_shape = dit_tokens(x_T, condition)
    txt = text_embedding.to(device=tokens.device, dtype=dtype)
    txt_shape = torch.tensor([[txt.shape[0]]], dtype=torch.long, device=tokens.device)
    timestep = torch.tensor([NUM_TRAIN_TIMESTEPS], dtype=dtype, device=tokens.device)
    velocity = dit(tokens.to(dtype), txt, vid_shape, txt_shape, timestep)
    return x_T - velocity.to(torch.float32).reshape(x_T.shape)


def condition_and_noise(
    latent: torch.Tensor, settings: WindowSettings, window_start: int, noise: WindowNoise | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3: sampling noise ``x_T`` and the 17-channel condition (optionally noised)."""
    noise = noise or WindowNoise()
    x_T = noise.x_T if noise.x_T is not None else window_noise(settings.seed, window_start, latent.shape, latent.device)
    x_T = x_T.to(device=latent.device, dtype=torch.float32)
    if settings.latent_noise_scale > 0:
        extra = noise.augment
        if extra is None:
            extra = window_noise(settings.seed, window_start, latent.shape, latent.device, stream="augment")
        aug = augmentation_noise(x_T, extra.to(device=latent.device, dtype=torch.float32))
        latent = noise_latent(latent, aug, settings.latent_noise_scale, settings.latent_noise_shift)
    return x_T, build_condition(latent)


def crop_frames(clip: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Step 6: ``[3, T, H, W]`` -> the first ``frames`` frames at ``size``, as ``[t, 3, Ht, Wt]``."""
    return clip[:, :frames, : size[0], : size[1]].permute(1, 0, 2, 3)


def finish_frames(rgb: torch.Tensor, alpha: torch.Tensor | None, output_dtype: torch.dtype | None) -> torch.Tensor:
    """Step 8: ``[t, 3, H, W]`` in [-1, 1] (+ alpha ``[t, 1, H, W]`` in [0, 1]) -> ``[t, H, W, C]``."""
    unit = signed_to_unit(rgb)
    if alpha is not None:
        unit = torch.cat([unit, alpha.to(unit)], dim=1)
    return quantize(unit.permute(0, 2, 3, 1), output_dtype)


# ---------------------------------------------------------------- phases


class PhaseTimes:
    """Wall time per phase; pass one to the phase functions (synchronizes CUDA around each phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # The innermost phase an exception left, until the caller takes it (``take_failed_phase``):
        # an out-of-memory step-down says where the window ran out.
        self.failed_phase: str | None = None
        # The innermost phase that last raised the device's allocation peak (CUDA only): the one
        # the run's reported peak belongs to. ``forget_peak`` after resetting the peak statistics.
        self.peak_phase: str | None = None
        self._recorded_peak = 0

    def forget_peak(self) -> None:
        self.peak_phase, self._recorded_peak = None, 0

    def take_failed_phase(self) -> str | None:
        phase, self.failed_phase = self.failed_phase, None
        return phase

    @contextmanager
    def __call__(self, phase: str, device: torch.device | None = None) -> Iterator[None]:
        synchronize = device is not None and device.type == "cuda"
        if synchronize:
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.failed_phase is None:
                self.failed_phase = phase
            synchronize = False  # the device may be the reason; the time is noted unsynchronized
            raise
        finally:
            if synchronize:
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
                if peak > self._recorded_peak:
                    self.peak_phase, self._recorded_peak = phase, peak
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began


@contextmanager
def _untimed(phase: str, device: torch.device | None = None) -> Iterator[None]:
    yield


@dataclass(frozen=True)
class EncodedWindow:
    """What a window carries from the encode phase to the others (small: latents and the LR style)."""

    window: Window
    latent: torch.Tensor  # [T', h, w, 16] float32, scaled
    style: torch.Tensor  # [t, 3, Ht, Wt] float32 in [-1, 1]: the clean preprocessed input of the real frames
    alpha: torch.Tensor | None  # [t, 1, H0, W0] float32 in [0, 1] for RGBA input


@torch.inference_mode()
def encode_window(
    frames: torch.Tensor,
    *,
    vae: LatentCodec,
    settings: WindowSettings,
    window: Window,
    noise: WindowNoise | None = None,
    times: PhaseTimes | None = None,
    finite: FiniteGuard | None = None,
) -> EncodedWindow:
    """Steps 1-2. ``frames``: ``[window.padded_length, H0, W0, C]`` (``plan.window_input_frames``),
    uint8 / uint16 / float in [0, 1], C = 3 or 4, on the compute device. ``finite`` watches the
    latent for NaN and infinity (the caller reads it with ``finite.check()``)."""
    if frames.shape[0] != window.padded_length:
        raise ValueError(f"window {window.index} needs {window.padded_length} frames (padding included), got {frames.shape[0]}")
    timed = times or _untimed
    with timed("preprocess", frames.device):
        # 1. resize, pad to 16, [-1, 1], CTHW; optional input noise on the encoder's copy only
        clip = preprocess(frames, settings.frame_size)
        encoder_input = clip
        if settings.input_noise_scale > 0:
            input_noise = noise.input if noise is not None and noise.input is not None else None
            if input_noise is None:
                input_noise = window_noise(settings.seed, window.start, clip.shape, clip.device, stream="input")
            encoder_input = add_input_noise(clip, input_noise.to(clip), settings.input_noise_scale)
        style = crop_frames(clip, window.length, settings.frame_size.true).contiguous()
        alpha = None
        if frames.shape[-1] == 4:
            # Alpha of the real frames only: numz keeps the padded length here and crashes.
            alpha = to_unit_float(frames[: window.length, ..., 3:]).permute(0, 3, 1, 2).contiguous()
    with timed("encode", frames.device):
        # 2. VAE encode (posterior mean)
        latent = encode_clip(vae, encoder_input, settings.dtype)
    if finite is not None:
        finite.watch("encode", window, latent)
    return EncodedWindow(window, latent, style, alpha)


@torch.inference_mode()
def restore_window(
    encoded: EncodedWindow,
    *,
    dit: VelocityModel,
    text_embedding: torch.Tensor,
    settings: WindowSettings,
    noise: WindowNoise | None = None,
    times: PhaseTimes | None = None,
    finite: FiniteGuard | None = None,
) -> torch.Tensor:
    """Steps 3-4: condition + noise, one DiT step; returns the restored latent ``[T', h, w, 16]``."""
    timed = times or _untimed
    with timed("dit", encoded.latent.device):
        x_T, condition = condition_and_noise(encoded.latent, settings, encoded.window.start, noise)
        restored = restore_latent(dit, x_T, condition, text_embedding, settings.dtype)
    if finite is not None:
        finite.watch("dit", encoded.window, restored)
    return restored


@torch.inference_mode()
def decode_window(
    encoded: EncodedWindow,
    restored: torch.Tensor,
    *,
    vae: LatentCodec,
    settings: WindowSettings,
    times: PhaseTimes | None = None,
    finite: FiniteGuard | None = None,
) -> torch.Tensor:
    """Steps 5-8: decode, trim/crop, alpha + colour correction, quantize -> ``[t, Ht, Wt, C]``."""
    timed = times or _untimed
    with timed("decode", restored.device):
        # 5. VAE decode
        decoded = decode_latent(vae, restored, settings.dtype)
        # 6. drop temporal padding, crop spatial padding and the odd row/column
        content = crop_frames(decoded, encoded.window.length, settings.frame_size.true)
    if finite is not None:
        finite.watch("decode", encoded.window, content)
    with timed("color", restored.device):
        # 7. alpha (guided by the uncorrected upscale, as numz does) and colour correction
        alpha = upscale_alpha(encoded.alpha, content) if encoded.alpha is not None else None
        frames = content.shape[0]
        step = frames
        if settings.color in PER_FRAME_COLOR_METHODS:
            step = max(1, int(COLOR_SLICE_BYTES // (content[0].numel() * 4)))
        if step >= frames:
            return _correct_and_finish(content, encoded.style, alpha, settings, encoded.window, finite)
        # A few frames at a time: the wavelet's float32 temporaries of a whole 2160p window would be
        # ~5 clips (15 GiB for 33 frames), more than the tiled VAE needs.
        finished = None
        for start in range(0, frames, step):
            part = slice(start, start + step)
            piece = _correct_and_finish(content[part], encoded.style[part], None if alpha is None else alpha[part],
                                        settings, encoded.window, finite)
            if finished is None:
                finished = torch.empty((frames, *piece.shape[1:]), dtype=piece.dtype, device=piece.device)
            finished[part] = piece
        return finished


# Float32 bytes of decoded frames the colour step takes at a time (methods that work per frame).
COLOR_SLICE_BYTES = 256 * 2**20


def _correct_and_finish(content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor | None,
                        settings: WindowSettings, window: Window, finite: FiniteGuard | None) -> torch.Tensor:
    corrected = color_correct(content, style, settings.color)
    if finite is not None:
        # Before quantising, which would clamp infinity away and turn NaN into black.
        finite.watch("color", window, corrected)
    # 8. to uint8 / uint16 (rounded)
    return finish_frames(corrected, alpha, settings.output_dtype)


# ---------------------------------------------------------------- the chunk


@torch.inference_mode()
def upscale_window(
    frames: torch.Tensor,
    *,
    vae: LatentCodec,
    dit: VelocityModel,
    text_embedding: torch.Tensor,
    settings: WindowSettings,
    window: Window,
    noise: WindowNoise | None = None,
    times: PhaseTimes | None = None,
    finite: FiniteGuard | None = None,
) -> torch.Tensor:
    """Upscale one window: ``[window.padded_length, H0, W0, C]`` -> ``[window.length, Ht, Wt, C]``.

    1 preprocess, 2 VAE encode (:func:`encode_window`); 3 condition + noise, 4 one DiT step at
    t = 1000 (:func:`restore_window`); 5 decode, 6 trim/crop, 7 alpha + colour correction,
    8 quantize (:func:`decode_window`). ``finite`` watches the latents and frames of every step for
    NaN and infinity without waiting for the device; ``finite.check()`` raises for a bad one.
    """
    encoded = encode_window(frames, vae=vae, settings=settings, window=window, noise=noise, times=times, finite=finite)
    restored = restore_window(encoded, dit=dit, text_embedding=text_embedding, settings=settings, noise=noise,
                              times=times, finite=finite)
    return decode_window(encoded, restored, vae=vae, settings=settings, times=times, finite=finite)
