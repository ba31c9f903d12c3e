"""Write tests/fixtures/flashvsr_glue.safetensors: FlashVSR's preprocessing, colour fix and tile
maths as the reference ComfyUI node computes them, on small seeded inputs.

The reference functions are not copied: they are read by name from a checkout of
lihaoyun6/ComfyUI-FlashVSR_Ultra_Fast (``nodes.py``; ``src/pipelines/flashvsr_tiny.py``) with
``ast`` and executed here, so the fixture is exactly what that code computes:

    python scripts/make_flashvsr_glue_fixture.py PATH/TO/ComfyUI-FlashVSR_Ultra_Fast

(the fixture in the repository was made from commit 9bd91d0 on the CPU in float32.)
"""

from __future__ import annotations

import argparse
import ast
import math
import typing
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

_NODE_FUNCTIONS = ("largest_8n1_leq", "compute_scaled_and_target_dims", "tensor_upscale_then_center_crop",
                   "prepare_input_tensor", "calculate_tile_coords", "create_feather_mask")
_COLOR_FUNCTIONS = ("_calc_mean_std", "_adain", "_make_gaussian3x3_kernel", "_wavelet_blur", "_wavelet_decompose",
                    "_wavelet_reconstruct", "TorchColorCorrectorWavelet")


def load_functions(path: Path, names: tuple[str, ...]) -> dict:
    """The top-level definitions ``names`` of the file at ``path``, executed in a namespace that
    has what they use (torch, F, nn, math, typing names, a no-op clean_vram)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wanted = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names]
    missing = set(names) - {node.name for node in wanted}
    if missing:
        raise SystemExit(f"{path}: no definition of {', '.join(sorted(missing))}")
    namespace = {"torch": torch, "F": F, "nn": nn, "math": math, "clean_vram": lambda: None,
                 **{name: getattr(typing, name) for name in ("Tuple", "Literal", "Optional")}}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="checkout of lihaoyun6/ComfyUI-FlashVSR_Ultra_Fast")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures"
                        / "flashvsr_glue.safetensors")
    args = parser.parse_args()
    node = load_functions(args.reference / "nodes.py", _NODE_FUNCTIONS)
    color = load_functions(args.reference / "src" / "pipelines" / "flashvsr_tiny.py", _COLOR_FUNCTIONS)

    generator = torch.Generator().manual_seed(16)
    tensors: dict[str, torch.Tensor] = {}
    # A 5-frame 45x43 clip as ComfyUI gives it (float in [0, 1], [N, H, W, C]); the node pads clips
    # under 21 frames with their last frame before preparing them. Kept: frames 0, 1 and the last
    # of the prepared clip (the others repeat frame 4), to keep the file small.
    clip = torch.randint(0, 256, (5, 43, 45, 3), generator=generator, dtype=torch.uint8)
    tensors["clip_uint8"] = clip
    images = clip.float() / 255.0
    padded = torch.cat([images, images[-1:].repeat(21 - images.shape[0], 1, 1, 1)])
    for scale in (3, 4):
        lq, height, width, frames = node["prepare_input_tensor"](padded, "cpu", scale=scale, dtype=torch.float32)
        tensors[f"lq_scale{scale}"] = lq[:, :, [0, 1, frames - 1]].contiguous()
        tensors[f"lq_scale{scale}_meta"] = torch.tensor([height, width, frames])
    # Colour fix as every pipeline calls it (adain, clamp to [-1, 1], 16-frame chunks).
    hq = torch.randn((1, 3, 5, 32, 24), generator=generator) * 0.6 + 0.2
    ref = torch.rand((1, 3, 5, 32, 24), generator=generator) * 1.6 - 0.9
    tensors["color_hq"], tensors["color_lq"] = hq, ref
    tensors["color_fixed"] = color["TorchColorCorrectorWavelet"]()(hq, ref, clip_range=(-1, 1), chunk_size=16,
                                                                  method="adain")
    # The tile grid and the feather mask.
    for height, width, size, overlap in ((300, 520, 256, 24), (256, 700, 256, 24), (640, 640, 128, 32)):
        coords = node["calculate_tile_coords"](height, width, size, overlap)
        tensors[f"tiles_{height}_{width}_{size}_{overlap}"] = torch.tensor(coords)
    tensors["feather_96x80_ov16"] = node["create_feather_mask"]((96, 80), 16)[0, 0].contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"source": "lihaoyun6/ComfyUI-FlashVSR_Ultra_Fast nodes.py, "
                                                          "src/pipelines/flashvsr_tiny.py"})
    print(f"wrote {args.out}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())}")


if __name__ == "__main__":
    main()
