#!/usr/bin/env python3
"""One row of the memory table: run ``seedvr upscale`` under ``scripts/watch_run.py`` and collect
what the run says of itself (JSON log) and what nvidia-smi saw.

Usage: python scripts/memory_table.py --row NAME --log-dir DIR [--interrupt-after S] -- UPSCALE-ARGS...

Prints (and appends to DIR/table.md) one markdown row:
row | exit | what --vram auto chose | estimate | peak allocated | nvidia-smi peak | job s | window fps | worker RSS

``window fps`` is the input frames over the summed per-window phase seconds of the run (encode,
DiT, decode, colour, as the workers time them): the GPU's throughput without model loading and
file I/O, first window included. ``job s`` is the run's own time from first chunk to last frame.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--interrupt-after", type=float, default=None,
                        help="Ctrl-C the run after this many seconds (watch_run.py), so a slow row still reports")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    folder = Path(options.log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    limit = [] if options.interrupt_after is None else ["--interrupt-after", str(options.interrupt_after)]
    command = [sys.executable, str(ROOT / "scripts" / "watch_run.py"), "--json", str(folder / f"{options.row}.watch.json"),
               *limit, "--", sys.executable, "-m", "seedvr_cli", "upscale", *args, "--log-format", "json"]
    done = subprocess.run(command, capture_output=True, text=True)
    (folder / f"{options.row}.log").write_text(done.stdout + done.stderr)
    events, watch = [], {}
    for line in done.stdout.splitlines():
        if line.startswith("WATCH "):
            watch = json.loads(line[len("WATCH "):])
        elif line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    messages = [e["text"] for e in events if e.get("event") == "message"]
    choice = next((m.split(": ", 1)[1] for m in messages if m.startswith("--vram auto")), "-")
    plans = [e["plan"] for e in events if e.get("event") == "job_started"]
    estimate = plans[0].get("estimated_vram_gib") if plans else None
    summary = next((e for e in events if e.get("event") == "summary"), {})
    finished = next((e for e in events if e.get("event") == "job_finished"), {})
    warnings = [e.get("message", "") for e in events if e.get("event") == "progress" and e.get("kind") == "warning"]
    peak = max((summary.get("peak_vram_gib") or {}).values(), default=None)
    phases = summary.get("phase_seconds") or {}
    frames = summary.get("frames") or 0
    window_fps = frames / sum(phases.values()) if phases and frames else None
    smi = max(watch.get("gpu_peak_used_gib") or [0]) or None

    def fmt(value, pattern="{:.2f}"):
        return "-" if value is None else pattern.format(value)

    status = f"{done.returncode}" + ("" if finished.get("status") in (None, "done") else f" ({finished.get('status')})")
    row = (f"| {options.row} | {status} | {choice} | {fmt(estimate, '{:.1f} GiB')} | {fmt(peak, '{:.2f} GiB')} | "
           f"{fmt(smi, '{:.2f} GiB')} | {fmt(finished.get('seconds'), '{:.1f}')} | {fmt(window_fps)} | "
           f"{fmt(watch.get('largest_child_peak_rss_gib'), '{:.1f} GiB')} |")
    print(row)
    for warning in warnings:
        print(f"    warning: {warning}")
    if done.returncode and finished.get("message"):
        print(f"    failed: {finished['message'][-300:]}")
    with open(folder / "table.md", "a") as handle:
        handle.write(row + "\n")
        for warning in warnings:
            handle.write(f"    warning: {warning}\n")
    record = {"row": options.row, "args": args, "exit": done.returncode, "choice": choice, "estimate_gib": estimate,
              "peak_allocated_gib": peak, "nvidia_smi_peak_gib": smi, "job_seconds": finished.get("seconds"),
              "window_fps": window_fps, "phases": phases, "frames": frames, "warnings": warnings, "watch": watch}
    (folder / f"{options.row}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
