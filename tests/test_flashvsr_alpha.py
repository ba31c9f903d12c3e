"""An RGBA input under the FlashVSR engine keeps its alpha: resized and cropped like the LQ video,
refined by the model's output, segment by segment through the worker pool, and written where the
output format keeps alpha (the plan says so as SeedVR2's does)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from media_factory import make_video
from model_standins import StandInStreamer
from test_flashvsr_streamer import tiny_files  # noqa: F401  (the tiny random model files, a fixture)

from seedvr_cli.config import FlashVSRSettings, JobSpec, ModelSettings
from seedvr_cli.media.discovery import Job
from seedvr_cli.media.images import encode_image, read_image
from seedvr_cli.media.reader import open_reader
from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.fakes import ArraySink
from seedvr_cli.pipeline.flashvsr.alpha import segment_alpha
from seedvr_cli.pipeline.flashvsr.stream import upscale_segment
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.run.flashvsr_plan import output_dtype, plan_flashvsr_input, segment_settings
from seedvr_cli.run.flashvsr_processor import FlashVSRContext, FlashVSRProcessorFactory
from seedvr_cli.run.sources import InputSource

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]

# A 40x36 input at x4 is 160x144, centre-cropped to 128x128: 16 columns and 8 rows cut on each side.
WIDTH, HEIGHT, SCALE = 40, 36, 4
SQUARE = (10, 20, 12, 24)  # rows top:bottom, columns left:right of the half-transparent square
# Where the square lands in the output: x4, less the crop.
OUT_SQUARE = (SQUARE[0] * SCALE - 8, SQUARE[1] * SCALE - 8, SQUARE[2] * SCALE - 16, SQUARE[3] * SCALE - 16)


def _rgba_square() -> np.ndarray:
    """A smooth RGB picture, transparent but for a half-transparent square."""
    y = np.linspace(0, 1, HEIGHT)[:, None]
    x = np.linspace(0, 1, WIDTH)[None, :]
    rgb = np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1)
    alpha = np.zeros((HEIGHT, WIDTH, 1))
    top, bottom, left, right = SQUARE
    alpha[top:bottom, left:right] = 0.5
    return np.round(np.concatenate([rgb, alpha], axis=-1) * 255).astype(np.uint8)


def _extent(alpha: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((alpha > threshold).any(axis=1))
    cols = np.flatnonzero((alpha > threshold).any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_segment_alpha_follows_the_crop_of_the_lq_video():
    image = torch.from_numpy(_rgba_square())[None]
    rgb = torch.full((1, 128, 128, 3), 0.5)
    alpha = segment_alpha(image[..., 3:], rgb, SCALE)[0, ..., 0].numpy()
    assert alpha.shape == (128, 128)
    top, bottom, left, right = OUT_SQUARE
    # Half the square's level marks its edge: where the input's edge lands, to a pixel.
    assert np.abs(np.array(_extent(alpha, 0.25)) - np.array(OUT_SQUARE)).max() <= 1
    assert np.allclose(alpha[top + 6 : bottom - 6, left + 6 : right - 6], 0.5, atol=0.02)  # bicubic ringing
    assert alpha[: top - 6].max() < 0.01 and alpha[:, right + 6 :].max() < 0.01


def test_output_overshoot_is_not_read_as_a_minus_one_one_picture():
    image = torch.from_numpy(_rgba_square())[None]
    rgb = torch.full((1, 128, 128, 3), 0.5)
    rgb[0, 0, 0] = -0.01  # the model may overshoot [0, 1] a little
    np.testing.assert_allclose(segment_alpha(image[..., 3:], rgb, SCALE),
                               segment_alpha(image[..., 3:], rgb.clamp(0, 1), SCALE))


@pytest.fixture(scope="module")
def rgba_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fv_alpha")
    clip = make_video(folder / "clip.mkv", frames=38, width=WIDTH, height=HEIGHT, codec="ffv1", pix_fmt="bgra")
    spec = JobSpec(inputs=(str(clip),), model=ModelSettings(model="flashvsr-v1.1-tiny"),
                   flashvsr=FlashVSRSettings(segment_frames=21, segment_overlap=4))
    with open_reader(str(clip)) as reader:
        _, _, segments, tasks = plan_flashvsr_input(Job(str(clip), str(folder / "out.mkv"), "video"), spec, reader,
                                                    spec.flashvsr_model)
        source = InputSource.of(str(clip), False, None, 0, reader)
        frames = np.asarray(reader.read(0, reader.num_frames))
    assert frames.shape[-1] == 4 and len(segments.segments) == 2
    return spec, segments, tasks, source, frames


@pytest.mark.parametrize("alpha", [True, False])
def test_segments_carry_their_alpha_and_crossfade_it(rgba_clip, tmp_path, alpha):
    spec, segments, tasks, source, frames = rgba_clip
    context = FlashVSRContext(segments, segment_settings(spec), output_dtype(False), alpha=alpha)
    factory = FlashVSRProcessorFactory(spec.flashvsr_model, None, spec.flashvsr, dtype="fp32",
                                       streamer=StandInStreamer())
    sink = ArraySink()
    with WorkerPool(parse_devices("cpu,cpu"), factory) as pool:
        assert run_job(pool, source=source, tasks=tasks, workdir=tmp_path, key="alpha", sink=sink, context=context,
                       options=RunOptions(durable=False)).complete
    channels = 4 if alpha else 3
    assert sink.frames.shape == (38, 128, 128, channels)
    blended = torch.zeros((38, 128, 128, channels))
    for segment in segments.segments:
        local = torch.from_numpy(frames[segment.start : segment.stop])
        out = upscale_segment(local, StandInStreamer(), context.settings, torch.float32)
        if alpha:
            out = torch.cat([out, segment_alpha(local[..., 3:], out, SCALE)], dim=-1)
        shares = torch.from_numpy(segments.segment_shares(segment.index).astype(np.float32))
        blended[segment.start : segment.stop] += out * shares[:, None, None, None]
    expected = quantize(blended, torch.uint8).numpy()
    # Shared frames are summed as float32 partials in another order: one level at most.
    assert np.abs(sink.frames.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(("output", "alpha"), [("out.png", True), ("out.jpg", False), ("out.mov", True),
                                               ("out.mp4", False)])
def test_the_plan_says_where_alpha_is_kept_as_for_seedvr2(tmp_path, capsys, output, alpha):
    image = tmp_path / "rgba.png"
    image.write_bytes(encode_image(_rgba_square(), ".png"))
    for model in ("flashvsr-v1.1-tiny", "3b"):
        code, out, err = run_cli(capsys, "upscale", str(image), "-o", str(tmp_path / output), "--model", model,
                                 "--dry-run", "--log-format", "json")
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert next(e for e in events if e["event"] == "job_started")["plan"]["alpha"] is alpha, model


def _upscale_image(capsys, image, output, models):
    return run_cli(capsys, "upscale", str(image), "-o", str(output), "--model", "flashvsr-v1.1-tiny",
                   "--model-dir", str(models), "--no-download", "--dtype", "fp32", "--devices", "cpu")


def test_an_rgba_png_keeps_its_alpha_with_the_tiny_models(tiny_files, tmp_path, capsys):  # noqa: F811
    image = tmp_path / "rgba.png"
    image.write_bytes(encode_image(_rgba_square(), ".png"))
    code, _, err = _upscale_image(capsys, image, tmp_path / "out.png", tiny_files)
    assert code == 0, err
    picture = read_image(tmp_path / "out.png", deep=False, alpha=True)
    assert picture.shape == (128, 128, 4)
    alpha = picture[..., 3].astype(int)
    top, bottom, left, right = OUT_SQUARE
    assert np.abs(np.array(_extent(alpha, 64)) - np.array(OUT_SQUARE)).max() <= 2
    assert np.abs(alpha[top + 6 : bottom - 6, left + 6 : right - 6] - 128).max() <= 8
    assert alpha[: top - 6].max() <= 3 and alpha[:, right + 6 :].max() <= 3
    # To a format without alpha: the RGB as with alpha kept, the alpha dropped (as SeedVR2 does).
    code, _, err = _upscale_image(capsys, image, tmp_path / "out.jpg", tiny_files)
    assert code == 0, err
    flat = read_image(tmp_path / "out.jpg", deep=False, alpha=False)
    assert flat.shape == (128, 128, 3)
    assert np.abs(flat.astype(int) - picture[..., :3]).mean() < 3  # JPEG's loss only


def test_compare_left_half_carries_the_alpha_the_output_keeps():
    from seedvr_cli.run.flashvsr_plan import lq_like_output
    from seedvr_cli.run.side_by_side import side_by_side

    inputs = _rgba_square()[None]
    with_alpha = side_by_side(inputs, np.zeros((1, 128, 128, 4), dtype=np.uint8), lq_like_output(SCALE))
    without = side_by_side(inputs, np.zeros((1, 128, 128, 3), dtype=np.uint8), lq_like_output(SCALE))
    assert with_alpha.shape == (1, 128, 256, 4) and without.shape == (1, 128, 256, 3)
    np.testing.assert_array_equal(with_alpha[..., :3], without)
    left_alpha = with_alpha[0, :, :128, 3]
    assert np.abs(np.array(_extent(left_alpha, 64)) - np.array(OUT_SQUARE)).max() <= 1


def test_preview_of_an_rgba_image_shows_the_alpha_on_both_halves(tmp_path, capsys):
    import functools

    from seedvr_cli.run.flashvsr_models import FlashVSRFiles

    image = tmp_path / "rgba.png"
    image.write_bytes(encode_image(_rgba_square(), ".png"))
    files = FlashVSRFiles(*(tmp_path / name for name in ("dit.safetensors", "lq.ckpt", "tc.ckpt", "posi_prompt.pth")))
    for path in (files.dit, files.lq_proj, files.decoder, files.prompt):
        path.write_bytes(b"placeholder")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("seedvr_cli.run.upscale.resolve_flashvsr_files", lambda settings, model: files)
        patch.setattr("seedvr_cli.run.upscale.FlashVSRProcessorFactory",
                      functools.partial(FlashVSRProcessorFactory, streamer=StandInStreamer()))
        code, _, err = run_cli(capsys, "upscale", str(image), "-o", str(tmp_path / "out.png"), "--model",
                               "flashvsr-v1.1-tiny", "--devices", "cpu", "--preview", "0")
    assert code == 0, err
    picture = read_image(tmp_path / "out_preview_0.png", deep=False, alpha=True)
    assert picture.shape == (128, 256, 4)
    for half in (picture[:, :128, 3], picture[:, 128:, 3]):
        assert np.abs(np.array(_extent(half, 64)) - np.array(OUT_SQUARE)).max() <= 1
