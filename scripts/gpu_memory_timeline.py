#!/usr/bin/env python3
"""Where the VAE's GPU memory goes in one window: per-phase and per-module peaks, and the live
allocations at each phase's peak by source line.

For each variant (an implementation of ``VideoVAE`` and its settings) it runs ``encode`` and
``decode`` of one window at full size and prints:

- per phase: allocated before / peak / after (GiB), the transient (peak - before), the causal
  cache's largest size, and ms per frame (median of ``--repeats`` after a warm-up);
- with ``--modules``: per module (and per conv / norm call made outside ``__call__``) the largest
  peak over its entry and the absolute peak, top ``--top`` rows by absolute peak;
- with ``--timeline``: from ``torch.cuda.memory._record_memory_history``, the allocations alive at
  the moment of the phase's peak, summed by the source line that made them (cuDNN workspaces
  show up on the ``F.conv3d`` line, beside the conv's output);
- the largest absolute difference of each variant's outputs from the first variant's, and with
  ``--floor`` the bf16-vs-float32 difference of the first variant at a quarter of the size, as
  the scale of "bf16 noise".

Variants: ``--variant NAME[:key=value,...]``, keys ``impl`` (a vae.py file, e.g. an older
revision from ``git show REV:seedvr_cli/models/vae.py > old_vae.py``), ``slice_gib`` and
``layout`` (``cl`` or ``ncdhw``) where the implementation has those settings, and ``detail=1`` for
``--modules`` and ``--timeline`` on that variant alone. All variants share the weights.

Usage (GPU): python3 scripts/gpu_memory_timeline.py --vae ema_vae_fp16.safetensors
    --variant before:impl=old_vae.py --variant after --modules --timeline --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

GIB = 2**30
ROOT = str(Path(__file__).resolve().parents[1])


def gib(n: float) -> float:
    return round(n / GIB, 2)


class Memory:
    """The CUDA allocator's counters; zeros on the CPU, where the script only checks itself."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()


def load_impl(path: str | None):
    """The ``seedvr_cli.models.vae`` module, or the one in ``path`` loaded beside it (so its
    relative imports resolve to this checkout's config)."""
    if path is None:
        import seedvr_cli.models.vae as module

        return module
    name = f"seedvr_cli.models._vae_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_variant(text: str) -> dict:
    name, _, rest = text.partition(":")
    spec = {"name": name}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        spec[key] = value
    return spec


def build(spec: dict, weights: dict, config, dtype: torch.dtype):
    module = load_impl(spec.get("impl"))
    with torch.device("meta"):
        vae = module.VideoVAE(config)
    vae.load_state_dict(weights, assign=True)
    vae = vae.eval().requires_grad_(False)
    if "slice_gib" in spec:
        vae.slice_bytes = float(spec["slice_gib"]) * GIB
    if "layout" in spec:
        vae.memory_format = {"cl": torch.channels_last_3d, "ncdhw": torch.contiguous_format}[spec["layout"]]
    return module, vae


class ModulePeaks:
    """Peak allocated inside each module call. Nested calls reset the allocator's peak counter,
    so each caller folds its callees' peaks into its own running maximum."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.stack: list[list] = []
        self.rows: dict[str, dict] = defaultdict(lambda: {"calls": 0, "over_entry": 0, "peak": 0, "out": 0})
        self.cache_bytes = 0

    def enter(self, name: str) -> None:
        if self.stack:
            self.stack[-1][2] = max(self.stack[-1][2], self.memory.peak())
        self.memory.reset_peak()
        self.stack.append([name, self.memory.allocated(), 0])

    def leave(self, out=None) -> None:
        name, entry, running = self.stack.pop()
        peak = max(running, self.memory.peak())
        row = self.rows[name]
        row["calls"] += 1
        row["over_entry"] = max(row["over_entry"], peak - entry)
        row["peak"] = max(row["peak"], peak)
        if isinstance(out, torch.Tensor):
            row["out"] = max(row["out"], out.numel() * out.element_size())
        if self.stack:
            self.stack[-1][2] = max(self.stack[-1][2], peak)

    def instrument(self, module, vae) -> list:
        """Hooks on every submodule, plus wrappers for the calls that bypass ``__call__``
        (a conv's ``forward_padded``, a norm's ``silu_into``); returns the undo handles."""
        names = {m: n for n, m in vae.named_modules()}
        undo = []
        for sub, name in names.items():
            if not name:
                continue
            undo.append(sub.register_forward_pre_hook(lambda m, a, name=name: self.enter(name)))
            undo.append(sub.register_forward_hook(lambda m, a, out: self.leave(out)))
        peaks = self

        def wrap(cls, method, suffix):
            original = getattr(cls, method, None)
            if original is None:
                return

            def wrapped(inner, *args, **kwargs):
                peaks.enter(f"{names.get(inner, '?')}.{suffix}")
                out = original(inner, *args, **kwargs)
                cache = kwargs.get("cache", args[1] if len(args) > 1 else None)
                if cache is not None and hasattr(cache, "carried_bytes"):
                    peaks.cache_bytes = max(peaks.cache_bytes, cache.carried_bytes())
                elif cache is not None and hasattr(cache, "frames"):  # a MEMORY_BASELINE from before the rings
                    peaks.cache_bytes = max(peaks.cache_bytes, sum(t.numel() * t.element_size()
                                                                   for t in cache.frames.values()))
                peaks.leave(out)
                return out

            setattr(cls, method, wrapped)
            undo.append(_Restore(cls, method, original))

        wrap(module.CausalConv3d, "forward_padded", "conv")
        wrap(module.FrameGroupNorm, "silu_into", "norm_silu")
        return undo

    def table(self, top: int) -> list[dict]:
        rows = [{"module": n, **r} for n, r in self.rows.items()]
        rows.sort(key=lambda r: (-r["peak"], -r["over_entry"]))
        return rows[:top]


class _Restore:
    def __init__(self, cls, method, original) -> None:
        self.cls, self.method, self.original = cls, method, original

    def remove(self) -> None:
        setattr(self.cls, self.method, self.original)


def site(frames: list[dict]) -> str:
    """The innermost frame in this repository's code: where the allocation was asked for."""
    for frame in frames:
        filename = frame.get("filename", "")
        if filename.startswith(ROOT) and "gpu_memory_timeline" not in filename:
            return f"{Path(filename).relative_to(ROOT)}:{frame.get('line')} {frame.get('name')}"
    return "(outside the repository)"


