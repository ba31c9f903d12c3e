#!/usr/bin/env python3
"""End-to-end benchmark of the per-window pipeline in one process, with per-phase timing.

Loads the models as a worker does, feeds windows of frames (decoded from --input, or random), and
prints one table: resolution, frames, model, format, settings, fps end-to-end and per phase, peak
VRAM and peak host RAM. The first window is a warm-up (cuDNN autotuning, attention plans) and is
left out of the steady-state figures.

Usage: python scripts/bench.py --model 3b.safetensors --vae vae.safetensors [--input clip.mp4]
       [--frames 66] [--height 360 --width 640] [--resolution 1080] [--batch-size 33] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="DiT checkpoint file")
    parser.add_argument("--vae", required=True, help="VAE checkpoint file")
    parser.add_argument("--text-embedding", help="default: pos_emb.* next to the model")
    parser.add_argument("--input", help="video to read frames from (default: random frames)")
    parser.add_argument("--frames", type=int, default=66)
    parser.add_argument("--height", type=int, default=360, help="input height for random frames")
    parser.add_argument("--width", type=int, default=640, help="input width for random frames")
    parser.add_argument("--resolution", type=int, default=1080, help="output short side")
    parser.add_argument("--batch-size", type=int, default=33)
    parser.add_argument("--color", default="wavelet")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its algorithms (workers do not: see docs/benchmarks.md)")
    args = parser.parse_args()

    from seedvr_cli.parallel.devices import DeviceSpec
    from seedvr_cli.pipeline.window import WindowSettings, PhaseTimes, upscale_window
    from seedvr_cli.pipeline.plan import plan_frame_size
    from seedvr_cli.run.models import ModelFiles
    from seedvr_cli.run.processor import SeedVRProcessorFactory
    from seedvr_cli.pipeline.temporal import plan_windows
    from seedvr_cli.weights.text_embedding import find_text_embedding

    device = torch.device(args.device)
    if device.type == "cuda" and device.index:
        # The processor is built as inside a worker, which sees only its own GPU as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device.index)
        device = torch.device("cuda:0")
    text = Path(args.text_embedding) if args.text_embedding else find_text_embedding(args.model, download=False)
    load_started = time.perf_counter()
    spec = DeviceSpec("cuda", device.index or 0) if device.type == "cuda" else DeviceSpec("cpu", 0)
    processor = SeedVRProcessorFactory(ModelFiles(Path(args.model), Path(args.vae), text), dtype=args.dtype)(spec)
    load_s = time.perf_counter() - load_started
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    info = processor.dit.checkpoint_info

    if args.input:
        from seedvr_cli.media.reader import open_reader

        with open_reader(args.input) as reader:
            count = min(args.frames, reader.num_frames)
            frames = reader.read(0, count)
    else:
        generator = torch.Generator().manual_seed(0)
        frames = torch.randint(0, 256, (args.frames, args.height, args.width, 3), dtype=torch.uint8, generator=generator)
    count, height, width = frames.shape[:3]
    size = plan_frame_size(height, width, resolution=args.resolution)
    plan = plan_windows(count, batch_size=args.batch_size)
    settings = WindowSettings(frame_size=size, dtype=processor.dtype, color=args.color)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_window = []
    for window in plan.windows:
        times = PhaseTimes()
        window_frames = frames[plan.window_input_frames(window)].to(device)
        started = time.perf_counter()
        out = upscale_window(window_frames, vae=processor.vae, dit=processor.dit, text_embedding=processor.text_embedding,
                            settings=settings, window=window, times=times)
        out = out.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_window.append((window.length, time.perf_counter() - started, dict(times.seconds)))
    steady = per_window[1:] or per_window
    steady_frames = sum(n for n, _, _ in steady)
    steady_s = sum(s for _, s, _ in steady)
    phases: dict[str, float] = {}
    for _, _, seconds in steady:
        for phase, value in seconds.items():
            phases[phase] = phases.get(phase, 0.0) + value
    total_s = sum(s for _, s, _ in per_window)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": Path(args.model).name, "format": info.format, "dtype": str(processor.dtype).replace("torch.", ""),
        "input": f"{width}x{height}", "output": f"{size.true[1]}x{size.true[0]}", "frames": count,
        "batch_size": args.batch_size, "windows": len(plan.windows), "color": args.color,
        "load_s": round(load_s, 2),
        "fps_all_windows": round(count / total_s, 3),
        "fps_steady": round(steady_frames / steady_s, 3),
        "ms_per_frame_steady": {k: round(1000 * v / steady_frames, 1) for k, v in phases.items()},
        "peak_vram_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else 0.0,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    phase_text = " ".join(f"{k} {v}" for k, v in result["ms_per_frame_steady"].items())
    print(f"{'device':<22} {'model':<34} {'fmt':<6} {'in->out':<20} {'frames':>6} {'batch':>5} "
          f"{'fps all':>8} {'fps steady':>10} {'VRAM GiB':>8} {'RAM GiB':>7}")
    print(f"{result['device'][:22]:<22} {result['model'][:34]:<34} {result['format'][:6]:<6} "
          f"{result['input'] + '->' + result['output']:<20} {count:>6} {args.batch_size:>5} "
          f"{result['fps_all_windows']:>8.3f} {result['fps_steady']:>10.3f} {result['peak_vram_gib']:>8.2f} "
          f"{result['peak_rss_gib']:>7.2f}")
    print(f"steady ms/frame by phase: {phase_text}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
