"""upscale_window: per-window parity with the e2e fixture, RGBA windows, precision, independence."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shared_path
from model_standins import StandInDiT

from seedvr_cli.pipeline.blend import assemble
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.pipeline.window import WindowNoise, WindowSettings, upscale_window


@pytest.fixture(scope="module")
def fixture_vae():
    from seedvr_cli.parity.vae import load_fixture_vae

    return load_fixture_vae(shared_path("fixtures", "vae"))


@pytest.fixture(scope="module")
def e2e():
    from safetensors.torch import load_file

    directory = shared_path("fixtures", "pipeline")
    return json.loads((directory / "pipeline_e2e.json").read_text()), load_file(directory / "pipeline_e2e.safetensors")


def _scenario_settings(info: dict, params: dict, frames: torch.Tensor) -> WindowSettings:
    size = plan_frame_size(frames.shape[1], frames.shape[2], resolution=info["resolution"], max_resolution=info["max_resolution"])
    return WindowSettings(
        frame_size=size,
        dtype=torch.float32,
        color=params["color_correction"],
        input_noise_scale=params.get("input_noise_scale", 0.0),
        latent_noise_scale=params.get("latent_noise_scale", 0.0),
        seed=info["seed"],
        output_dtype=None,
    )


# Scenarios without overlap/prepend: colour correction per window equals numz's per written slice.
@pytest.mark.parametrize("name", ["s1_video_wavelet", "s3_image_maxres_adain", "s4_batch8_hsv", "s5_noise_wavelet_adaptive"])
def test_upscale_window_matches_e2e_fixture(e2e, fixture_vae, name):
    from seedvr_cli.parity.pipeline import SORT_METHODS, numz_input_noise, numz_latent_noise
    from seedvr_cli.parity.tolerances import E2E_MAX_ABS, OUTLIER_MAX, OUTLIER_SHARE

    index, tensors = e2e
    info, params = index[name]["generation_info"], index[name]["params"]
    frames = tensors[f"{name}.input_thwc"]
    settings = _scenario_settings(info, params, frames)
    plan = plan_windows(frames.shape[0], batch_size=info["batch_size"], blend="reference", reference=True)
    text = torch.zeros(58, 5120)
    dit = StandInDiT()
    outputs = {}
    size = settings.frame_size
    clip_shapes = [torch.empty(3, w.padded_length, *size.padded) for w in plan.windows]
    input_draws = numz_input_noise(info["seed"], clip_shapes, settings.input_noise_scale > 0)
    for window, draw in zip(plan.windows, input_draws):
        latent_shape = (window.latent_frames, *size.latent, 16)
        base, extra = numz_latent_noise(info["seed"], latent_shape)
        noise = WindowNoise(x_T=base, augment=extra, input=draw)
        window_frames = frames[plan.window_input_frames(window)]
        outputs[window.index] = upscale_window(
            window_frames, vae=fixture_vae, dit=dit, text_embedding=text, settings=settings, window=window, noise=noise
        )
    output = assemble(plan, outputs)
    reference = tensors[f"{name}.output_thwc"]
    assert output.shape == reference.shape
    diff = (output - reference).abs()
    # The pipeline fixtures' e2e bound. wavelet_adaptive contains hsv: sort-based methods are judged
    # by the share of values over it, since our VAE's float32 noise reorders a few sort ties (more
    # on some CPUs); a wrong tie order changes 4-6 % of the values.
    if params["color_correction"] in SORT_METHODS:
        assert float((diff > E2E_MAX_ABS).float().mean()) <= OUTLIER_SHARE
        assert float(diff.max()) <= OUTLIER_MAX
    else:
        assert float(diff.max()) <= E2E_MAX_ABS
    assert dit.calls[0]["txt"] == (58, 5120) and dit.calls[0]["timestep"] == [1000.0]
    assert dit.calls[0]["vid"][1] == 33


@pytest.fixture(scope="module")
def random_tiny_vae():
    from seedvr_cli.models.vae import VideoVAE
    from seedvr_cli.models.vae_config import vae_config

    torch.manual_seed(0)
    return VideoVAE(vae_config("tiny-vae")).eval()


def _rgba_clip(frames: int, height: int, width: int, dtype=torch.uint8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    top = 255 if dtype == torch.uint8 else 65535
    clip = torch.randint(0, top + 1, (frames, height, width, 4), generator=gen, dtype=torch.int32)
    clip[..., 3] = 0
    clip[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4, 3] = top
    return clip.to(dtype)


def test_rgba_video_with_padded_and_overlapped_windows(random_tiny_vae):
    """numz crashes here (docs/reference-behaviour.md R11): alpha must be trimmed to the same frames as RGB."""
    clip = _rgba_clip(11, 12, 16)
    size = plan_frame_size(12, 16, resolution=16)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, color="wavelet", output_dtype=None)
    plan = plan_windows(11, batch_size=5, overlap=2, prepend=1)
    assert any(w.padded_length != w.length for w in plan.windows)
    outputs = {
        w.index: upscale_window(clip[plan.window_input_frames(w)], vae=random_tiny_vae, dit=StandInDiT(),
                               text_embedding=torch.zeros(58, 5120), settings=settings, window=w)
        for w in plan.windows
    }
    for w in plan.windows:
        assert outputs[w.index].shape == (w.length, *size.true, 4) and outputs[w.index].dtype == torch.float32
    video = quantize(assemble(plan, outputs), torch.uint8)
    assert video.shape == (11, *size.true, 4)
    alpha = video[..., 3].float() / 255
    height, width = size.true
    assert float(alpha[:, height // 2, width // 2].min()) > 0.5, "inside the opaque square"
    assert float(alpha[:, 0, 0].max()) < 0.1 and float(alpha[:, -1, -1].max()) < 0.1, "outside it"


def test_uint16_in_uint16_out(random_tiny_vae):
    clip = _rgba_clip(5, 8, 8, torch.uint16)[..., :3]
    size = plan_frame_size(8, 8, resolution=16)
    plan = plan_windows(5, batch_size=5)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, output_dtype=torch.uint16)
    out = upscale_window(clip, vae=random_tiny_vae, dit=StandInDiT(), text_embedding=torch.zeros(58, 5120),
                        settings=settings, window=plan.windows[0])
    assert out.dtype == torch.uint16 and out.shape == (5, 16, 16, 3)
    # Genuinely more than 256 levels survive.
    assert out.to(torch.int32).unique().numel() > 256


def test_window_result_depends_only_on_its_frames_and_position(random_tiny_vae):
    clip = _rgba_clip(13, 8, 8)[..., :3]
    size = plan_frame_size(8, 8, resolution=16)
    plan = plan_windows(13, batch_size=5, overlap=1)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, latent_noise_scale=0.2, input_noise_scale=0.1)
    dit = StandInDiT(noise_weight=0.5)

    def run(window):
        return upscale_window(clip[plan.window_input_frames(window)], vae=random_tiny_vae, dit=dit,
                             text_embedding=torch.zeros(58, 5120), settings=settings, window=window)

    last = run(plan.windows[-1])
    for window in plan.windows[:-1]:  # other windows in between, as on another GPU or in another order
        run(window)
    torch.manual_seed(123)
    assert torch.equal(run(plan.windows[-1]), last)
    # Same frames at another position get other noise.
    moved = plan.windows[0]
    assert not torch.equal(run(moved), upscale_window(clip[plan.window_input_frames(moved)], vae=random_tiny_vae, dit=dit,
                                                     text_embedding=torch.zeros(58, 5120),
                                                     settings=WindowSettings(frame_size=size, dtype=torch.float32, seed=7,
                                                                            latent_noise_scale=0.2, input_noise_scale=0.1),
                                                     window=moved))


def test_wrong_frame_count_is_rejected(random_tiny_vae):
    size = plan_frame_size(8, 8, resolution=16)
    plan = plan_windows(6, batch_size=9)
    settings = WindowSettings(frame_size=size, dtype=torch.float32)
    with pytest.raises(ValueError, match="padding included"):
        upscale_window(torch.zeros(6, 8, 8, 3), vae=random_tiny_vae, dit=StandInDiT(), text_embedding=torch.zeros(58, 5120),
                      settings=settings, window=plan.windows[0])


def test_with_the_real_tiny_dit(random_tiny_vae):
    from seedvr_cli.models.dit import NaDiT
    from seedvr_cli.models.dit_config import dit_config

    torch.manual_seed(0)
    config = dit_config("tiny-3b")
    dit = NaDiT(config).eval()
    clip = _rgba_clip(5, 8, 12)[..., :3]
    size = plan_frame_size(8, 12, resolution=16)
    plan = plan_windows(5, batch_size=5)
    settings = WindowSettings(frame_size=size, dtype=torch.float32)
    out = upscale_window(clip, vae=random_tiny_vae, dit=dit, text_embedding=torch.randn(58, config.txt_in_dim),
                        settings=settings, window=plan.windows[0])
    assert out.shape == (5, *size.true, 3) and out.dtype == torch.uint8


def test_settings_validation():
    size = plan_frame_size(8, 8, resolution=16)
    with pytest.raises(ValueError):
        WindowSettings(frame_size=size, color="sepia")
    with pytest.raises(ValueError):
        WindowSettings(frame_size=size, output_dtype=torch.int8)


def test_phase_by_phase_over_windows_equals_per_window(random_tiny_vae):
    """All encodes, then all DiT steps, then all decodes (one model resident) = window by window."""
    from seedvr_cli.pipeline.window import PhaseTimes, decode_window, encode_window, restore_window

    clip = _rgba_clip(9, 8, 8)
    size = plan_frame_size(8, 8, resolution=16)
    plan = plan_windows(9, batch_size=5, overlap=2)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, latent_noise_scale=0.1, color="lab")
    dit, text = StandInDiT(noise_weight=0.3), torch.zeros(58, 5120)
    times = PhaseTimes()
    encoded = [encode_window(clip[plan.window_input_frames(w)], vae=random_tiny_vae, settings=settings, window=w, times=times)
               for w in plan.windows]
    restored = [restore_window(e, dit=dit, text_embedding=text, settings=settings, times=times) for e in encoded]
    phased = [decode_window(e, r, vae=random_tiny_vae, settings=settings, times=times) for e, r in zip(encoded, restored)]
    for w, frames in zip(plan.windows, phased):
        direct = upscale_window(clip[plan.window_input_frames(w)], vae=random_tiny_vae, dit=dit, text_embedding=text,
                               settings=settings, window=w)
        assert torch.equal(frames, direct)
    assert set(times.seconds) == {"preprocess", "encode", "dit", "decode", "color"}
    assert all(v >= 0 for v in times.seconds.values())


class _NaNDiT(StandInDiT):
    """A DiT whose weights went bad: every velocity is NaN."""

    def __call__(self, vid, txt, vid_shape, txt_shape, timestep):
        return torch.full_like(super().__call__(vid, txt, vid_shape, txt_shape, timestep), float("nan"))


def test_finite_guard_blames_the_dit_of_the_bad_window(random_tiny_vae):
    from seedvr_cli.pipeline.finite import FiniteGuard, NonFiniteError

    clip = _rgba_clip(9, 8, 8)[..., :3]
    size = plan_frame_size(8, 8, resolution=16)
    plan = plan_windows(9, batch_size=5)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, output_dtype=None)
    guard = FiniteGuard()
    good, bad = plan.windows
    for window, dit in ((good, StandInDiT()), (bad, _NaNDiT())):
        upscale_window(clip[plan.window_input_frames(window)], vae=random_tiny_vae, dit=dit,
                       text_embedding=torch.zeros(58, 5120), settings=settings, window=window, finite=guard)
    with pytest.raises(NonFiniteError, match="DiT produced NaN") as raised:
        guard.check()
    assert raised.value.stage == "dit" and raised.value.window == bad
    guard.check()  # the flags were read once: nothing left to raise


def test_finite_guard_passes_finite_windows_and_sees_infinity(random_tiny_vae):
    from seedvr_cli.pipeline.finite import FiniteGuard, NonFiniteError

    clip = _rgba_clip(5, 8, 8)[..., :3]
    size = plan_frame_size(8, 8, resolution=16)
    window = plan_windows(5, batch_size=5).windows[0]
    guard = FiniteGuard()
    upscale_window(clip, vae=random_tiny_vae, dit=StandInDiT(), text_embedding=torch.zeros(58, 5120),
                   settings=WindowSettings(frame_size=size, dtype=torch.float32), window=window, finite=guard)
    guard.check()
    guard.watch("decode", window, torch.tensor([0.0, float("inf")]))
    with pytest.raises(NonFiniteError, match="VAE decoder"):
        guard.check()


def test_phase_times_name_the_phase_that_raised_the_peak_and_the_one_an_error_left(monkeypatch):
    """On CUDA the innermost phase that last raised the allocation peak is kept (the run summary's
    "peak VRAM ... (in the decode)"); an exception leaves its innermost phase for the step-down note."""
    from seedvr_cli.pipeline.window import PhaseTimes

    peaks = iter([10, 30, 30, 30, 20])  # read once at each CUDA phase's end
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    cuda = torch.device("cuda:0")
    times = PhaseTimes()
    with times("encode", cuda):
        pass
    assert times.peak_phase == "encode"
    with times("dit", cuda):
        with times("tile", cuda):  # raises the peak to 30; the outer phase adds nothing after it
            pass
    assert times.peak_phase == "tile"
    with times("decode", cuda):
        pass  # 30 again: not a new peak
    assert times.peak_phase == "tile"
    times.forget_peak()
    with times("encode", cuda):
        pass  # 20 after a reset of the statistics
    assert times.peak_phase == "encode"
    with pytest.raises(RuntimeError):
        with times("decode", torch.device("cpu")):
            with times("upsample", torch.device("cpu")):
                raise RuntimeError("out of memory")
    assert times.take_failed_phase() == "upsample" and times.take_failed_phase() is None
    assert "decode" in times.seconds and "upsample" in times.seconds


@pytest.mark.parametrize("color", ["wavelet", "adain", "lab"])
@pytest.mark.parametrize("output_dtype", [torch.uint8, None])
def test_colour_step_a_few_frames_at_a_time_gives_the_same_frames(random_tiny_vae, monkeypatch, color, output_dtype):
    """Per-frame colour methods run in slices of COLOR_SLICE_BYTES (the memory of a 2160p window);
    the frames are the same as in one pass, and the histogram methods stay whole."""
    from seedvr_cli.pipeline import window as window_module

    clip = _rgba_clip(9, 8, 8)[..., :3]
    size = plan_frame_size(8, 8, resolution=32)
    plan = plan_windows(9, batch_size=9)
    settings = WindowSettings(frame_size=size, dtype=torch.float32, color=color, output_dtype=output_dtype)

    def run():
        return upscale_window(clip, vae=random_tiny_vae, dit=StandInDiT(noise_weight=0.3),
                              text_embedding=torch.zeros(58, 5120), settings=settings, window=plan.windows[0])

    whole = run()
    corrected = []
    real = window_module.color_correct
    monkeypatch.setattr(window_module, "color_correct", lambda c, s, m: corrected.append(c.shape[0]) or real(c, s, m))
    monkeypatch.setattr(window_module, "COLOR_SLICE_BYTES", 2 * 3 * 32 * 32 * 4)  # two frames
    sliced = run()
    assert corrected == ([9] if color == "lab" else [2, 2, 2, 2, 1])
    assert sliced.shape == whole.shape and sliced.dtype == whole.dtype
    # The same per-frame arithmetic; another batch size may pick another CPU kernel, so allow float
    # rounding (and, after quantising, a value that rounding moves across a level's edge).
    if output_dtype is None:
        torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-5)
    else:
        difference = (sliced.int() - whole.int()).abs()
        assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 1e-3
