#!/usr/bin/env python3
"""The per-frame GroupNorm + SiLU alone, at the VAE decoder's 1080p shapes: Triton kernel against
FrameGroupNorm's PyTorch path (SEEDVR_KERNELS=off), bf16 channels-last, output into a fresh buffer.

Per shape: median time (triton.testing.do_bench, CUDA events), the bandwidth it implies for the
fewest bytes the work needs (input read once, output written once), and the kernel's max abs
difference from the PyTorch path. The kernel reads the input twice, so its floor is 3 passes.

Usage: python scripts/bench_group_norm.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# (channels, frames, height, width): the decoder's full-, half- and quarter-resolution stages at
# 1088x1920 with the frames a depth-first piece holds there, and the latent-size mid block.
SHAPES = [(128, 1, 1088, 1920), (128, 3, 1088, 1920), (256, 3, 544, 960), (512, 3, 272, 480), (512, 2, 136, 240)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import triton.testing

    from seedvr_cli.models.vae import FrameGroupNorm

    rows = []
    for channels, frames, height, width in SHAPES:
        # No grad, as the loader's models: the PyTorch path writes into a preallocated output.
        norm = FrameGroupNorm(32, channels, eps=1e-6).cuda().to(torch.bfloat16).requires_grad_(False)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
        x = torch.randn(1, channels, frames, height, width, device="cuda", dtype=torch.bfloat16)
        x = (x + 0.5).contiguous(memory_format=torch.channels_last_3d)
        outs, times = {}, {}
        for name, setting in (("kernel", "auto"), ("pytorch", "off")):
            os.environ["SEEDVR_KERNELS"] = setting
            out = torch.empty_like(x)
            times[name] = triton.testing.do_bench(lambda: norm.silu_into(x, out), warmup=50, rep=300,
                                                  return_mode="median")
            outs[name] = out
        nbytes = 2 * x.numel() * x.element_size()
        row = {"shape": [1, channels, frames, height, width], "kernel_ms": round(times["kernel"], 3),
               "pytorch_ms": round(times["pytorch"], 3), "speedup": round(times["pytorch"] / times["kernel"], 2),
               "kernel_gbps_min_bytes": round(nbytes / times["kernel"] / 1e6),
               "pytorch_gbps_min_bytes": round(nbytes / times["pytorch"] / 1e6),
               "max_abs_diff": float((outs["kernel"].float() - outs["pytorch"].float()).abs().max())}
        rows.append(row)
        del x, outs
    os.environ.pop("SEEDVR_KERNELS", None)
    print(f"{torch.cuda.get_device_name()}: GroupNorm + SiLU per frame, bf16 channels-last")
    print(f"{'shape [B,C,T,H,W]':<26} {'kernel ms':>10} {'pytorch ms':>11} {'speedup':>8} {'GB/s k/p':>12} {'max diff':>9}")
    for row in rows:
        bw = f"{row['kernel_gbps_min_bytes']}/{row['pytorch_gbps_min_bytes']}"
        print(f"{str(row['shape']):<26} {row['kernel_ms']:>10.3f} {row['pytorch_ms']:>11.3f} {row['speedup']:>8.2f} "
              f"{bw:>12} {row['max_abs_diff']:>9.4f}")
    if args.json:
        print(json.dumps({"bench": "group_norm", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
