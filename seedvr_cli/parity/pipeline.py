"""Parity of the per-window pipeline against a fixture directory in the format of
``shared/fixtures/pipeline`` (sampler/condition, colour correction, preprocessing/batching and the
end-to-end orchestration). Everything is read from the files, so other seeds, sizes and settings
work unchanged.

The end-to-end cases run through our own plan, preprocess, condition, sampler, blend (reference
weights) and colour-correction functions, composed in numz's order: encode all windows, sample,
decode and blend into the timeline, then colour-correct each written slice
(docs/reference-behaviour.md R10) and drop the prepended frames. The VAE is ours, built from the
tiny-VAE fixture next to this directory (``../vae``); a second pass substitutes the recorded
decodes, which isolates the orchestration from VAE rounding. The DiT is the fixture's stand-in
(velocity ``x_t - (0.8 cond + 0.1)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from seedvr_cli.parity import CaseResult, compare
from seedvr_cli.parity.tolerances import (
    E2E_MAX_ABS,
    OUTLIER_MAX,
    OUTLIER_SHARE,
    PIPELINE_MAX_ABS,
    TIMESTEP_REL,
    VAE_DECODE_MAX_ABS,
)
from seedvr_cli.parity.vae import load_fixture_vae
from seedvr_cli.pipeline.blend import blend_weights, weighted_sum
from seedvr_cli.pipeline.color import color_correct
from seedvr_cli.pipeline.condition import add_input_noise, augmentation_noise, build_condition, noise_latent
from seedvr_cli.pipeline.plan import FrameSize, plan_frame_size
from seedvr_cli.pipeline.preprocess import preprocess
from seedvr_cli.pipeline.quantize import signed_to_unit
from seedvr_cli.pipeline.sampler import add_noise, euler_sample, latent_grid_shift, one_step, uniform_trailing_timesteps
from seedvr_cli.pipeline.temporal import append_padding, padded_length, plan_windows, prepend_padding
from seedvr_cli.pipeline.window import (
    WindowNoise,
    WindowSettings,
    condition_and_noise,
    crop_frames,
    decode_latent,
    encode_clip,
    restore_latent,
)

SAMPLER = "sampler_condition"
COLOR = "color_correction"
PREPROCESS = ("preprocess", "preprocess_batching")
E2E = "pipeline_e2e"

TOLERANCE = PIPELINE_MAX_ABS
TIMESTEP_RELATIVE = TIMESTEP_REL
E2E_TOLERANCE = E2E_MAX_ABS
DECODE_TOLERANCE = VAE_DECODE_MAX_ABS
# Sort-based colour methods: tie order makes the max meaningless, so judge_by_outliers counts values.
SORT_METHODS = ("lab", "hsv", "wavelet_adaptive")
STANDIN_SCALE, STANDIN_OFFSET = 0.8, 0.1
TEXT_TOKENS, TEXT_DIM = 58, 5120


def detect(fixture_dir: Path) -> bool:
    names = (SAMPLER, COLOR, *PREPROCESS, E2E)
    return any((Path(fixture_dir) / f"{name}.json").is_file() for name in names)


def run(fixture_dir: Path) -> list[CaseResult]:
    fixture_dir = Path(fixture_dir)
    results: list[CaseResult] = []
    with torch.inference_mode():
        if (fixture_dir / f"{SAMPLER}.json").is_file():
            results += run_sampler_condition(fixture_dir)
        if (fixture_dir / f"{COLOR}.json").is_file():
            results += run_color(fixture_dir)
        if (fixture_dir / f"{PREPROCESS[1]}.json").is_file():
            results += run_preprocess(fixture_dir)
        if (fixture_dir / f"{E2E}.json").is_file():
            results += run_e2e(fixture_dir)
    return results


def _load(fixture_dir: Path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    index = json.loads((fixture_dir / f"{name}.json").read_text())
    tensor_file = fixture_dir / f"{name}.safetensors"
    return index, (load_file(tensor_file) if tensor_file.is_file() else {})


def _exact(case: str, output: str, ours, reference) -> CaseResult:
    """Integer sequences / sizes: any difference fails."""
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(reference, dtype=torch.float64)
    if a.shape != b.shape:
        return CaseResult(case, output, float("inf"), float("inf"), 0.0, f"{list(ours)} != {list(reference)}")
    return compare(case, output, a, b, 0.0)


def judge_by_outliers(result: CaseResult, ours: torch.Tensor, reference: torch.Tensor) -> CaseResult:
    """Sort-based colour methods: pass when few values are off (tie order), not by the max."""
    diff = (ours.double() - reference.double()).abs()
    outliers = int((diff > result.tolerance).sum())
    share = outliers / max(diff.numel(), 1)
    passed = share <= OUTLIER_SHARE and result.max_abs <= OUTLIER_MAX
    note = f"{outliers}/{diff.numel()} values over tol ({share:.3%}; pass <= {OUTLIER_SHARE:.1%}, max <= {OUTLIER_MAX})"
    return CaseResult(result.case, result.output, result.max_abs, result.max_rel, result.tolerance, note, passed)


# ---------------------------------------------------------------- sampler and conditioning


def _timestep_row(case: str, output: str, ours: torch.Tensor, reference: list[float]) -> CaseResult:
    ref = torch.tensor(reference, dtype=torch.float32)
    tolerance = TIMESTEP_RELATIVE * float(ref.abs().max().clamp(min=1.0))
    return compare(case, output, ours, ref, tolerance, f"relative {TIMESTEP_RELATIVE:.0e}")


def run_sampler_condition(fixture_dir: Path) -> list[CaseResult]:
    index, t = _load(fixture_dir, SAMPLER)
    results: list[CaseResult] = []
    case = "sampler"
    for steps, values in index.get("trailing_timesteps", {}).items():
        results.append(_timestep_row(case, f"trailing_timesteps[{steps}]", uniform_trailing_timesteps(int(steps)), values))

    if "onestep.x_T" in t:
        calls: list[float] = []

        def recorded_velocity(x, timestep):
            calls.append(timestep)
            return t["onestep.pred_v"]

        results.append(compare(case, "onestep.x_0", one_step(t["onestep.x_T"], recorded_velocity), t["onestep.x_0"], TOLERANCE))
        expected = [c["t"] for c in index.get("onestep", {}).get("f_called_with", [])]
        if expected:
            results.append(_exact(case, "onestep.called_with_t", calls, expected))

    if "fourstep.A" in t:
        fourstep = index.get("fourstep", {})
        steps = len(fourstep.get("f_called_with", [])) or 4
        calls = []

        def linear_velocity(x, timestep):
            calls.append(timestep)
            return 0.3 * x + t["fourstep.A"]

        ours = euler_sample(t["onestep.x_T"], linear_velocity, uniform_trailing_timesteps(steps))
        results.append(compare(case, "fourstep.x_0", ours, t["fourstep.x_0"], TOLERANCE))
        if fourstep.get("f_called_with"):
            results.append(_exact(case, "fourstep.called_with_t", calls, [c["t"] for c in fourstep["f_called_with"]]))

    if "forward.x_t" in t:
        step = float(index.get("forward", {}).get("t", 250.0))
        ours = add_noise(t["forward.x_0"], t["forward.x_T"], step)
        results.append(compare(case, "forward.x_t", ours, t["forward.x_t"], TOLERANCE))

    for row in index.get("timestep_shift", {}).get("rows", []):
        shape = row["latent_shape_T_h_w"]
        ours = latent_grid_shift(torch.tensor(row["t_in"]), shape)
        results.append(_timestep_row("timestep_shift", "x".join(map(str, shape)), ours, row["t_out"]))
    for row in index.get("timestep_shift_as_called_by_reference_add_noise", []):
        shape = row["shape_actually_passed"]
        ours = latent_grid_shift(torch.tensor(row["t_in"]), shape)
        results.append(_timestep_row("timestep_shift_as_called", "x".join(map(str, shape)), ours, row["t_out"]))

    if "cond.latent" in t:
        cond = index.get("condition", {})
        scale = float(cond.get("latent_noise_scale", 0.3))
        aug = augmentation_noise(t["cond.base_noise"], t["cond.extra_noise"])
        results.append(compare("condition", "aug_noise", aug, t["cond.aug_noise"], TOLERANCE))
        noised = noise_latent(t["cond.latent"], aug, scale, "as_called")
        results.append(compare("condition", "latent_blur_noised", noised, t["cond.latent_blur_noised"], TOLERANCE))
        results.append(compare("condition", "condition_noised", build_condition(noised), t["cond.condition_noised"], TOLERANCE))
        clean = build_condition(t["cond.latent"])
        results.append(compare("condition", "condition_clean", clean, t["cond.condition_clean"], TOLERANCE))
    if "cond_img.latent" in t:
        image = build_condition(t["cond_img.latent"])
        results.append(compare("condition_image", "condition", image, t["cond_img.condition"], TOLERANCE))
    if "input_noise.video" in t:
        scale = float(index.get("input_noise", {}).get("input_noise_scale", 0.4))
        ours = add_input_noise(t["input_noise.video"], t["input_noise.randn"], scale)
        results.append(compare("input_noise", "out", ours, t["input_noise.out"], TOLERANCE))
    return results


# ---------------------------------------------------------------- colour correction


def run_color(fixture_dir: Path) -> list[CaseResult]:
    index, t = _load(fixture_dir, COLOR)
    results: list[CaseResult] = []
    for tag, entry in index.items():
        content, style = t[f"{tag}.content"], t[f"{tag}.style"]
        for method in entry.get("methods", {}):
            reference = t[f"{tag}.out_{method}"]
            ours = color_correct(content.clone(), style.clone(), method)
            result = compare(f"color/{tag}", method, ours, reference, TOLERANCE)
            if method in SORT_METHODS:
                result = judge_by_outliers(result, ours, reference)
            results.append(result)
    return results


# ---------------------------------------------------------------- preprocessing and batching


def run_preprocess(fixture_dir: Path) -> list[CaseResult]:
    index, t = _load(fixture_dir, PREPROCESS[1])
    if not t and (fixture_dir / f"{PREPROCESS[0]}.safetensors").is_file():
        t = load_file(fixture_dir / f"{PREPROCESS[0]}.safetensors")
    results: list[CaseResult] = []
    for transform in index.get("transforms", []):
        key = transform["key"]
        _, height, width = transform["input_T_H_W"]
        size = plan_frame_size(height, width, resolution=transform["resolution"], max_resolution=transform["max_resolution"])
        case = f"preprocess/{key}"
        results.append(_exact(case, "true_size", size.true, transform["true_target_hw_even"]))
        results.append(_exact(case, "padded_size", size.padded, transform["padded_hw"]))
        if f"{key}.input_tchw" in t:
            ours = preprocess(t[f"{key}.input_tchw"].permute(0, 2, 3, 1), size)
            results.append(compare(case, "output_cthw", ours, t[f"{key}.output_cthw"], TOLERANCE))

    for row in index.get("pad_video_temporal", []):
        length, mode = row["t"], row["mode"]
        if mode == "prepend":
            ours = prepend_padding(length, row["count"]) + list(range(length))
        elif mode == "append_count":
            ours = list(range(length)) + append_padding(length, row["count"])
        else:
            ours = list(range(length)) + append_padding(length, padded_length(length) - length)
        results.append(_exact("pad_video_temporal", f"{mode} t={length} count={row.get('count', '-')}", ours, row["frames"]))

    for overlap, weights in index.get("blend_weights", {}).items():
        ours = blend_weights(int(overlap), "reference")
        results.append(compare("blend_weights", f"overlap {overlap}", ours, torch.tensor(weights), TOLERANCE))
    return results


# ---------------------------------------------------------------- end to end


def standin_dit(calls: list[dict]) -> Callable:
    """The fixture's stand-in DiT: velocity ``x_t - (0.8 cond + 0.1)``; records what it was given."""

    def forward(vid, txt, vid_shape, txt_shape, timestep):
        calls.append(
            {
                "vid_shape_arg": vid_shape.tolist(),
                "vid_tensor_shape": list(vid.shape),
                "txt_tensor_shape": list(txt.shape),
                "txt_shape_arg": txt_shape.tolist(),
                "timestep": timestep.tolist(),
                "mask_channel_all_ones": bool((vid[:, 32] == 1).all()),
            }
        )
        return vid[:, :16] - (STANDIN_SCALE * vid[:, 16:32] + STANDIN_OFFSET)

    return forward


