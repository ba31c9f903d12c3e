#!/usr/bin/env python3
"""End-to-end benchmark of the per-window pipeline in one process, with per-phase timing.

Loads the models as a worker does, feeds windows of frames (decoded from --input, or random), and
prints: resolution, frames, model, format, fps, peak VRAM and host RAM; then per phase (preprocess,
encode, dit, decode, color) the steady ms/frame, the FLOPs per frame and the TFLOP/s they give,
and the phase's peak allocated VRAM.

- Time per phase: CUDA events around it (host clock on the CPU); the first window is a warm-up
  (kernel compilation, cuDNN plans) and is left out; every window is then run --repeats times and
  each phase reports the median over the repeats.
- FLOPs per phase: counted once, on the warm-up window, by torch.utils.flop_counter (convolutions,
  matrix products, attention: the arithmetic that matters; norms and elementwise work are not
  counted), divided by the window's frames.
- --vae-only: no DiT (the encoded latent is decoded as it is): times encode and decode without
  the DiT checkpoint.
- --compare-plain: runs the same windows again with the Triton kernels off (SEEDVR_KERNELS=off)
  and the DiT on its plain path (sdpa attention, no compiled blocks, fp8 weights upcast), prints
  that table too, and the max abs error and PSNR of the uint8 output frames between the two.
- DiT fast paths: --attention (as the CLI's flag), --compile (torch.compile of the DiT blocks; the
  compile runs on an extra untimed window and its time is reported; FLOPs are counted eagerly),
  --fp8-matmul (fp8 checkpoints multiply with torch._scaled_mm: SEEDVR_FP8_MATMUL=on).
- --kernel-rounding once: the GroupNorm kernel rounds only at the end, not also before the SiLU
  as the PyTorch path does (the default, "plain"); with --compare-plain it shows how much of the
  fast-vs-plain difference that rounding makes.
- --conv-rings: the VAE's frame-by-frame convs keep their input buffer as a ring (VideoVAE.conv_rings,
  the CLI's --vae-conv-rings; off by default for its memory) instead of copying carried frames.
- --reference-float32 (with --vae-only): also runs the VAE in float32 with the kernels off and
  compares each run's frames with it, which says which of fast and plain is nearer the exact
  pictures when the two differ.
- --cli-wall (with --input and --model): first, before this process loads anything, runs the CLI
  (`python -m seedvr_cli upscale`) on the same clip with the same models, resolution, batch size,
  device and DiT flags, to its default H.264 output in a temporary folder, and reports its process
  wall: from starting the interpreter to the file written and the process gone.

Usage: python scripts/bench.py --model 3b.safetensors --vae vae.safetensors [--input clip.mp4]
       [--frames 66] [--height 360 --width 640] [--resolution 1080] [--batch-size 33] [--device cuda:0]
       [--repeats 3] [--vae-only] [--compare-plain] [--reference-float32] [--conv-rings]
       [--kernel-rounding plain|once] [--json] [--attention auto|sdpa|flash|flex] [--compile] [--fp8-matmul]
       [--cli-wall]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


class PhaseMeter:
    """Passed as ``times`` to the window functions: per phase, CUDA event pairs (host clock on the
    CPU), the peak allocated VRAM while it ran, and, when counting, its FLOPs."""

    def __init__(self, device: torch.device, count_flops: bool = False) -> None:
        self.device, self.count_flops = device, count_flops
        self.spans: dict[str, list] = {}
        self.peak_bytes: dict[str, int] = {}
        self.flops: dict[str, int] = {}

    @contextmanager
    def __call__(self, phase: str, device: torch.device | None = None):
        cuda = self.device.type == "cuda"
        counter = None
        if self.count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            counter.__enter__()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
        else:
            begin = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self.peak_bytes[phase] = max(self.peak_bytes.get(phase, 0), torch.cuda.max_memory_allocated(self.device))
            else:
                end = time.perf_counter()
            self.spans.setdefault(phase, []).append((begin, end))
            if counter is not None:
                counter.__exit__(None, None, None)
                self.flops[phase] = self.flops.get(phase, 0) + counter.get_total_flops()

    def seconds(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {phase: sum(b.elapsed_time(e) for b, e in spans) / 1000 for phase, spans in self.spans.items()}
        return {phase: sum(e - b for b, e in spans) for phase, spans in self.spans.items()}


@contextmanager
def kernels_setting(value: str | None):
    """SEEDVR_KERNELS set to ``value`` (unchanged for None) while the block runs."""
    from seedvr_kernels import KERNELS_ENV

    before = os.environ.get(KERNELS_ENV)
    if value is not None:
        os.environ[KERNELS_ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNELS_ENV, None)
        else:
            os.environ[KERNELS_ENV] = before


@contextmanager
def plain_dit(dit):
    """The DiT on its plain path while the block runs: sdpa attention, compiled blocks run eagerly,
    fp8 weights upcast (``None``: no DiT, nothing to change)."""
    from seedvr_cli.weights.quantized import Fp8Linear

    if dit is None:
        yield
        return
    backend = dit.attention_backend
    fp8 = [m for m in dit.modules() if isinstance(m, Fp8Linear) and m.use_scaled_mm]
    dit.attention_backend = "sdpa"
    for module in fp8:
        module.use_scaled_mm = False
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        dit.attention_backend = backend
        for module in fp8:
            module.use_scaled_mm = True


@contextmanager
def counting_flops(dit, device: torch.device):
    """What the FLOP-counting warm-up runs with: everything eager (inductor's generated code calls
    its matmuls past the dispatcher the counter watches), and "flex" replaced by a backend of the
    same arithmetic (eager FlexAttention would build every window pair's scores: T x T at 1080p)."""
    backend = getattr(dit, "attention_backend", None)
    if backend == "flex":
        from seedvr_cli.models.attention_choice import choose_attention

        dit.attention_backend = choose_attention("auto", device, dit.compute_dtype or torch.bfloat16)[0]
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        if backend is not None:
            dit.attention_backend = backend


def run_windows(run_window, frames: torch.Tensor, plan, device: torch.device, repeats: int,
                compiling: bool = False, flop_context=contextlib.nullcontext) -> dict:
    """Warm-up (first window, FLOPs counted within ``flop_context()``; with ``compiling`` once more,
    compiled, and the compile time reported), then every window ``repeats`` times: per-phase median
    ms/frame, FLOPs/frame, peak VRAM, fps, and the last repeat's output frames (on the host)."""
    first = plan.windows[0]
    flop_meter = PhaseMeter(device, count_flops=True)
    with flop_context():
        run_window(frames[plan.window_input_frames(first)].to(device), first, flop_meter)
    flops_per_frame = {phase: flops / first.length for phase, flops in flop_meter.flops.items()}
    compile_s = None
    if compiling:
        from seedvr_cli.run.compile import compile_seconds

        began = time.perf_counter()
        run_window(frames[plan.window_input_frames(first)].to(device), first, PhaseMeter(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_s = {"compile_s": round(compile_seconds(), 1), "first_compiled_window_s":
                     round(time.perf_counter() - began, 1)}
    per_repeat, outputs, peaks, wall = [], [], {}, []
    for repeat in range(repeats):
        meter = PhaseMeter(device)
        outputs = []
        began = time.perf_counter()
        for window in plan.windows:
            out = run_window(frames[plan.window_input_frames(window)].to(device), window, meter)
            outputs.append(out.cpu())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - began)
        per_repeat.append(meter.seconds())
        for phase, peak in meter.peak_bytes.items():
            peaks[phase] = max(peaks.get(phase, 0), peak)
    count = sum(window.length for window in plan.windows)
    phases = {}
    for phase in per_repeat[0]:
        ms = [1000 * seconds[phase] / count for seconds in per_repeat]
        median = statistics.median(ms)
        flops = flops_per_frame.get(phase, 0.0)
        phases[phase] = {
            "ms_per_frame": round(median, 2), "ms_per_frame_min": round(min(ms), 2), "ms_per_frame_max": round(max(ms), 2),
            "gflop_per_frame": round(flops / 1e9, 1),
            "tflops": round(flops / (median / 1000) / 1e12, 1) if median > 0 else 0.0,
            "peak_vram_gib": round(peaks.get(phase, 0) / 2**30, 2),
        }
    return {"phases": phases, "fps_steady": round(count / statistics.median(wall), 3),
            "peak_vram_gib": round(max(peaks.values(), default=0) / 2**30, 2), "outputs": outputs,
            "compile": compile_s}


def picture_difference(fast: list[torch.Tensor], plain: list[torch.Tensor]) -> dict:
    """Max abs error and PSNR (peak = the dtype's maximum) between two runs' output frames."""
    squared, values, worst = 0.0, 0, 0
    for a, b in zip(fast, plain, strict=True):
        diff = a.to(torch.int32) - b.to(torch.int32)
        worst = max(worst, int(diff.abs().max()))
        squared += float(diff.double().square().sum())
        values += diff.numel()
    peak = float(torch.iinfo(fast[0].dtype).max) if not fast[0].is_floating_point() else 1.0
    mse = squared / max(values, 1)
    psnr = float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)
    return {"max_abs_error": worst, "psnr_db": round(psnr, 2) if math.isfinite(psnr) else "inf",
            "frames": sum(t.shape[0] for t in fast)}


def print_phases(title: str, result: dict) -> None:
    print(f"{title}: fps steady {result['fps_steady']:.3f}, peak VRAM {result['peak_vram_gib']:.2f} GiB")
    print(f"  {'phase':<11} {'ms/frame':>9} {'(min..max)':>16} {'GFLOP/frame':>12} {'TFLOP/s':>8} {'peak GiB':>9}")
    for phase, p in result["phases"].items():
        spread = f"{p['ms_per_frame_min']:.1f}..{p['ms_per_frame_max']:.1f}"
        print(f"  {phase:<11} {p['ms_per_frame']:>9.1f} {spread:>16} {p['gflop_per_frame']:>12.1f} "
              f"{p['tflops']:>8.1f} {p['peak_vram_gib']:>9.2f}")


def cli_process_wall(args: argparse.Namespace) -> float:
    """Seconds the CLI takes on ``args.input`` as a user runs it, interpreter start to exit."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="seedvr-bench-") as folder:
        output = Path(folder) / "out.mp4"
        command = [sys.executable, "-m", "seedvr_cli", "upscale", args.input, "-o", str(output), "--model", args.model,
                   "--vae", args.vae, "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
                   "--attention", args.attention, "--color-correction", args.color, "--no-resume"]
        if args.text_embedding:
            command += ["--text-embedding", args.text_embedding]
        if args.compile:
            command.append("--compile")
        device = torch.device(args.device)
        if device.type == "cuda":
            command += ["--devices", str(device.index or 0)]
        began = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if finished.returncode != 0 or not output.is_file():
            sys.exit(f"the CLI failed ({finished.returncode}): {' '.join(command)}\n{finished.stderr[-2000:]}")
    return round(wall, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="DiT checkpoint file (not needed with --vae-only)")
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
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the windows after the warm-up")
    parser.add_argument("--vae-only", action="store_true", help="no DiT: decode the encoded latent as it is")
    parser.add_argument("--compare-plain", action="store_true",
                        help="also run with SEEDVR_KERNELS=off and compare the output frames")
    parser.add_argument("--reference-float32", action="store_true",
                        help="with --vae-only: also run the VAE in float32 (kernels off) and compare each run with it")
    parser.add_argument("--kernel-rounding", choices=("plain", "once"), default="plain",
                        help="once: the GroupNorm kernel rounds only at the end, not also before the SiLU as "
                             "the PyTorch path does")
    parser.add_argument("--conv-rings", action="store_true",
                        help="VAE convs reuse ring buffers instead of copying their carried frames (--vae-conv-rings)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its algorithms (workers do not: see docs/benchmarks.md)")
    parser.add_argument("--attention", default="auto", help="DiT attention backend: auto, sdpa, flash, flex")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (as --compile)")
    parser.add_argument("--fp8-matmul", action="store_true",
                        help="fp8 checkpoints multiply in fp8 with torch._scaled_mm (SEEDVR_FP8_MATMUL=on)")
    parser.add_argument("--cli-wall", action="store_true",
                        help="also time the CLI's whole process on --input (start to file written), run first")
    args = parser.parse_args()
    if args.cli_wall and not (args.input and args.model):
        parser.error("--cli-wall needs --input and --model (the CLI runs the clip end to end)")
    cli_wall = cli_process_wall(args) if args.cli_wall else None
    if not args.vae_only and not args.model:
        parser.error("--model is required unless --vae-only is given")
    if args.reference_float32 and not args.vae_only:
        parser.error("--reference-float32 needs --vae-only (the DiT is not loaded twice)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from seedvr_cli.pipeline.plan import plan_frame_size
    from seedvr_cli.pipeline.precision import resolve_compute_dtype
    from seedvr_cli.pipeline.temporal import plan_windows
    from seedvr_cli.pipeline.window import WindowSettings, decode_window, encode_window, upscale_window

    if args.fp8_matmul:
        from seedvr_cli.weights.quantized import FP8_MATMUL_ENV

        os.environ[FP8_MATMUL_ENV] = "on"  # read by the loader
    device = torch.device(args.device)
    if device.type == "cuda" and device.index:
        # The processor is built as inside a worker, which sees only its own GPU as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device.index)
        device = torch.device("cuda:0")
    load_started = time.perf_counter()
    if args.vae_only:
        from seedvr_cli.weights.loader import load_vae

        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = False  # as a worker does (run/processor.py)
        dtype = resolve_compute_dtype(args.dtype, device)
        vae, dit, text_embedding = load_vae(args.vae, device=device, dtype=dtype), None, None
        model_name, model_format = "(vae only)", vae.checkpoint_info.format
    else:
        from seedvr_cli.parallel.devices import DeviceSpec
        from seedvr_cli.run.models import ModelFiles
        from seedvr_cli.run.processor import SeedVRProcessorFactory
        from seedvr_cli.weights.text_embedding import find_text_embedding

        text = Path(args.text_embedding) if args.text_embedding else find_text_embedding(args.model, download=False)
        spec = DeviceSpec("cuda", device.index or 0) if device.type == "cuda" else DeviceSpec("cpu", 0)
        processor = SeedVRProcessorFactory(ModelFiles(Path(args.model), Path(args.vae), text), dtype=args.dtype,
                                           attention_backend=args.attention, compile=args.compile)(spec)
        vae, dit, text_embedding, dtype = processor.vae, processor.dit, processor.text_embedding, processor.dtype
        model_name, model_format = Path(args.model).name, processor.dit.checkpoint_info.format
        for note in processor.notes:
            print(f"note: {note}")
    load_s = time.perf_counter() - load_started
    vae.conv_rings = args.conv_rings
    from seedvr_cli.models.vae import FrameGroupNorm

    FrameGroupNorm.kernel_rounds_norm = args.kernel_rounding == "plain"
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True

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
    settings = WindowSettings(frame_size=size, dtype=dtype, color=args.color)

    def window_runner(vae, settings):
        def run_window(window_frames: torch.Tensor, window, meter: PhaseMeter) -> torch.Tensor:
            if dit is None:
                encoded = encode_window(window_frames, vae=vae, settings=settings, window=window, times=meter)
                return decode_window(encoded, encoded.latent, vae=vae, settings=settings, times=meter)
            return upscale_window(window_frames, vae=vae, dit=dit, text_embedding=text_embedding,
                                  settings=settings, window=window, times=meter)

        return run_window

    def float32_runner():
        from dataclasses import replace

        return window_runner(load_vae(args.vae, device=device, dtype=torch.float32),
                             replace(settings, dtype=torch.float32))

    # name -> (SEEDVR_KERNELS, window function factory, repeats); the float32 VAE is loaded last,
    # so the other runs' peak memory does not include it.
    runs = {"current": (None, lambda: window_runner(vae, settings), args.repeats)}
    if args.compare_plain:
        runs["plain"] = ("off", lambda: window_runner(vae, settings), args.repeats)
    if args.reference_float32:
        runs["float32"] = ("off", float32_runner, 1)
    measured = {}
    for name, (setting, make_runner, repeats) in runs.items():
        plain = plain_dit(dit) if name != "current" else contextlib.nullcontext()
        with kernels_setting(setting), plain:
            measured[name] = run_windows(make_runner(), frames, plan, device, repeats,
                                         compiling=args.compile and name == "current",
                                         flop_context=lambda: counting_flops(dit, device))
    current = measured["current"]
    from seedvr_kernels import kernels_setting as current_setting

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": model_name, "format": model_format, "dtype": str(dtype).replace("torch.", ""),
        "kernels": current_setting(), "conv_rings": vae.conv_rings,
        "attention": getattr(dit, "attention_backend", None),
        "compile": current["compile"], "fp8_matmul": args.fp8_matmul, "kernel_rounding": args.kernel_rounding,
        "input": f"{width}x{height}", "output": f"{size.true[1]}x{size.true[0]}",
        "frames": count, "batch_size": args.batch_size, "windows": len(plan.windows), "repeats": args.repeats,
        "color": args.color, "load_s": round(load_s, 2),
        "fps_steady": current["fps_steady"],
        "ms_per_frame_steady": {k: v["ms_per_frame"] for k, v in current["phases"].items()},
        "phases": current["phases"],
        "peak_vram_gib": current["peak_vram_gib"],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if cli_wall is not None:
        result["cli_process_wall_s"] = cli_wall
    if args.compare_plain:
        plain = measured["plain"]
        result["plain"] = {k: v for k, v in plain.items() if k != "outputs"}
        result["fast_vs_plain"] = picture_difference(current["outputs"], plain["outputs"])
    if args.reference_float32:
        for name in [n for n in measured if n != "float32"]:
            result[f"{name}_vs_float32"] = picture_difference(measured[name]["outputs"], measured["float32"]["outputs"])
    print(f"{'device':<22} {'model':<34} {'fmt':<6} {'in->out':<20} {'frames':>6} {'batch':>5} "
          f"{'fps steady':>10} {'VRAM GiB':>8} {'RAM GiB':>7}")
    print(f"{result['device'][:22]:<22} {result['model'][:34]:<34} {result['format'][:6]:<6} "
          f"{result['input'] + '->' + result['output']:<20} {count:>6} {args.batch_size:>5} "
          f"{result['fps_steady']:>10.3f} {result['peak_vram_gib']:>8.2f} {result['peak_rss_gib']:>7.2f}")
    if cli_wall is not None:
        print(f"CLI process wall on {args.input}: {cli_wall} s (start to file written)")
    if current["compile"]:
        print(f"compile: {current['compile']['compile_s']} s in torch.compile, first compiled window "
              f"{current['compile']['first_compiled_window_s']} s")
    print_phases(f"kernels {result['kernels']}, attention {result['attention']}, compile {args.compile}, "
                 f"fp8 matmul {args.fp8_matmul}", current)
    if args.compare_plain:
        print_phases("kernels off, DiT plain (sdpa, eager blocks, fp8 upcast)", measured["plain"])
        diff = result["fast_vs_plain"]
        print(f"fast vs plain, {diff['frames']} output frames: max abs error {diff['max_abs_error']}, "
              f"PSNR {diff['psnr_db']} dB")
    for name in [n for n in measured if n != "float32"] if args.reference_float32 else []:
        diff = result[f"{name}_vs_float32"]
        print(f"{'fast' if name == 'current' else name} vs float32: max abs error {diff['max_abs_error']}, "
              f"PSNR {diff['psnr_db']} dB")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
