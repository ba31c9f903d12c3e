#!/usr/bin/env python3
"""Real-size model smoke run on a GPU: random-weight 3B / 7B DiT and the VAE, one forward each.

Builds each network at its real size in bf16 with random weights directly on the GPU, runs one DiT
forward at a 1080p-output latent size (21 frames -> 6 latent frames of 136x240) and a VAE encode and
decode of the same clip, and prints time per forward (median of warm runs) and peak allocated VRAM.
This is the baseline that later speed work is measured against.

Usage: python scripts/gpu_models_smoke.py [--models 3b,7b,vae] [--frames 21] [--height 1088 --width 1920]
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


def _timed(fn, repeats: int) -> tuple[list[float], int]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, torch.cuda.max_memory_allocated()


def _random_init_(module: torch.nn.Module) -> None:
    """Small random weights: keeps activations finite through 32-36 blocks."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            fan_in = param[0].numel()
            param.data.normal_(0.0, fan_in**-0.5, generator=generator)
        elif name.endswith("weight") or "scale" in name:
            param.data.fill_(1.0)
        else:
            param.data.normal_(0.0, 0.02, generator=generator)


def smoke_dit(variant: str, latent_thw: tuple[int, int, int], repeats: int) -> dict:
    from seedvr_cli.models.dit import NaDiT
    from seedvr_cli.models.dit_config import dit_config

    config = dit_config(variant)
    with torch.device("cuda"):
        model = NaDiT(config).to(torch.bfloat16).eval().requires_grad_(False)
    _random_init_(model)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    t, h, w = latent_thw
    vid = torch.randn(t * h * w, 33, device="cuda", dtype=torch.bfloat16)
    txt = torch.randn(58, config.txt_in_dim, device="cuda", dtype=torch.bfloat16)
    vid_shape = torch.tensor([[t, h, w]], device="cuda")
    txt_shape = torch.tensor([[58]], device="cuda")
    timestep = torch.tensor([1000.0], device="cuda")

    def forward():
        return model(vid, txt, vid_shape, txt_shape, timestep)

    _timed(forward, 1)  # warm-up
    times, peak = _timed(forward, repeats)
    with torch.inference_mode():
        out = forward()
    result = {
        "model": f"dit-{variant}",
        "input": f"latent {t}x{h}x{w} ({t * h * w // 4} tokens)",
        "weights_gib": weights_bytes / 2**30,
        "median_s": statistics.median(times),
        "runs_s": times,
        "peak_alloc_gib": peak / 2**30,
        "finite": bool(torch.isfinite(out).all()),
    }
    del model, out
    torch.cuda.empty_cache()
    return result


def smoke_vae(frames: int, height: int, width: int, repeats: int) -> list[dict]:
    from seedvr_cli.models.vae import VideoVAE
    from seedvr_cli.models.vae_config import vae_config

    with torch.device("cuda"):
        vae = VideoVAE(vae_config("vae")).to(torch.bfloat16).eval().requires_grad_(False)
    _random_init_(vae)
    x = torch.rand(1, 3, frames, height, width, device="cuda", dtype=torch.bfloat16) * 2 - 1
    results = []

    def encode():
        return vae.encode(x)

    _timed(encode, 1)
    times, peak = _timed(encode, repeats)
    with torch.inference_mode():
        mean, _ = vae.encode(x)
    results.append({
        "model": "vae-encode", "input": f"{frames}x{height}x{width}", "median_s": statistics.median(times),
        "runs_s": times, "ms_per_frame": 1000 * statistics.median(times) / frames, "peak_alloc_gib": peak / 2**30,
        "finite": bool(torch.isfinite(mean).all()),
    })
    z = torch.randn_like(mean)

    def decode():
        return vae.decode(z)

    _timed(decode, 1)
    times, peak = _timed(decode, repeats)
    results.append({
        "model": "vae-decode", "input": f"latent {tuple(z.shape)}", "median_s": statistics.median(times),
        "runs_s": times, "ms_per_frame": 1000 * statistics.median(times) / frames, "peak_alloc_gib": peak / 2**30,
    })
    del vae
    torch.cuda.empty_cache()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="3b,7b,vae", help="comma list of 3b, 7b, vae")
    parser.add_argument("--frames", type=int, default=21, help="pixel frames (4n+1)")
    parser.add_argument("--height", type=int, default=1088, help="padded output height (multiple of 16)")
    parser.add_argument("--width", type=int, default=1920, help="padded output width (multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    results = []
    for name in args.models.split(","):
        if name == "vae":
            results += smoke_vae(args.frames, args.height, args.width, args.repeats)
        else:
            results.append(smoke_dit(name, latent, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    print(f"{'model':<12} {'input':<36} {'median s':>9} {'peak GiB':>9}")
    for r in results:
        print(f"{r['model']:<12} {r['input']:<36} {r['median_s']:>9.3f} {r['peak_alloc_gib']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
