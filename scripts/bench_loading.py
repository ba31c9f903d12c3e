#!/usr/bin/env python
"""Host RAM and GPU memory of loading checkpoints: real-size 7B fp16 and 7B GGUF Q4_K_M.

    python scripts/bench_loading.py                 # GPU machine: synthesizes ~22 GB of files
    python scripts/bench_loading.py --variant 3b    # the 3B files instead (~9 GB)
    python scripts/bench_loading.py --dir /data/ck  # reuse / keep the files there
    python scripts/bench_loading.py --tiny          # CPU smoke run with the tiny 7B

Each load runs in a fresh subprocess, which reports its resident set before loading (torch and the
CUDA context already initialised), its peak (VmHWM) and its resident set after loading, plus the
device memory the model holds. Targets (issue 4): loading the fp16 file peaks at no more than 1.1x
the file size in host RAM and keeps no host copy; the Q4_K_M model keeps about its file size on the
GPU. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (label, format written, compute dtype)
CASES = [
    ("fp16 -> fp16", "fp16", "float16"),
    ("fp16 -> bf16", "fp16", "bfloat16"),
    ("gguf Q4_K_M", "gguf-q4_k_m", "bfloat16"),
]
HOST_TARGET = 1.1
GPU_TARGET = 1.1


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _peak_rss() -> int:
    import resource

    # Some sandboxes leave VmHWM out of /proc; getrusage's maximum (KiB on Linux) is the same number.
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path: Path, device: str, dtype_name: str) -> dict:
    """Runs inside the child process: load once, report memory."""
    import torch

    import seedvr_cli.models.dit  # noqa: F401  (imported before the baseline, like the loader itself)
    from seedvr_cli.weights.loader import load_dit

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.empty(1, device=dev)  # create the context before the baseline
        torch.cuda.reset_peak_memory_stats(dev)
    gc.collect()
    baseline = _status_kb("VmRSS")
    start = time.perf_counter()
    model = load_dit(path, device=dev, compute_dtype=getattr(torch, dtype_name))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    gc.collect()
    tensors = [*model.parameters(), *model.buffers()]
    model_bytes = sum(t.numel() * t.element_size() for t in tensors)
    result = {
        "file_bytes": path.stat().st_size,
        "load_s": round(seconds, 2),
        "rss_baseline": baseline,
        "rss_peak": _peak_rss(),
        "rss_after": _status_kb("VmRSS"),
        "model_bytes": model_bytes,
        "compressed_layers": sum(1 for m in model.modules() if type(m).__name__ in ("GGUFLinear", "Fp8Linear")),
    }
    if dev.type == "cuda":
        result["gpu_allocated"] = torch.cuda.memory_allocated(dev)
        result["gpu_peak"] = torch.cuda.max_memory_allocated(dev)
    return result


def synthesize(folder: Path, variant: str, device: str) -> dict[str, Path]:
    from seedvr_cli.weights.synthesize import write_checkpoint

    paths = {}
    for fmt in sorted({fmt for _, fmt, _ in CASES}):
        path = folder / f"{variant}_{fmt}{'.gguf' if fmt.startswith('gguf') else '.safetensors'}"
        if not path.exists():
            start = time.perf_counter()
            write_checkpoint(variant, fmt, path, seed=0, device=device, text_embedding=False)
            print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
        paths[fmt] = path
    return paths


def run_child(path: Path, device: str, dtype_name: str) -> dict:
    command = [sys.executable, __file__, "--measure", str(path), "--device", device, "--dtype", dtype_name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {path} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny 7B on the CPU (smoke test of this script)")
    parser.add_argument("--variant", choices=["7b", "3b"], default="7b", help="which real-size DiT (default 7b)")
    parser.add_argument("--dir", type=Path, help="folder for the synthesized files (kept); default: a temp dir")
    parser.add_argument("--device", help="load onto this device (default: cuda, or cpu with --tiny)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    if args.measure:
        print(json.dumps(measure(args.measure, device, args.dtype)))
        return 0

    variant = "tiny-7b" if args.tiny else args.variant
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        folder, cleanup = args.dir, None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="seedvr-bench-loading-")
        folder = Path(cleanup.name)
    try:
        paths = synthesize(folder, variant, "cpu" if args.tiny else device)
        results = {label: run_child(paths[fmt], device, dtype) for label, fmt, dtype in CASES}
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    report(results, variant, device)
    return 0


def report(results: dict[str, dict], variant: str, device: str) -> None:
    gb = 1e9
    header = f"{'case':<14} {'file GB':>8} {'load s':>7} {'RSS base':>9} {'RSS peak':>9} {'peak/file':>9} " \
             f"{'RSS after':>9} {'model GB':>9} {'GPU GB':>7} {'GPU/file':>8}"  # fmt: skip
    print(f"checkpoint loading, {variant} on {device}")
    print(header)
    summary = {}
    for label, r in results.items():
        peak_ratio = r["rss_peak"] / r["file_bytes"]
        extra_ratio = (r["rss_peak"] - r["rss_baseline"]) / r["file_bytes"]
        gpu = r.get("gpu_allocated")
        gpu_ratio = gpu / r["file_bytes"] if gpu is not None else None
        print(f"{label:<14} {r['file_bytes'] / gb:>8.2f} {r['load_s']:>7.1f} {r['rss_baseline'] / gb:>9.2f} "
              f"{r['rss_peak'] / gb:>9.2f} {peak_ratio:>9.2f} {r['rss_after'] / gb:>9.2f} "
              f"{r['model_bytes'] / gb:>9.2f} {'-' if gpu is None else f'{gpu / gb:.2f}':>7} "
              f"{'-' if gpu_ratio is None else f'{gpu_ratio:.2f}':>8}")  # fmt: skip
        summary[label] = {**r, "rss_peak_over_file": round(peak_ratio, 3),
                          "rss_added_over_file": round(extra_ratio, 3),
                          "gpu_over_file": None if gpu_ratio is None else round(gpu_ratio, 3)}  # fmt: skip
    checks = {}
    if device.startswith("cuda"):
        fp16 = summary["fp16 -> fp16"]
        checks["fp16_host_peak_le_1.1x_file"] = fp16["rss_peak_over_file"] <= HOST_TARGET
        checks["fp16_no_host_copy_kept"] = (fp16["rss_after"] - fp16["rss_baseline"]) < 0.05 * fp16["file_bytes"]
        checks["q4_k_m_gpu_le_1.1x_file"] = summary["gguf Q4_K_M"]["gpu_over_file"] <= GPU_TARGET
    print(json.dumps({"bench": "loading", "variant": variant, "device": device, "cases": summary, "checks": checks}))


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    sys.exit(main())
