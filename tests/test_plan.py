"""Size plan and temporal plan: numz's examples (docs/reference-behaviour.md R4, R6) plus random property tests."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import shared_path

from seedvr_cli.errors import UsageError
from seedvr_cli.pipeline.blend import assemble, blend_weights, weighted_sum
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.config import ModelSettings, ProcessSettings, check_batch_size
from seedvr_cli.pipeline.temporal import (
    append_padding,
    padded_length,
    plan_windows,
    prepend_padding,
)

# ---------------------------------------------------------------- frame sizes

# numz's sizes (docs/reference-behaviour.md R4): input, resolution, max_resolution -> resized, true, padded.
SIZE_EXAMPLES = [
    ((120, 212), 1080, 0, (1080, 1908), (1080, 1908), (1088, 1920)),
    ((360, 640), 1080, 0, (1080, 1920), (1080, 1920), (1088, 1920)),
    ((478, 320), 1080, 0, (1613, 1080), (1612, 1080), (1616, 1088)),
    ((478, 320), 1080, 1280, (1280, 857), (1280, 856), (1280, 864)),
    ((360, 640), 720, 1000, (562, 1000), (562, 1000), (576, 1008)),
    ((121, 213), 1081, 0, (1081, 1902), (1080, 1902), (1088, 1904)),
    ((100, 100), 50, 0, (50, 50), (50, 50), (64, 64)),
]


@pytest.mark.parametrize("input_hw, resolution, max_resolution, resized, true, padded", SIZE_EXAMPLES)
def test_frame_size_examples(input_hw, resolution, max_resolution, resized, true, padded):
    size = plan_frame_size(*input_hw, resolution=resolution, max_resolution=max_resolution)
    assert (size.resized, size.true, size.padded) == (resized, true, padded)


def test_default_resolution_is_1080_short_side():
    assert plan_frame_size(360, 640).resized == (1080, 1920)


def test_scale_doubles_the_short_side():
    size = plan_frame_size(360, 640, scale=2)
    assert size.resized == (720, 1280)
    assert plan_frame_size(478, 320, scale=1.5).resized[1] == 480


def test_scale_and_resolution_together_is_a_usage_error():
    with pytest.raises(UsageError, match="--scale"):
        ProcessSettings(resolution=720, scale=2)
    # The plan trusts validated settings and only guards its contract.
    with pytest.raises(ValueError):
        plan_frame_size(360, 640, resolution=720, scale=2)


def test_odd_sizes_kept_without_even_rule():
    size = plan_frame_size(121, 213, resolution=1081, even=False)
    assert size.true == size.resized == (1081, 1902)


def test_frame_size_properties_random():
    rng = random.Random(0)
    for _ in range(500):
        h, w = rng.randint(1, 3000), rng.randint(1, 3000)
        resolution = rng.randint(16, 2200)
        cap = rng.choice([0, rng.randint(32, 4000)])
        try:
            size = plan_frame_size(h, w, resolution=resolution, max_resolution=cap)
        except UsageError as error:
            # Only a cap on an extreme aspect ratio can squeeze a side below 2 pixels.
            assert "too small" in str(error) and cap
            continue
        assert all(v % 2 == 0 for v in size.true)
        assert all(v % 16 == 0 for v in size.padded)
        assert all(p >= r >= t and r - t <= 1 and p - r < 16 for p, r, t in zip(size.padded, size.resized, size.true))
        if cap:
            assert max(size.resized) <= cap
        assert min(size.short_side) == resolution


# ---------------------------------------------------------------- padding functions and weights


def test_padding_functions_match_fixture():
    cases = json.loads(shared_path("fixtures", "pipeline", "preprocess_batching.json").read_text())["pad_video_temporal"]
    for case in cases:
        t = case["t"]
        if case["mode"] == "prepend":
            ours = prepend_padding(t, case["count"]) + list(range(t))
        elif case["mode"] == "append_count":
            ours = list(range(t)) + append_padding(t, case["count"])
        else:
            ours = list(range(t)) + append_padding(t, padded_length(t) - t)
        assert ours == case["frames"], case


def test_reference_blend_weights_match_fixture():
    weights = json.loads(shared_path("fixtures", "pipeline", "preprocess_batching.json").read_text())["blend_weights"]
    for overlap, expected in weights.items():
        assert torch.equal(blend_weights(int(overlap), "reference"), torch.tensor(expected))


@pytest.mark.parametrize("overlap", range(1, 40))
def test_crossfade_is_a_real_crossfade(overlap):
    w = blend_weights(overlap)
    assert w.shape == (overlap,)
    assert bool(((w > 0) & (w < 1)).all()), "every shared frame must mix both windows"
    assert bool((w[1:] < w[:-1]).all()), "monotone"
    assert torch.allclose(w + w.flip(0), torch.ones(overlap), atol=1e-6), "symmetric"


# ---------------------------------------------------------------- batch size validation


@pytest.mark.parametrize("bad, nearest", [(20, "17 or 21"), (8, "5 or 9"), (2, "1 or 5"), (0, "1")])
def test_batch_size_must_be_4n_plus_1(bad, nearest):
    with pytest.raises(UsageError, match=nearest):
        check_batch_size(bad)
    with pytest.raises(UsageError, match=nearest):
        ProcessSettings(batch_size=bad)
    with pytest.raises(ValueError):
        plan_windows(30, batch_size=bad)


def test_overlap_must_be_smaller_than_batch():
    with pytest.raises(UsageError, match="--temporal-overlap"):
        ProcessSettings(batch_size=5, temporal_overlap=5)
    with pytest.raises(ValueError):
        plan_windows(30, batch_size=5, overlap=5)
    # numz silently drops such an overlap; reference mode does too.
    assert plan_windows(30, batch_size=5, overlap=5, reference=True).overlap == 0


# ---------------------------------------------------------------- windows


# numz's window plans (docs/reference-behaviour.md R6):
# (N after prepend, batch, overlap, uniform) -> (start, end), encoded lengths.
BATCH_EXAMPLES = [
    (7, 0, 5, 0, False, [(0, 5), (5, 7)], [5, 5]),
    (11, 2, 5, 3, True, [(0, 5), (2, 7), (4, 9), (6, 11), (8, 13)], [5] * 5),
    (8, 0, 5, 2, False, [(0, 5), (3, 8)], [5, 5]),
    (6, 0, 8, 0, False, [(0, 6)], [9]),
    (14, 3, 9, 4, False, [(0, 9), (5, 14), (10, 17)], [9, 9, 9]),
    (10, 0, 6, 0, True, [(0, 6), (6, 10)], [9, 9]),
]


@pytest.mark.parametrize("frames, prepend, batch, overlap, uniform, spans, lengths", BATCH_EXAMPLES)
def test_reference_batch_plan(frames, prepend, batch, overlap, uniform, spans, lengths):
    plan = plan_windows(
        frames, batch_size=batch, overlap=overlap, prepend=prepend, uniform=uniform, blend="reference", reference=True
    )
    assert [(w.start, w.stop) for w in plan.windows] == spans
    assert [w.padded_length for w in plan.windows] == lengths


def _random_plan(rng: random.Random):
    reference = rng.random() < 0.3
    frames = rng.randint(1, 120)
    batch = rng.randint(1, 30) if reference else 4 * rng.randint(0, 8) + 1
    overlap = rng.randint(0, batch - 1)
    prepend = rng.choice([0, 0, rng.randint(1, 2 * frames + 3)])
    uniform = rng.random() < 0.3
    blend = rng.choice(["crossfade", "reference"])
    return plan_windows(
        frames, batch_size=batch, overlap=overlap, prepend=prepend, uniform=uniform, blend=blend, reference=reference
    )


def test_frames_in_equal_frames_out_random():
    """Identity windows assemble back to the input, for every combination of settings."""
    rng = random.Random(1)
    for _ in range(400):
        plan = _random_plan(rng)
        outputs = {}
        for w in plan.windows:
            assert w.padded_length % 4 == 1
            assert list(w.source[: w.length]) == list(range(w.start, w.stop)), "real frames first"
            assert all(w.start <= j < w.stop for j in w.source), "padding stays inside the window"
            inputs = plan.window_input_frames(w)
            assert len(inputs) == w.padded_length and all(0 <= i < plan.num_frames for i in inputs)
            # A window "upscales" to the input indices of its real frames.
            outputs[w.index] = torch.tensor(inputs[: w.length], dtype=torch.float64)[:, None]
        assert plan.windows[0].start == 0 and plan.windows[-1].stop == plan.timeline_length
        assembled = assemble(plan, outputs)
        assert assembled.shape[0] == plan.num_frames
        assert torch.allclose(assembled[:, 0], torch.arange(plan.num_frames, dtype=torch.float64), atol=1e-9)
        for i in range(plan.num_frames):
            parts = plan.contributions(i)
            assert abs(sum(p.weight for p in parts) - 1.0) < 1e-6
            assert all(0 <= p.local < plan.windows[p.window].length for p in parts)


def test_crossfade_mixes_every_overlap_frame():
    rng = random.Random(2)
    for _ in range(100):
        batch = 4 * rng.randint(1, 8) + 1
        overlap = rng.randint(1, batch // 2)
        frames = rng.randint(batch + 1, 200)
        plan = plan_windows(frames, batch_size=batch, overlap=overlap)
        for k, w in enumerate(plan.windows[1:], start=1):
            for j in range(w.start, w.start + overlap):
                parts = plan.timeline_contributions(j)
                assert len(parts) >= 2 and all(0 < p.weight < 1 for p in parts), (batch, overlap, j)


def test_prepended_frames_never_reach_the_output():
    plan = plan_windows(3, batch_size=5, overlap=2, prepend=4)
    assert plan.timeline_length == 7
    assert [plan.input_index(j) for j in range(7)] == [2, 2, 2, 1, 0, 1, 2]
    for i in range(3):
        assert all(plan.windows[p.window].start + p.local == 4 + i for p in plan.contributions(i))


def test_plan_does_not_depend_on_anything_but_video_and_settings():
    a = plan_windows(100, batch_size=21, overlap=4, prepend=2)
    b = plan_windows(100, batch_size=21, overlap=4, prepend=2)
    assert a == b


def test_integer_window_outputs_are_refused():
    """Blending happens in float, before the one quantisation."""
    plan = plan_windows(9, batch_size=5, overlap=1)
    outputs = {0: torch.full((5, 1), 10, dtype=torch.uint8), 1: torch.full((5, 1), 13, dtype=torch.uint8)}
    with pytest.raises(TypeError, match="float"):
        assemble(plan, outputs)


def test_ready_output_frames_are_final():
    """Frame i can be emitted once its windows are done, whatever the order they finished in."""
    plan = plan_windows(50, batch_size=9, overlap=3, prepend=2)
    outputs = {w.index: torch.rand(w.length, 1, dtype=torch.float64) for w in plan.windows}
    whole = assemble(plan, outputs)
    for done in range(1, len(plan.windows) + 1):
        ready = plan.ready_output_frames(done)
        for i in ready:
            assert all(p.window < done for p in plan.contributions(i))
        finished = {k: outputs[k] for k in reversed(range(done))}
        part = weighted_sum(plan, finished, plan.prepend, plan.prepend + len(ready))
        assert torch.equal(part, whole[: len(ready)])
    assert plan.ready_output_frames(len(plan.windows)) == range(50)


def test_compute_dtype_resolution():
    from seedvr_cli.pipeline.precision import resolve_compute_dtype

    assert resolve_compute_dtype("auto", "cpu") == torch.float32
    assert resolve_compute_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="--dtype"):
        ModelSettings(dtype="fp8")
    with pytest.raises(ValueError):
        resolve_compute_dtype("fp8", "cpu")