def _text_embedding(fixture_dir: Path) -> torch.Tensor:
    """The real positive embedding when the shared reference data is beside the fixtures.

    The stand-in DiT ignores the values; only the shape reaches the recorded calls.
    """
    for candidate in (fixture_dir.parent.parent / "reference" / "text_embeddings" / "pos_emb.safetensors",):
        if candidate.is_file():
            return load_file(candidate)["emb"].float()
    return torch.zeros(TEXT_TOKENS, TEXT_DIM)


def _fixture_vae(fixture_dir: Path):
    vae_dir = fixture_dir.parent / "vae"
    if not vae_dir.is_dir():
        return None
    return load_fixture_vae(vae_dir)


def numz_input_noise(
    seed: int,
    clips: list[torch.Tensor],
    enabled: bool,
    *,
    batch_frames: Sequence[int] | None = None,
    frame_size: FrameSize | None = None,
) -> list[torch.Tensor | None]:
    """numz's phase-1 CPU draws for input noise, one per clip in order, strides included.

    ``batch_frames[k]``: frames of batch k before its 4n+1 padding (after any uniform-batch
    padding); ``None`` means no clip was temporally padded. ``frame_size`` is needed as soon as one
    was, because the layout then depends on whether the spatial transform resized or padded.
    """
    input_draws: list[torch.Tensor | None] = [None] * len(clips)
    if not enabled:
        return input_draws
    counts = list(batch_frames) if batch_frames is not None else [clip.shape[1] for clip in clips]
    if len(counts) != len(clips):
        raise ValueError(f"{len(counts)} batch frame counts for {len(clips)} clips")
    # One seeding for the whole phase: batch k continues the generator where batch k-1 left it.
    torch.manual_seed(seed + 1_000_000)
    for k, (clip, count) in enumerate(zip(clips, counts)):
        strides = numz_clip_strides(tuple(clip.shape), count, frame_size)
        # randn_like fills memory in order, so the same strides give the same numbers.
        input_draws[k] = torch.empty_strided(tuple(clip.shape), strides).normal_()
    return input_draws


