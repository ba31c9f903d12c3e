"""The DiT's conditioning and the noises around it (docs/reference-behaviour.md R12, R16).

Latents here are channels-last ``[T', h, w, 16]``, scaled by 0.9152. The SR condition is the
latent plus a mask channel of ones (17 channels); the DiT input is ``[x_t | condition]``.

Noise: :func:`window_noise` seeds a CPU generator from ``(seed, window start, stream)`` so a
window's noise depends only on where it sits in the video, never on which device or chunk runs
it. numz draws from one global generator instead; the parity path passes its tensors in directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from seedvr_cli.pipeline.sampler import NUM_TRAIN_TIMESTEPS, add_noise, latent_grid_shift

LATENT_CHANNELS = 16
# Weights of numz's condition-augmentation noise: 0.1 * sampling noise + 0.05 * fresh noise (reusing
# the sampling noise correlates the two; kept, as it is part of numz's pictures).
AUG_BASE_WEIGHT = 0.1
AUG_EXTRA_WEIGHT = 0.05
INPUT_NOISE_STD = 0.05
SHIFT_SHAPES = ("as_called", "intended")


def window_noise(
    seed: int,
    window_start: int,
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    stream: str = "latent",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise for the window starting at timeline frame ``window_start``.

    Drawn on the CPU (identical on every machine and device) from a generator keyed by
    ``seed``, ``window_start`` and ``stream`` ("latent", "augment", "input"), then moved.
    """
    digest = hashlib.sha256(f"seedvr-cli:{seed}:{window_start}:{stream}".encode()).digest()
    generator = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def augmentation_noise(base: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    return AUG_BASE_WEIGHT * base + AUG_EXTRA_WEIGHT * extra


def condition_timestep(latent_noise_scale: float, latent_shape: Sequence[int], shift_shape: str = "as_called") -> torch.Tensor:
    """Timestep used to noise the condition: ``1000 * scale``, resolution-shifted.

    ``as_called`` reproduces the reference, which passes ``(h, w, 16)`` of a ``[T', h, w, 16]``
    latent where ``(T', h, w)`` is meant (a bug in both repositories; the default, since numz's
    pictures with latent noise depend on it); ``intended`` uses the latent grid.
    """
    t = torch.tensor([NUM_TRAIN_TIMESTEPS * latent_noise_scale], dtype=torch.float32)
    latent_frames, h, w = latent_shape[:3]
    if shift_shape == "as_called":
        return latent_grid_shift(t, (h, w, LATENT_CHANNELS))
    if shift_shape == "intended":
        return latent_grid_shift(t, (latent_frames, h, w))
    raise ValueError(f"unknown shift shape {shift_shape!r}; expected one of {SHIFT_SHAPES}")


def noise_latent(
    latent: torch.Tensor, aug_noise: torch.Tensor, latent_noise_scale: float, shift_shape: str = "as_called"
) -> torch.Tensor:
    """``--latent-noise-scale``: lerp the condition latent towards ``aug_noise`` (skipped at 0)."""
    if latent_noise_scale == 0:
        return latent
    t = condition_timestep(latent_noise_scale, latent.shape, shift_shape)
    return add_noise(latent, aug_noise, t.to(latent.device).reshape(()).item())


def build_condition(latent: torch.Tensor) -> torch.Tensor:
    """SR condition ``[T', h, w, 17]``: the latent and a mask channel of ones."""
    return torch.cat([latent, torch.ones_like(latent[..., :1])], dim=-1)


def add_input_noise(clip: torch.Tensor, noise: torch.Tensor, input_noise_scale: float) -> torch.Tensor:
    """``--input-noise-scale`` s on the preprocessed clip: ``x (1-b) + (x + 0.05 n) b``, b = s/2, no clamp."""
    if input_noise_scale == 0:
        return clip
    blend = input_noise_scale * 0.5
    return clip * (1 - blend) + (clip + INPUT_NOISE_STD * noise) * blend


def dit_tokens(x_t: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NA packed DiT input: tokens ``[T'*h*w, 33]`` and ``vid_shape [[T', h, w]]``."""
    latent_frames, h, w = x_t.shape[:3]
    tokens = torch.cat([x_t, condition], dim=-1).reshape(latent_frames * h * w, -1)
    shape = torch.tensor([[latent_frames, h, w]], dtype=torch.long, device=x_t.device)
    return tokens, shape
