#!/usr/bin/env python3
"""Run a command and sample its memory: peak RSS of the main process, of each child, and per-GPU VRAM.

Usage: python scripts/watch_run.py [--interval 0.5] [--json FILE] [--interrupt-after S] -- COMMAND [ARGS...]

Prints the command's own output, then one summary line: wall seconds, exit code, peak RSS of the
main process and of its largest child (workers), and the peak used memory of every GPU as
``nvidia-smi`` reports it (all processes on that GPU), plus the mean GPU utilization while it ran,
and the main process's RSS drift (median of the last quarter of the run minus the second quarter's).
``--json`` also keeps every RSS sample.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time

import psutil


def _gpu_sample() -> list[tuple[int, int]]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = []
    for line in out.strip().splitlines():
        used, util = (int(v.strip()) for v in line.split(","))
        rows.append((used, util))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--json", help="also write the summary as JSON to this file")
    parser.add_argument("--interrupt-after", type=float, default=None,
                        help="send the command SIGINT (Ctrl-C) after this many seconds, so a run that would "
                             "outlast a time limit still stops cleanly and gets measured")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")

    started = time.monotonic()
    process = subprocess.Popen(command)
    main_proc = psutil.Process(process.pid)
    peaks = {"main_rss": 0, "child_rss": 0, "gpu_used_mib": [], "gpu_util": []}
    rss_curve: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                rss = main_proc.memory_info().rss
                peaks["main_rss"] = max(peaks["main_rss"], rss)
                rss_curve.append((round(time.monotonic() - started, 1), rss))
                for child in main_proc.children(recursive=True):
                    try:
                        peaks["child_rss"] = max(peaks["child_rss"], child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            gpus = _gpu_sample()
            if gpus:
                if not peaks["gpu_used_mib"]:
                    peaks["gpu_used_mib"] = [0] * len(gpus)
                    peaks["gpu_util"] = [[] for _ in gpus]
                for i, (used, util) in enumerate(gpus):
                    peaks["gpu_used_mib"][i] = max(peaks["gpu_used_mib"][i], used)
                    peaks["gpu_util"][i].append(util)
            stop.wait(args.interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    interrupted = False
    try:
        code = process.wait(timeout=args.interrupt_after)
    except subprocess.TimeoutExpired:
        interrupted = True
        process.send_signal(signal.SIGINT)
        code = process.wait()
    stop.set()
    thread.join()
    wall = time.monotonic() - started
    # RSS over the run, in ten steps: shows whether the main process grows with the video length.
    step = max(1, len(rss_curve) // 10)
    quarter = len(rss_curve) // 4
    second_quarter = sorted(rss for _, rss in rss_curve[quarter:2 * quarter])
    last_quarter = sorted(rss for _, rss in rss_curve[-quarter:]) if quarter else []
    summary = {
        "command": " ".join(command), "exit_code": code, "interrupted": interrupted, "wall_s": round(wall, 2),
        "main_peak_rss_gib": round(peaks["main_rss"] / 2**30, 3),
        "largest_child_peak_rss_gib": round(peaks["child_rss"] / 2**30, 3),
        "gpu_peak_used_gib": [round(m / 1024, 2) for m in peaks["gpu_used_mib"]],
        "gpu_mean_util_pct": [round(sum(u) / len(u), 1) if u else 0.0 for u in peaks["gpu_util"]],
        "main_rss_curve_gib": [(t, round(r / 2**30, 3)) for t, r in rss_curve[::step]],
        # Whether the main process grows with the video: median RSS of the last quarter of the run
        # minus that of the second quarter (the first is start-up).
        "main_rss_drift_mib": round((last_quarter[len(last_quarter) // 2] - second_quarter[len(second_quarter) // 2])
                                    / 2**20, 1) if quarter else None,
    }
    print("WATCH " + json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**summary, "main_rss_samples_bytes": rss_curve}, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