def numz_clip_strides(shape: tuple[int, ...], batch_frames: int, frame_size: FrameSize | None) -> tuple[int, ...]:
    """Strides of numz's transformed clip view ``[3, T', Hp, Wp]`` in the memory numz leaves it in."""
    channels, frames, height, width = shape
    if batch_frames % 4 == 1:
        # No temporal padding: the [T, H, W, C] frames are only permuted, and resize, clamp, pad and
        # normalize all keep a channels-last input channels-last.
        return (1, channels * height * width, channels * width, channels)
    if frame_size is None:
        raise ValueError(f"a {batch_frames}-frame batch is padded to 4n+1: its layout needs the frame size")
    if _spatial_transform_reallocates(frame_size):
        # The padding's permute/cat/permute-back left contiguous CTHW memory seen as TCHW; interpolate
        # and pad allocate their result contiguous in the TCHW order they were given.
        return (height * width, channels * height * width, width, 1)
    # Nothing reallocated after the cat, so the contiguous CTHW buffer reaches the draw unchanged.
    return (frames * height * width, height * width, width, 1)


def _spatial_transform_reallocates(size: FrameSize) -> bool:
    """Whether numz's resize or pad produces a new tensor (both hand back their input when the size
    already fits: torchvision's resize at an unchanged size, the pad at multiples of 16)."""
    resized = size.short_side != size.input or size.resized != size.short_side
    return resized or size.padded != size.resized


