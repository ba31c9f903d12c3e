"""A planned window computed in shorter sub-windows (the last out-of-memory step-down): a no-op when
the window fits, deterministic whatever the global RNG, and its overlaps crossfade to full weight."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import seedvr_cli.pipeline.subwindows as subwindows_module
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.subwindows import subwindow_overlap, upscale_in_subwindows
from seedvr_cli.pipeline.temporal import Window, append_padding, padded_length
from seedvr_cli.pipeline.window import WindowSettings, upscale_window
from seedvr_cli.run.processor import SeedVRProcessorFactory


@pytest.fixture(scope="module")
def models(model_files):
    processor = SeedVRProcessorFactory(model_files, dtype="fp32")(DeviceSpec("cpu", 0))
    return {"vae": processor.vae, "dit": processor.dit, "text_embedding": processor.text_embedding}


def _window(length: int, start: int = 0):
    """A window of ``length`` random 24x32 frames at timeline frame ``start`` (padded to 4n+1 as
    planned windows are), its frames, and settings with every noise on (each noise stream is used),
    kept in float."""
    real = list(range(start, start + length))
    source = tuple(real + [real[i] for i in append_padding(length, padded_length(length) - length)])
    window = Window(index=1 if start else 0, start=start, stop=start + length, source=source, write_start=start)
    clip = torch.randint(0, 256, (start + length, 24, 32, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(5))
    settings = WindowSettings(frame_size=plan_frame_size(24, 32, resolution=32), dtype=torch.float32,
                              input_noise_scale=0.1, latent_noise_scale=0.1, output_dtype=None)
    return clip[list(source)], window, settings


@pytest.mark.parametrize("max_frames", [9, 13])
def test_a_window_that_fits_is_upscaled_whole(models, max_frames):
    frames, window, settings = _window(9)
    plain = upscale_window(frames, settings=settings, window=window, **models)
    assert torch.equal(upscale_in_subwindows(frames, max_frames=max_frames, settings=settings, window=window, **models),
                       plain)


def test_sub_windows_are_deterministic_whatever_the_global_rng(models):
    frames, window, settings = _window(11)
    torch.manual_seed(0)
    first = upscale_in_subwindows(frames, max_frames=5, settings=settings, window=window, **models)
    torch.manual_seed(1)
    torch.randn(100)
    second = upscale_in_subwindows(frames, max_frames=5, settings=settings, window=window, **models)
    assert torch.equal(first, second)
    plain = upscale_window(frames, settings=settings, window=window, **models)
    assert first.shape == plain.shape and first.shape[0] == 11 and torch.isfinite(first).all()
    # The sub-windows were really used: the models saw fewer frames at once, and other noise.
    assert not torch.equal(first, plain)


def test_quantized_output_is_the_rounded_crossfade(models):
    frames, window, settings = _window(9)
    floats = upscale_in_subwindows(frames, max_frames=5, settings=settings, window=window, **models)
    stored = upscale_in_subwindows(frames, max_frames=5, settings=replace(settings, output_dtype=torch.uint8),
                                   window=window, **models)
    assert stored.dtype == torch.uint8
    assert torch.equal(stored, (floats * 255).round().to(torch.uint8))


@pytest.mark.parametrize(("length", "max_frames"), [(33, 17), (33, 5), (30, 9), (9, 1), (29, 25)])
def test_sub_windows_cover_the_window_and_crossfade_to_full_weight(monkeypatch, length, max_frames):
    frames, window, settings = _window(length, start=4)
    seen = []

    def stand_in(sub_frames, *, window, settings, **_):
        # Each frame's value says which timeline frame it shows (in [0, 1], as outputs are): the
        # crossfade must give it back.
        seen.append((window, settings.seed, sub_frames))
        shown = torch.tensor(window.source[: window.length], dtype=torch.float32) / 100
        return shown.view(-1, 1, 1, 1).expand(window.length, 2, 2, 3).clone()

    monkeypatch.setattr(subwindows_module, "upscale_window", stand_in)
    output = upscale_in_subwindows(frames, max_frames=max_frames, vae=None, dit=None, text_embedding=None,
                                   settings=settings, window=window)
    expected = torch.arange(window.start, window.stop, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 2, 3) / 100
    assert torch.allclose(output, expected)
    assert len(seen) > 1
    for sub, seed, sub_frames in seen:
        assert sub.padded_length <= max_frames and sub_frames.shape[0] == sub.padded_length
        assert window.start <= sub.start < sub.stop <= window.stop and sub.index == window.index
        # The frames handed over are the window's own, in the sub-window's order.
        position = {timeline: i for i, timeline in enumerate(window.source[: window.length])}
        assert torch.equal(sub_frames, frames[[position[t] for t in sub.source]])
    # Neighbours share the overlap, and each sub-window draws its own noise.
    assert all(b.start == a.stop - subwindow_overlap(max_frames) for (a, _, _), (b, _, _) in zip(seen, seen[1:]))
    assert len({seed for _, seed, _ in seen} | {settings.seed}) == len(seen) + 1


def test_sub_window_lengths_must_suit_the_vae(models):
    frames, window, settings = _window(9)
    with pytest.raises(ValueError, match="4n\\+1"):
        upscale_in_subwindows(frames, max_frames=4, settings=settings, window=window, **models)
