"""Sampler, timestep shift, conditioning and per-window noise against the sampler fixture."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shared_path

from seedvr_cli.parity.tolerances import PIPELINE_MAX_ABS
from seedvr_cli.pipeline.condition import (
    add_input_noise,
    augmentation_noise,
    build_condition,
    dit_tokens,
    noise_latent,
    window_noise,
)
from seedvr_cli.pipeline.sampler import (
    add_noise,
    euler_sample,
    latent_grid_shift,
    one_step,
    uniform_trailing_timesteps,
)


@pytest.fixture(scope="module")
def fixture():
    from safetensors.torch import load_file

    directory = shared_path("fixtures", "pipeline")
    return json.loads((directory / "sampler_condition.json").read_text()), load_file(directory / "sampler_condition.safetensors")


def test_trailing_timesteps_bit_exact(fixture):
    index, _ = fixture
    for steps, values in index["trailing_timesteps"].items():
        assert torch.equal(uniform_trailing_timesteps(int(steps)), torch.tensor(values)), steps


def test_timestep_shift_bit_exact(fixture):
    index, _ = fixture
    for row in index["timestep_shift"]["rows"]:
        assert torch.equal(latent_grid_shift(torch.tensor(row["t_in"]), row["latent_shape_T_h_w"]), torch.tensor(row["t_out"]))
    for row in index["timestep_shift_as_called_by_reference_add_noise"]:
        assert torch.equal(latent_grid_shift(torch.tensor(row["t_in"]), row["shape_actually_passed"]), torch.tensor(row["t_out"]))


def test_one_step_calls_once_at_1000(fixture):
    _, t = fixture
    seen = []

    def velocity(x, timestep):
        seen.append(timestep)
        return t["onestep.pred_v"]

    x_0 = one_step(t["onestep.x_T"], velocity)
    assert seen == [1000.0]
    assert torch.allclose(x_0, t["onestep.x_0"], atol=PIPELINE_MAX_ABS, rtol=0)


def test_four_step_euler(fixture):
    _, t = fixture
    seen = []

    def velocity(x, timestep):
        seen.append(timestep)
        return 0.3 * x + t["fourstep.A"]

    x_0 = euler_sample(t["onestep.x_T"], velocity, uniform_trailing_timesteps(4))
    assert seen == [1000.0, 750.0, 500.0, 250.0]
    assert (x_0 - t["fourstep.x_0"]).abs().max() <= PIPELINE_MAX_ABS


def test_forward_lerp(fixture):
    _, t = fixture
    assert (add_noise(t["forward.x_0"], t["forward.x_T"], 250.0) - t["forward.x_t"]).abs().max() <= PIPELINE_MAX_ABS


def test_condition_and_its_noise(fixture):
    index, t = fixture
    aug = augmentation_noise(t["cond.base_noise"], t["cond.extra_noise"])
    assert (aug - t["cond.aug_noise"]).abs().max() <= PIPELINE_MAX_ABS
    noised = noise_latent(t["cond.latent"], aug, index["condition"]["latent_noise_scale"], "as_called")
    assert (noised - t["cond.latent_blur_noised"]).abs().max() <= PIPELINE_MAX_ABS
    assert (build_condition(noised) - t["cond.condition_noised"]).abs().max() <= PIPELINE_MAX_ABS
    assert torch.equal(build_condition(t["cond.latent"]), t["cond.condition_clean"])
    assert torch.equal(build_condition(t["cond_img.latent"]), t["cond_img.condition"])
    # Scale 0 leaves the latent alone (numz skips the step).
    assert noise_latent(t["cond.latent"], aug, 0.0) is t["cond.latent"]
    # The intended-shape variant is a different (documented) choice, 1.5e-3 away: far outside the
    # tolerance, so the fixture tells the two apart on any machine.
    intended = noise_latent(t["cond.latent"], aug, 0.3, "intended")
    assert (intended - noised).abs().max() > 10 * PIPELINE_MAX_ABS


def test_input_noise(fixture):
    _, t = fixture
    out = add_input_noise(t["input_noise.video"], t["input_noise.randn"], 0.4)
    assert (out - t["input_noise.out"]).abs().max() <= PIPELINE_MAX_ABS


def test_dit_tokens_layout():
    x_t = torch.randn(2, 3, 4, 16)
    condition = build_condition(torch.randn(2, 3, 4, 16))
    tokens, shape = dit_tokens(x_t, condition)
    assert tokens.shape == (24, 33) and shape.tolist() == [[2, 3, 4]]
    assert torch.equal(tokens[5, :16], x_t[0, 1, 1]) and torch.equal(tokens[5, 16:32], condition[0, 1, 1, :16])
    assert torch.all(tokens[:, 32] == 1)


def test_window_noise_depends_only_on_seed_start_and_stream():
    a = window_noise(42, 17, (2, 3, 4, 16))
    assert torch.equal(a, window_noise(42, 17, (2, 3, 4, 16))), "same window -> same noise, any caller"
    assert not torch.equal(a, window_noise(42, 18, (2, 3, 4, 16)))
    assert not torch.equal(a, window_noise(43, 17, (2, 3, 4, 16)))
    assert not torch.equal(a, window_noise(42, 17, (2, 3, 4, 16), stream="augment"))
    assert window_noise(42, 0, (1, 2), dtype=torch.bfloat16).dtype == torch.bfloat16
    # Drawing other windows in between (another GPU, another order) changes nothing.
    torch.manual_seed(0)
    window_noise(42, 0, (100,))
    torch.randn(10)
    assert torch.equal(a, window_noise(42, 17, (2, 3, 4, 16)))
    assert abs(float(a.mean())) < 0.2 and 0.8 < float(a.std()) < 1.2
