#!/usr/bin/env python3
"""How much ``torch.compile`` of each DiT block buys at one 1080p window (a probe for issue 13).

Loads a DiT checkpoint on the GPU, runs one window's tokens (33 frames at 1088x1920: 9 latent
frames of 136x240) through the model eagerly and with every block compiled, and prints for each:
the DiT's ms per input frame (median of --repeats, CUDA events), the compile time of the first
call, and the max abs difference of the velocities.

Usage: python scripts/probe_dit_compile.py --model 3b.safetensors [--frames 33] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from seedvr_cli.pipeline.window import restore_latent  # noqa: E402
from seedvr_cli.weights.loader import load_dit  # noqa: E402


def timed_runs(dit, x_T, condition, txt, repeats: int) -> tuple[list[float], torch.Tensor, float]:
    began = time.perf_counter()
    out = restore_latent(dit, x_T, condition, txt, torch.bfloat16)
    torch.cuda.synchronize()
    first = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = restore_latent(dit, x_T, condition, txt, torch.bfloat16)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times, out, first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="default", help="torch.compile mode")
    options = parser.parse_args()
    device = torch.device("cuda:0")
    dit = load_dit(options.model, device=device, compute_dtype=torch.bfloat16)
    latent_frames = (options.frames - 1) // 4 + 1
    g = torch.Generator(device=device).manual_seed(0)
    x_T = torch.randn(latent_frames, 136, 240, 16, device=device, generator=g)
    condition = torch.randn(latent_frames, 136, 240, 17, device=device, generator=g)
    txt = torch.randn(58, dit.config.txt_in_dim, device=device, generator=g, dtype=torch.bfloat16)
    with torch.inference_mode():
        eager, reference, eager_first = timed_runs(dit, x_T, condition, txt, options.repeats)
        for block in dit.blocks:
            block.compile(mode=options.mode)
        compiled, out, compile_first = timed_runs(dit, x_T, condition, txt, options.repeats)
    result = {
        "frames": options.frames, "mode": options.mode,
        "eager_ms_per_frame": statistics.median(eager) / options.frames,
        "compiled_ms_per_frame": statistics.median(compiled) / options.frames,
        "eager_first_s": eager_first, "compile_first_s": compile_first,
        "max_abs_diff": (out - reference).abs().max().item(),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
