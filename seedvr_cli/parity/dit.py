"""DiT parity: run our NaDiT on a fixture directory in the format of ``shared/fixtures/dit``.

A fixture directory holds model directories (``tiny_*/``: ``config.json`` = the reference NaDiT
constructor kwargs, ``weights.safetensors``, ``case_*.safetensors``), or is one such model
directory; optionally ``window_table.json`` and ``rope_tables.safetensors`` at its root. The model
is built from the config (3B or 7B style detected from the kwargs), so other seeds, shapes and
sizes work too. Tolerances: the DiT fixtures' stated float32 bound (``tolerances.dit_tolerance``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from seedvr_cli.models.attention import window_partition
from seedvr_cli.models.dit import BlockContext, NaDiT
from seedvr_cli.models.dit_config import dit_config, dit_config_from_reference
from seedvr_cli.parity import CaseResult, compare
from seedvr_cli.parity.tolerances import DIT_MAX_ABS, ROPE_MAX_ABS, dit_tolerance

# The bound for outputs up to |5|; larger ones get the relative form (dit_tolerance).
TOLERANCE = DIT_MAX_ABS
ROPE_TOLERANCE = ROPE_MAX_ABS
_ROPE_VARIANTS = {"3b": "3b", "7b": "7b", "tiny3b": "tiny-3b", "tiny7b": "tiny-7b"}


def _is_model_dir(path: Path) -> bool:
    config = path / "config.json"
    if not (config.is_file() and (path / "weights.safetensors").is_file() and any(path.glob("case_*.safetensors"))):
        return False
    try:
        kwargs = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(kwargs, dict) and {"vid_dim", "heads", "head_dim", "num_layers"} <= kwargs.keys()


def model_dirs(fixture_dir: Path) -> list[Path]:
    fixture_dir = Path(fixture_dir)
    if _is_model_dir(fixture_dir):
        return [fixture_dir]
    return sorted(p for p in fixture_dir.iterdir() if p.is_dir() and _is_model_dir(p)) if fixture_dir.is_dir() else []


def detect(fixture_dir: Path) -> bool:
    return bool(model_dirs(fixture_dir))


def load_fixture_model(model_dir: Path, attention_backend: str = "sdpa") -> NaDiT:
    """The fixture's model in float32 on the CPU, weights loaded strictly."""
    config = dit_config_from_reference(json.loads((model_dir / "config.json").read_text()), name=model_dir.name)
    model = NaDiT(config, attention_backend=attention_backend)
    weights = {name: tensor.float() for name, tensor in load_file(model_dir / "weights.safetensors").items()}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def run_case(model: NaDiT, case: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Our output for a case and the intermediates the fixtures record (names as in the fixture)."""
    inter: dict[str, torch.Tensor] = {}

    def recording_runner(blocks, vid, txt, ctx: BlockContext):
        inter["inter.emb"] = ctx.emb.reshape(ctx.emb.shape[0], -1)
        inter["inter.vid_in"], inter["inter.txt_in"] = vid, txt
        for i, block in enumerate(blocks):
            vid, txt = block(vid, txt, ctx)
            inter[f"inter.block{i}.vid"], inter[f"inter.block{i}.txt"] = vid, txt
        return vid, txt

    hook = model.vid_out.register_forward_pre_hook(lambda _m, args: inter.__setitem__("inter.pre_vid_out", args[0]))
    try:
        with torch.no_grad():
            args = [case[k] for k in ("vid", "txt", "vid_shape", "txt_shape", "timestep")]
            out = model(*args, block_runner=recording_runner)
    finally:
        hook.remove()
    # The last block's text stream is not computed: nothing reads the last block's text output.
    inter.pop(f"inter.block{model.config.num_layers - 1}.txt", None)
    return out, inter


def run(fixture_dir: Path) -> list[CaseResult]:
    fixture_dir = Path(fixture_dir)
    results: list[CaseResult] = []
    for model_dir in model_dirs(fixture_dir):
        model = load_fixture_model(model_dir)
        for case_path in sorted(model_dir.glob("case_*.safetensors")):
            case = load_file(case_path)
            name = f"{model_dir.name}/{case_path.stem}"
            out, inter = run_case(model, case)
            results.append(compare(name, "out", out, case["out"], dit_tolerance(case["out"])))
            if "out_fp64" in case:
                results.append(compare(name, "out_fp64", out, case["out_fp64"], dit_tolerance(case["out_fp64"])))
            for key in sorted(k for k in case if k.startswith("inter.") and k in inter):
                results.append(compare(name, key, inter[key], case[key], dit_tolerance(case[key]), note="intermediate"))
    results += window_table_results(fixture_dir)
    results += rope_table_results(fixture_dir)
    return results


def window_table_results(fixture_dir: Path) -> list[CaseResult]:
    """Mismatching windows against window_table.json (tolerance 0), one result per method."""
    path = Path(fixture_dir) / "window_table.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text())["entries"]
    results = []
    for method in ("regular", "shifted"):
        wrong = sum(
            [list(w) for w in window_partition(tuple(e["tokens_thw"]), method)] != e[method] for e in entries
        )
        results.append(
            CaseResult("window_table", method, float(wrong), float(wrong) / max(len(entries), 1), 0.0,
                       note=f"grids with a wrong partition, of {len(entries)}")
        )  # fmt: skip
    return results


def rope_table_results(fixture_dir: Path) -> list[CaseResult]:
    """Our frequencies / angle tables against rope_tables.safetensors (names like
    ``3b.freqs``, ``3b.vid_angles.win_2x3x4.txt5``, ``3b.txt_angles.txt5``, ``7b.vid_angles.win_1x1x5``)."""
    path = Path(fixture_dir) / "rope_tables.safetensors"
    if not path.is_file():
        return []
    results = []
    for key, reference in load_file(path).items():
        ours = rope_table(key)
        if ours is not None:
            results.append(compare("rope_tables", key, ours, reference, ROPE_TOLERANCE))
    return results


def rope_table(key: str) -> torch.Tensor | None:
    """Recompute one named table of rope_tables.safetensors; None for a name we do not know."""
    variant, _, what = key.partition(".")
    if variant not in _ROPE_VARIANTS:
        return None
    spec = dit_config(_ROPE_VARIANTS[variant]).rope
    if what == "freqs":
        return spec.frequencies()
    txt = re.fullmatch(r"txt_angles\.txt(\d+)", what)
    if txt:
        return spec.text_angles(int(txt[1]))
    vid = re.fullmatch(r"vid_angles\.win_(\d+)x(\d+)x(\d+)(?:\.txt(\d+))?", what)
    if vid:
        return spec.video_angles((int(vid[1]), int(vid[2]), int(vid[3])), int(vid[4] or 0))
    return None