def live_at_peak(trace: list[dict], top: int) -> dict:
    """Replay alloc/free events; the set alive when their sum was largest, grouped by site."""
    live: dict[int, dict] = {}
    total = best = best_at = 0
    for index, event in enumerate(trace):
        action = event["action"]
        if action == "alloc":
            live[event["addr"]] = event
            total += event["size"]
            if total > best:
                best, best_at = total, index
        elif action in ("free_requested", "free_completed") and event["addr"] in live:
            total -= live.pop(event["addr"])["size"]
    live.clear()
    for event in trace[: best_at + 1]:
        if event["action"] == "alloc":
            live[event["addr"]] = event
        elif event["action"] in ("free_requested", "free_completed"):
            live.pop(event["addr"], None)
    by_site: dict[str, list[int]] = defaultdict(list)
    for event in live.values():
        by_site[site(event.get("frames", []))].append(event["size"])
    sites = sorted(by_site.items(), key=lambda kv: -sum(kv[1]))[:top]
    return {
        "transient_gib": gib(best),
        "sites": [{"site": s, "gib": gib(sum(sizes)), "blocks": len(sizes), "largest_gib": gib(max(sizes))}
                  for s, sizes in sites],
    }


def run_phase(fn, repeats: int, memory: Memory) -> tuple[object, dict]:
    memory.sync()
    before = memory.allocated()
    memory.reset_peak()
    out = fn()  # warm-up, and the memory figures
    memory.sync()
    peak, after = memory.peak(), memory.allocated()
    times = []
    for _ in range(repeats):
        del out
        memory.sync()
        start = time.perf_counter()
        out = fn()
        memory.sync()
        times.append(time.perf_counter() - start)
    return out, {"before": gib(before), "peak": gib(peak), "after": gib(after),
                 "transient": gib(peak - before), "seconds": statistics.median(times) if times else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", help="VAE checkpoint (default: random weights written to --work)")
    parser.add_argument("--work", default="/tmp/seedvr-work", help="where a random checkpoint is written")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--height", type=int, default=1088)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--phases", default="encode,decode")
    parser.add_argument("--variant", action="append", default=[], help="NAME[:impl=FILE,slice_gib=X,layout=cl|ncdhw,detail=1]")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the warm-up")
    parser.add_argument("--modules", action="store_true", help="per-module peak table (one extra run)")
    parser.add_argument("--timeline", action="store_true", help="live allocations at the peak by source line")
    parser.add_argument("--floor", action="store_true", help="bf16-vs-float32 difference at a quarter size")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--device", default="cuda", help="cpu only checks the script itself (no memory figures)")
    args = parser.parse_args()

    from seedvr_cli.models.vae_config import vae_config
    from seedvr_cli.weights.loader import load_vae

    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device(args.device)
    memory = Memory(device)
    dtype = getattr(torch, args.dtype)
    path = args.vae
    if path is None:
        from seedvr_cli.weights.synthesize import write_checkpoint

        path = str(Path(args.work) / "ema_vae_fp16.safetensors")
        if not Path(path).exists():
            write_checkpoint("vae", "fp16", path, device=device.type)
    base = load_vae(path, device=device, dtype=dtype)
    config, weights = base.config, base.state_dict()
    specs = [parse_variant(v) for v in args.variant] or [{"name": "current"}]
    phases = args.phases.split(",")
    generator = torch.Generator(device=device).manual_seed(0)
    clip = torch.rand((1, 3, args.frames, args.height, args.width), generator=generator, device=device) * 2 - 1
    clip = clip.to(dtype)
    factor = config.spatial_factor
    latent = torch.randn((1, config.latent_channels, config.latent_frames(args.frames), args.height // factor,
                          args.width // factor), generator=generator, device=device).to(dtype)
    name = torch.cuda.get_device_name() if memory.cuda else "cpu"
    print(f"{name} torch {torch.__version__} {args.dtype}; clip {tuple(clip.shape)}, "
          f"latent {tuple(latent.shape)}; weights {gib(sum(w.numel() * w.element_size() for w in weights.values()))} GiB")

    results, firsts = [], {}
    for spec in specs:
        module, vae = build(spec, weights, config, dtype)
        calls = {"encode": lambda: vae.encode(clip)[0], "decode": lambda: vae.decode(latent)}
        for phase in phases:
            with torch.inference_mode():
                out, row = run_phase(calls[phase], args.repeats, memory)
            row.update(variant=spec["name"], phase=phase, ms_per_frame=round(1000 * row.pop("seconds") / args.frames, 1))
            if phase in firsts:
                diff = (out.float() - firsts[phase].to(out.device).float()).abs()
                row["max_abs_diff"] = float(diff.max())
                row["mean_abs_diff"] = float(diff.mean())
                del diff  # else the next phase's "before" counts it
            else:
                firsts[phase] = out.cpu()
            del out
            detail = spec.get("detail") == "1"
            if args.modules or detail:
                peaks = ModulePeaks(memory)
                undo = peaks.instrument(module, vae)
                with torch.inference_mode():
                    peaks.enter(phase)
                    calls[phase]()
                    peaks.leave()
                for handle in undo:
                    handle.remove()
                row["cache_gib"] = gib(peaks.cache_bytes)
                row["modules"] = [{**r, "over_entry": gib(r["over_entry"]), "peak": gib(r["peak"]), "out": gib(r["out"])}
                                  for r in peaks.table(args.top)]
            if (args.timeline or detail) and memory.cuda:
                memory.sync()
                torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
                with torch.inference_mode():
                    calls[phase]()
                memory.sync()
                snapshot = torch.cuda.memory._snapshot()
                torch.cuda.memory._record_memory_history(enabled=None)
                row["at_peak"] = live_at_peak(snapshot["device_traces"][torch.cuda.current_device()], args.top)
                del snapshot
            results.append(row)
            print(json.dumps(row))
        del vae
        if memory.cuda:
            torch.cuda.empty_cache()

    floor = {}
    if args.floor:
        _, small = build(specs[0], weights, config, dtype)
        _, wide = build(specs[0], {k: v.float() for k, v in weights.items()}, config, torch.float32)
        z = latent[..., : latent.shape[-2] // 4, : latent.shape[-1] // 4]
        x = clip[..., : clip.shape[-2] // 4, : clip.shape[-1] // 4]
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            torch.backends.cuda.matmul.allow_tf32 = False
            for phase, low, high in (("decode", lambda: small.decode(z), lambda: wide.decode(z.float())),
                                     ("encode", lambda: small.encode(x)[0], lambda: wide.encode(x.float())[0])):
                if phase in phases:
                    diff = (low().float() - high()).abs()
                    floor[phase] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
        print("bf16 vs float32 (first variant, quarter size):", json.dumps(floor))

    print()
    print(f"{'variant':<14} {'phase':<7} {'before':>7} {'peak':>7} {'after':>7} {'transient':>9} {'cache':>6} "
          f"{'ms/frame':>8} {'max|diff|':>10}")
    for row in results:
        print(f"{row['variant']:<14} {row['phase']:<7} {row['before']:>7.2f} {row['peak']:>7.2f} {row['after']:>7.2f} "
              f"{row['transient']:>9.2f} {row.get('cache_gib', float('nan')):>6.2f} {row['ms_per_frame']:>8.1f} "
              f"{row.get('max_abs_diff', 0.0):>10.2e}")
    for row in results:
        if "modules" in row:
            print(f"\n{row['variant']} {row['phase']}: modules by absolute peak (GiB)")
            print(f"  {'module':<52} {'calls':>5} {'peak':>7} {'over entry':>10} {'largest out':>11}")
            for r in row["modules"]:
                print(f"  {r['module'][:52]:<52} {r['calls']:>5} {r['peak']:>7.2f} {r['over_entry']:>10.2f} {r['out']:>11.2f}")
        if "at_peak" in row:
            at = row["at_peak"]
            print(f"\n{row['variant']} {row['phase']}: alive at the peak ({at['transient_gib']} GiB over the start), by site")
            for s in at["sites"]:
                print(f"  {s['gib']:>6.2f} GiB in {s['blocks']:>3} blocks (largest {s['largest_gib']:.2f})  {s['site']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "floor": floor}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
