"""Diffusion maths of SeedVR2 (docs/reference-behaviour.md R14): lerp schedule, v_lerp, Euler sampling.

The sampler knows timesteps and update rules only; the network is a callable
``velocity(x_t, t) -> v``. SeedVR2 restores in one step: one call at t = 1000 and
``x_0 = x_T - v``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NUM_TRAIN_TIMESTEPS = 1000.0

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def uniform_trailing_timesteps(steps: int, total: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``T (1 - k/n)`` for k = 0..n-1 in float32 (n = 1 -> [1000]); no shift."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    # This float32 evaluation order gives numz's values bit for bit (e.g. 799.99994 for n = 50).
    timesteps = torch.arange(1.0, 0.0, -1.0 / steps, dtype=torch.float32) * total
    return timesteps[:steps]


def add_noise(x_0: torch.Tensor, noise: torch.Tensor, t: float, total: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Lerp schedule forward: ``x_t = (1 - t/T) x_0 + (t/T) noise``."""
    fraction = t / total
    return (1 - fraction) * x_0 + fraction * noise


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: float, total: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    return x_t - (t / total) * v


def noise_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: float, total: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    return x_t + (1 - t / total) * v


def euler_sample(
    x_T: torch.Tensor, velocity: Velocity, timesteps: Sequence[float] | torch.Tensor, total: float = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Euler over ``timesteps`` (descending), then one more prediction that jumps to ``x_0``."""
    ts = [float(t) for t in timesteps]
    x = x_T
    for t, s in zip(ts, ts[1:] + [None]):
        v = velocity(x, t)
        x_0 = x0_from_velocity(x, v, t, total)
        if s is None:
            return x_0
        x = add_noise(x_0, noise_from_velocity(x, v, t, total), s, total)
    return x


def one_step(x_T: torch.Tensor, velocity: Velocity) -> torch.Tensor:
    """SeedVR2's sampler: a single prediction at t = T, ``x_0 = x_T - v``."""
    return x_T - velocity(x_T, NUM_TRAIN_TIMESTEPS)


def timestep_shift(t: torch.Tensor | float, frames: int, height: int, width: int) -> torch.Tensor:
    """Resolution-dependent shift of ``t`` for a ``frames x height x width`` pixel clip.

    Linear in pixel count through (256², 1) and (1024², 3.2) for images and
    (256²·37, 1) and (1280·720·145, 5) for videos. Slope and intercept are Python floats and the
    pixel count a float32 tensor: that order reproduces the reference's float32 values exactly.
    The reference uses the shift only to noise the condition, never for the sampling timesteps.
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    if frames == 1:
        x1, y1, x2, y2 = 256.0 * 256, 1.0, 1024.0 * 1024, 3.2
        pixels = torch.tensor(height * width, dtype=torch.float32)
    else:
        x1, y1, x2, y2 = 256.0 * 256 * 37, 1.0, 1280.0 * 720 * 145, 5.0
        pixels = torch.tensor(frames * height * width, dtype=torch.float32)
    slope = (y2 - y1) / (x2 - x1)
    intercept = y1 - slope * x1
    shift = slope * pixels + intercept
    u = t / NUM_TRAIN_TIMESTEPS
    return shift * u / (1 + (shift - 1) * u) * NUM_TRAIN_TIMESTEPS


def latent_grid_shift(t: torch.Tensor | float, latent_shape: Sequence[int]) -> torch.Tensor:
    """``timestep_shift`` for a latent grid ``(T', h, w)``: 4(T'-1)+1 frames of 8h x 8w pixels."""
    latent_frames, h, w = latent_shape
    return timestep_shift(t, 4 * (latent_frames - 1) + 1, 8 * h, 8 * w)
