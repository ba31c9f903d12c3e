"""ChunkBlend: a chunk's float windows blended on their device, quantised once, shared frames left as partials."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from seedvr_cli.parallel.fakes import SyntheticSource, run_serially
from seedvr_cli.parallel.tasks import plan_chunks
from seedvr_cli.pipeline.blend import weighted_sum
from seedvr_cli.pipeline.quantize import quantize
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.run.chunk_blend import ChunkBlend


class _WindowsProcessor:
    """Blends fixed float window outputs as ``SeedVRProcessor`` blends the model's."""

    def __init__(self, plan, outputs, dtype):
        self.plan, self.outputs, self.dtype = plan, outputs, dtype

    def process(self, task, frames, context):
        blend = ChunkBlend(task, self.dtype)
        for window in task.windows:
            blend.add(window.start, self.outputs[window.index].clone(), self.plan.window_shares(window.index))
        return blend.result()


def _blend_in_chunks(plan, outputs, per_chunk, dtype=torch.uint8):
    tasks = plan_chunks(plan.windows, windows_per_chunk=per_chunk, shares=plan.chunk_shares)
    processor = _WindowsProcessor(plan, outputs, dtype)
    return tasks, run_serially(SyntheticSource(plan.timeline_length), tasks, lambda device: processor)


def _outputs(plan, seed):
    gen = torch.Generator().manual_seed(seed)
    return {w.index: torch.rand(w.length, 3, 2, 3, generator=gen) for w in plan.windows}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16])
@pytest.mark.parametrize("per_chunk", [1, 2, 3])
def test_without_overlap_every_frame_is_its_window_quantised(dtype, per_chunk):
    """What quantising each window's output directly gave, bit for bit."""
    plan = plan_windows(23, batch_size=5, prepend=2)
    outputs = _outputs(plan, 1)
    tasks, frames = _blend_in_chunks(plan, outputs, per_chunk, dtype)
    assert all(t.shared_head == t.shared_tail == 0 for t in tasks)
    expected = torch.cat([quantize(outputs[w.index], dtype) for w in plan.windows]).numpy()
    np.testing.assert_array_equal(frames, expected)


def test_chunks_blend_like_the_whole_clip_for_any_overlap():
    """Frames inside one chunk are exactly the whole-clip blend quantised; shared ones, whose float
    sums may be added in another grouping, at most one code value away (exact with one window per chunk)."""
    rng = random.Random(4)
    for case in range(40):
        batch = 4 * rng.randint(1, 5) + 1
        plan = plan_windows(rng.randint(1, 60), batch_size=batch, overlap=rng.randint(0, batch - 1),
                            prepend=rng.choice([0, 3]), blend=rng.choice(["crossfade", "reference"]))
        outputs = _outputs(plan, case)
        per_chunk = rng.randint(1, 3)
        tasks, frames = _blend_in_chunks(plan, outputs, per_chunk)
        expected = quantize(weighted_sum(plan, outputs, 0, plan.timeline_length), torch.uint8).numpy()
        shared = np.zeros(plan.timeline_length, dtype=bool)
        for task in tasks:
            shared[task.out_start:task.out_start + task.shared_head] = True
            shared[task.out_stop - task.shared_tail:task.out_stop] = True
        np.testing.assert_array_equal(frames[~shared], expected[~shared])
        if per_chunk == 1:
            np.testing.assert_array_equal(frames, expected)
        else:
            assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def test_windows_must_come_in_order_and_reach_the_chunk_end():
    plan = plan_windows(13, batch_size=5, overlap=1)
    outputs = _outputs(plan, 2)
    (task,) = plan_chunks(plan.windows, windows_per_chunk=3, shares=plan.chunk_shares)
    blend = ChunkBlend(task, torch.uint8)
    with pytest.raises(ValueError, match="does not continue"):
        blend.add(plan.windows[1].start, outputs[1].clone(), plan.window_shares(1))
    blend.add(plan.windows[0].start, outputs[0].clone(), plan.window_shares(0))
    with pytest.raises(ValueError, match="do not reach"):
        blend.result()
    with pytest.raises(ValueError, match="uint8 or uint16"):
        ChunkBlend(task, None)
