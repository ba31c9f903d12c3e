"""The FlashVSR engine through the real worker pool on the CPU, with the stand-in streamer:
segments planned independently of the devices, streamed one per chunk, crossfaded; 1 and 2
workers give the same pixels, equal to the segments blended by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from media_factory import make_video
from model_standins import StandInStreamer

from seedvr_cli.config import FlashVSRSettings, JobSpec, ModelSettings
from seedvr_cli.media.discovery import Job
from seedvr_cli.media.reader import open_reader
from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
from seedvr_cli.parallel.fakes import ArraySink
from seedvr_cli.pipeline.flashvsr.stream import upscale_segment
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.run.flashvsr_plan import output_dtype, plan_flashvsr_input, segment_settings
from seedvr_cli.run.flashvsr_processor import FlashVSRContext, FlashVSRProcessorFactory
from seedvr_cli.run.sources import InputSource

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def clip_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flashvsr")
    clip = make_video(folder / "clip.mkv", frames=50, width=40, height=36, codec="ffv1")
    spec = JobSpec(inputs=(str(clip),), model=ModelSettings(model="flashvsr-v1.1-tiny"),
                   flashvsr=FlashVSRSettings(segment_frames=21, segment_overlap=4))
    job = Job(str(clip), str(folder / "out.mkv"), "video")
    with open_reader(str(clip)) as reader:
        plan, size, segments, tasks = plan_flashvsr_input(job, spec, reader, spec.flashvsr_model)
        source = InputSource.of(str(clip), False, None, 0, reader)
        frames = reader.read(0, reader.num_frames)
    context = FlashVSRContext(segments, segment_settings(spec), output_dtype(False))
    return spec, plan, segments, tasks, source, context, np.asarray(frames)


def _run(devices: str, spec, tasks, source, context, workdir):
    factory = FlashVSRProcessorFactory(spec.flashvsr_model, None, spec.flashvsr, dtype="fp32",
                                       streamer=StandInStreamer())
    sink = ArraySink()
    with WorkerPool(parse_devices(devices), factory) as pool:
        result = run_job(pool, source=source, tasks=tasks, workdir=workdir, key="flashvsr", sink=sink,
                         context=context, options=RunOptions(durable=False))
    assert result.complete and sink.closed
    return sink.frames


def test_plan_cuts_overlapping_segments_at_output_size(clip_plan):
    _, plan, segments, tasks, *_ = clip_plan
    assert plan.output_size == (128, 128) and plan.unit == "segment" and not plan.alpha
    assert [(s.start, s.stop) for s in segments.segments] == [(0, 21), (17, 38), (34, 50)]
    assert [(t.read_start, t.read_stop, t.shared_head, t.shared_tail) for t in tasks] == [
        (0, 21, 0, 4), (17, 38, 4, 4), (34, 50, 4, 0)]
    assert plan.estimated_vram_gib > 3  # weights alone: 1.75 B parameters at 2 bytes


def test_one_and_two_workers_give_the_segments_blended_by_hand(clip_plan, tmp_path):
    spec, _, segments, tasks, source, context, frames = clip_plan
    one = _run("cpu", spec, tasks, source, context, tmp_path / "one")
    two = _run("cpu,cpu", spec, tasks, source, context, tmp_path / "two")
    assert one.shape == (50, 128, 128, 3) and one.dtype == np.uint8
    np.testing.assert_array_equal(one, two)

    blended = torch.zeros((50, 128, 128, 3), dtype=torch.float32)
    for segment in segments.segments:
        out = upscale_segment(torch.from_numpy(frames[segment.start:segment.stop]), StandInStreamer(),
                              context.settings, torch.float32)
        shares = torch.from_numpy(segments.segment_shares(segment.index).astype(np.float32))
        blended[segment.start:segment.stop] += out * shares[:, None, None, None]
    expected = quantize(blended, torch.uint8).numpy()
    # Partial sums of shared frames travel as float32 and are added in another order: one level at most.
    assert np.abs(one.astype(int) - expected.astype(int)).max() <= 1
    assert (one != expected).mean() < 0.01


def test_without_the_models_a_run_fails_in_one_line(clip_plan):
    from seedvr_cli.errors import CheckpointError
    from seedvr_cli.parallel.devices import parse_devices as devices

    spec, *_ = clip_plan
    factory = FlashVSRProcessorFactory(spec.flashvsr_model, files=replace_files(), settings=spec.flashvsr)
    with pytest.raises(CheckpointError, match="^dit: file not found; download it with `seedvr models download`"):
        factory(devices("cpu")[0])


def replace_files():
    from pathlib import Path

    from seedvr_cli.run.flashvsr_models import FlashVSRFiles

    return FlashVSRFiles(*(Path(name) for name in ("dit", "lq", "decoder", "prompt")))


def test_segment_settings_follow_the_spec():
    spec = JobSpec(inputs=("x",), model=ModelSettings(model="flashvsr-v1.0-full"),
                   flashvsr=FlashVSRSettings(scale=2, color_fix=False, tiled_dit=True, seed=7))
    settings = segment_settings(spec)
    assert (settings.scale, settings.color_fix, settings.tiled_dit, settings.seed) == (2, False, True, 7)
    assert replace(settings, seed=0) != settings


def test_compare_shows_the_input_as_flashvsr_sees_it(clip_plan):
    from seedvr_cli.pipeline.flashvsr.preprocess import unit_range, upscale_and_crop
    from seedvr_cli.run.flashvsr_plan import lq_like_output
    from seedvr_cli.run.side_by_side import side_by_side

    *_, frames = clip_plan
    outputs = np.zeros((3, 128, 128, 3), dtype=np.uint8)
    picture = side_by_side(frames[:3], outputs, lq_like_output(4))
    lq = upscale_and_crop(unit_range(torch.from_numpy(frames[:3])), 4, torch.float32)
    expected = quantize(((lq + 1) / 2)[0].permute(1, 2, 3, 0), torch.uint8).numpy()
    assert picture.shape == (3, 128, 256, 3)
    np.testing.assert_array_equal(picture[:, :, :128], expected)
    # The plain resize (no crop) would squeeze 160x144 into 128x128: another picture.
    assert not np.array_equal(side_by_side(frames[:3], outputs)[:, :, :128], expected)


class _OutOfMemoryStreamer:
    def stream(self, lq, noise, options):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB. GPU 0 has a total capacity "
                                     "of 23.5 GiB of which 1.2 GiB is free. If reserved but unallocated ...")
        yield  # a generator, as the seam's streamers are


def test_a_segment_out_of_gpu_memory_fails_in_one_line_naming_the_settings_that_need_less(clip_plan):
    from seedvr_cli.errors import ChunkOutOfMemory, UserError
    from seedvr_cli.run.flashvsr_processor import FlashVSRProcessor

    spec, _, _, tasks, _, context, frames = clip_plan
    processor = FlashVSRProcessor(_OutOfMemoryStreamer(), torch.float32, torch.device("cpu"), spec.flashvsr_model)
    task = tasks[0]
    with pytest.raises(ChunkOutOfMemory) as failure:
        processor.process(task, frames[task.read_start : task.read_stop], context)
    message = str(failure.value)
    assert isinstance(failure.value, UserError) and "\n" not in message
    assert "Tried to allocate 9.00 GiB" in message and "If reserved" not in message
    assert "21-frame segment" in message and "--dit-tiling on" in message and "--segment-frames" in message
    tiled = replace(context, settings=replace(context.settings, tiled_dit=True))
    with pytest.raises(ChunkOutOfMemory, match="smaller --dit-tile-size"):
        processor.process(task, frames[task.read_start : task.read_stop], tiled)