def numz_latent_noise(seed: int, latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """numz's phase-2 draws: reseeded per window; ``[T', h, w, 16]`` views of channel-first memory."""
    torch.manual_seed(seed)
    frames, h, w, _ = latent_shape
    strides = (h * w, w, 1, frames * h * w)
    base = torch.empty_strided(latent_shape, strides).normal_()
    extra = torch.empty_strided(latent_shape, strides).normal_()
    return base, extra


DIT_CALL_KEYS = ("vid_shape_arg", "vid_tensor_shape", "txt_tensor_shape", "txt_shape_arg", "timestep", "mask_channel_all_ones")


def _flatten_calls(calls: list[dict]) -> list[float]:
    """Every recorded DiT-call property as one number sequence (shapes, timestep, mask flag)."""
    flat: list[float] = [len(calls)]
    for call in calls:
        for key in DIT_CALL_KEYS:
            flat += torch.as_tensor(call[key], dtype=torch.float64).flatten().tolist()
    return flat


def run_e2e(fixture_dir: Path) -> list[CaseResult]:
    index, t = _load(fixture_dir, E2E)
    vae = _fixture_vae(fixture_dir)
    text = _text_embedding(fixture_dir)
    results: list[CaseResult] = []
    for name, scenario in index.items():
        results += run_scenario(name, scenario, t, vae, text, use_recorded_decodes=True)
        if vae is not None:
            results += run_scenario(name, scenario, t, vae, text, use_recorded_decodes=False)
        else:
            results.append(
                CaseResult(name, "own VAE pass", 0.0, 0.0, 0.0, f"skipped: no tiny VAE at {fixture_dir.parent / 'vae'}", None)
            )
    return results


def run_scenario(name: str, scenario: dict, t: dict, vae, text: torch.Tensor, *, use_recorded_decodes: bool) -> list[CaseResult]:
    info = scenario["generation_info"]
    params = scenario.get("params", {})
    method = params.get("color_correction", "lab")
    input_noise_scale = float(params.get("input_noise_scale", 0.0))
    latent_noise_scale = float(params.get("latent_noise_scale", 0.0))
    seed = int(info.get("seed", params.get("seed", 42)))
    case = f"{name}[{'recorded decodes' if use_recorded_decodes else 'own VAE'}]"
    results: list[CaseResult] = []

    frames = t[f"{name}.input_thwc"]
    plan = plan_windows(
        frames.shape[0],
        batch_size=int(info["batch_size"]),
        overlap=int(info.get("temporal_overlap", 0)),
        prepend=int(info.get("prepend_frames", 0)),
        uniform=bool(info.get("uniform_batch_size", False)),
        blend="reference",
        reference=True,
    )
    size = plan_frame_size(
        frames.shape[1], frames.shape[2], resolution=int(info["resolution"]), max_resolution=int(info.get("max_resolution", 0))
    )
    settings = WindowSettings(
        frame_size=size,
        dtype=torch.float32,
        color=method,
        input_noise_scale=input_noise_scale,
        latent_noise_scale=latent_noise_scale,
        seed=seed,
        output_dtype=None,
    )
    batches = scenario["batches"]
    results.append(_exact(case, "true_size", size.true, batches["true_target_dims"]))
    ours_info = [[w.write_start, w.stop, w.index, w.length] for w in plan.windows]
    results.append(_exact(case, "decode_batch_info", sum(ours_info, []), sum(batches["decode_batch_info"], [])))

    def check(output: str, ours: torch.Tensor, tolerance: float = TOLERANCE) -> None:
        reference = t.get(f"{name}.{output}")
        if reference is None:  # an intermediate this fixture did not record
            return
        results.append(compare(case, output, ours.reshape(reference.shape), reference, tolerance))

    # Phase 1: preprocess (+ input noise) every window; with our VAE, encode, sample and decode it.
    clips = [preprocess(frames[plan.window_input_frames(w)], size) for w in plan.windows]
    # numz pads a short last batch to the batch size before the 4n+1 padding decides the layout.
    uniform = bool(info.get("uniform_batch_size", False))
    batch_frames = [plan.batch_size if uniform else w.length for w in plan.windows]
    input_draws = numz_input_noise(seed, clips, input_noise_scale > 0, batch_frames=batch_frames, frame_size=size)
    calls: list[dict] = []
    dit = standin_dit(calls)
    decoded_windows: dict[int, torch.Tensor] = {}
    for window, clip, draw in zip(plan.windows, clips, input_draws):
        batch = f"batch{window.index}"
        if use_recorded_decodes:
            decoded = t[f"{name}.{batch}.vae_decoded_cthw"]
            decoded = decoded if decoded.dim() == 4 else decoded.unsqueeze(1)
        else:
            encoder_input = add_input_noise(clip, draw, input_noise_scale) if draw is not None else clip
            check(f"{batch}.vae_in_cthw", encoder_input)
            latent = encode_clip(vae, encoder_input, torch.float32)
            check(f"{batch}.cond_latent_cl", latent)
            # Phase 2: the one sampling step, with numz's noise draws.
            base, extra = numz_latent_noise(seed, tuple(latent.shape))
            x_T, condition = condition_and_noise(latent, settings, window.start, WindowNoise(x_T=base, augment=extra))
            restored = restore_latent(dit, x_T, condition, text, torch.float32)
            check(f"{batch}.dit_out_latent_cl", restored)
            # Phase 3: decode.
            decoded = decode_latent(vae, restored, torch.float32)
            check(f"{batch}.vae_decoded_cthw", decoded, DECODE_TOLERANCE)
        # Trim padding and crop to the true size: [t, 3, Ht, Wt], still in [-1, 1].
        decoded_windows[window.index] = crop_frames(decoded, window.length, size.true)

    if not use_recorded_decodes and "dit_calls" in scenario:
        results.append(_exact(case, "dit_calls", _flatten_calls(calls), _flatten_calls(scenario["dit_calls"])))

    # Blend into the timeline with our assembly (reference weights): frame j from its contributions.
    timeline = weighted_sum(plan, decoded_windows, 0, plan.timeline_length)

    # Phase 4: colour-correct each written slice against its window's clean input, then drop prepends.
    finished = torch.empty_like(timeline)
    for window, clip in zip(plan.windows, clips):
        written = slice(window.write_start, window.stop)
        style = crop_frames(clip, window.length, size.true)[window.write_start - window.start :]
        finished[written] = signed_to_unit(color_correct(timeline[written], style, method))
    output = finished[plan.prepend :].permute(0, 2, 3, 1)
    reference = t[f"{name}.output_thwc"]
    result = compare(case, "output_thwc", output, reference, E2E_TOLERANCE)
    if method in SORT_METHODS:
        result = judge_by_outliers(result, output, reference)
    results.append(result)
    return results
