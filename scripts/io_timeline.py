#!/usr/bin/env python
"""Where a run waits on file I/O: one `seedvr upscale` with the stage timeline on, summed up.

    python scripts/io_timeline.py                                   # CPU: tiny models, 66 frames 320x180 -> 360p
    python scripts/io_timeline.py --model 3b.safetensors --vae vae.safetensors --devices 0 \\
        --width 640 --height 360 --resolution 1080 --batch-size 33   # the same on a GPU
    python scripts/io_timeline.py --json out.json                   # also the figures as JSON
    python scripts/io_timeline.py --standin --frames 90 --width 640 --height 360 --scale 2 --batch-size 9
        # the engine with real media I/O around a stand-in model (see below)
    python scripts/io_timeline.py --extra --chunk-windows 2          # --extra takes the rest of the line

The run's processes append one line per stage and chunk to a file (``SEEDVR_TIMELINE``,
``parallel/timeline.py``): in each worker the model load, every chunk's frame read, processing,
the wait for the next chunk's frames (``wait_input``), the wait for the spill writer
(``wait_output``) and the spill write; in the parent every spill read, every hand-over of frames
to the output writer and every encode, and the ``finish`` after the last chunk. The table says how
long the device side stood still for want of frames, how long it was held up by the disk, and how
long the output took once the last chunk was done. Without ``--model``, tiny random checkpoints
are written to a temporary folder (CPU only: the numbers then show the shape of the waits, not a
GPU's times). The tiny models are so slow on a CPU, and their frames so small, that file I/O hardly
shows beside them; ``--standin`` keeps every file operation real (the clip decoded by the workers'
reader, spill files, the output encoded by the media writer) but replaces the models by the
sleeping model below: it loads for ``--load-s``, then per chunk sleeps ``--frame-s`` per frame,
leaving the CPU free as a GPU would, and upscales by pixel repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seedvr_cli.parallel.timeline import TIMELINE_ENV  # noqa: E402


def summarize(spans: list[dict], launched: float, ended: float) -> dict:
    """The waits of one run, from its timeline ``spans`` (seconds since ``launched``)."""
    by_who: dict[str, list[dict]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: s["start"]):
        by_who[span["who"]].append(span)
    parent = by_who.pop("parent", [])
    summary: dict = {"wall_s": ended - launched, "workers": {}, "parent": {}}

    def total(items: list[dict], stage: str) -> float:
        return sum(s["end"] - s["start"] for s in items if s["stage"] == stage)

    def first(items: list[dict], stage: str) -> dict | None:
        return next((s for s in items if s["stage"] == stage), None)

    last_process_end = launched
    for who, items in by_who.items():
        load, process = first(items, "load"), first(items, "process")
        read = first(items, "read")
        processed = [s for s in items if s["stage"] == "process"]
        last_process_end = max([last_process_end] + [s["end"] for s in processed])
        # Waits for input once the first chunk has started: the device standing idle between chunks.
        steady = [s for s in items if s["stage"] == "wait_input" and process and s["start"] >= process["end"]
                  and s["end"] <= processed[-1]["start"]]
        summary["workers"][who] = {
            "load_start_s": load["start"] - launched if load else None,
            "load_s": load["end"] - load["start"] if load else None,
            "first_read_start_s": read["start"] - launched if read else None,
            "first_read_s": read["end"] - read["start"] if read else None,
            # From models loaded to the first chunk starting: the first chunk's frames not yet there.
            "ready_to_first_chunk_s": process["start"] - load["end"] if load and process else None,
            "chunks": len(processed),
            "process_s": total(items, "process"),
            "read_s": total(items, "read"),
            "spill_write_s": total(items, "spill_write"),
            "wait_input_between_chunks_s": sum(s["end"] - s["start"] for s in steady),
            "wait_output_s": total(items, "wait_output"),
        }
    start_workers, finish = first(parent, "start_workers"), first(parent, "finish")
    summary["parent"] = {
        "workers_started_at_s": start_workers["start"] - launched if start_workers else None,
        "spill_read_s": total(parent, "spill_read"),
        "write_s": total(parent, "write"),
        "encode_s": total(parent, "encode"),
        "finish_s": finish["end"] - finish["start"] if finish else None,
        # Once the last chunk is computed, what the output still takes (read back, encode, close).
        "after_last_chunk_s": (finish["end"] - last_process_end) if finish else None,
    }
    return summary


def print_summary(summary: dict) -> None:
    def fmt(value) -> str:
        return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))

    print(f"process wall: {summary['wall_s']:.2f} s")
    for who, figures in summary["workers"].items():
        print(f"worker {who}:")
        for key, value in figures.items():
            print(f"  {key:30s} {fmt(value)}")
    print("parent:")
    for key, value in summary["parent"].items():
        print(f"  {key:30s} {fmt(value)}")


def tiny_models(folder: Path) -> tuple[Path, Path]:
    from seedvr_cli.weights.synthesize import write_checkpoint

    dit = write_checkpoint("tiny-3b", "fp16", folder / "tiny3b.safetensors", seed=0)
    vae = write_checkpoint("tiny-vae", "fp16", folder / "tinyvae.safetensors", seed=0)
    return Path(dit), Path(vae)


def run_cli(args, folder: Path, clip: Path) -> list[str]:
    """``seedvr upscale`` in a subprocess; returns its command line."""
    dit, vae = (args.model, args.vae) if args.model is not None else tiny_models(folder)
    command = [sys.executable, "-m", "seedvr_cli", "upscale", str(clip), "-o", str(folder / "out.mp4"),
               "--overwrite", "--no-resume", "--model", str(dit), "--vae", str(vae), "--devices", args.devices,
               "--resolution", str(args.resolution), "--batch-size", str(args.batch_size), *args.extra]
    done = subprocess.run(command, cwd=REPO, env=os.environ, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return command[1:]


class NumpySource:
    """The workers' reader of a clip giving numpy frames, as the stand-in model takes them."""

    def __init__(self, source) -> None:
        self.source = source

    def open(self):
        return NumpyReader(self.source.open())


class NumpyReader:
    def __init__(self, reader) -> None:
        self.reader = reader

    def read(self, start: int, stop: int):
        return self.reader.read(start, stop).numpy()

    def close(self) -> None:
        self.reader.close()


class SleepingModelFactory:
    """Builds ``SleepingModel`` in a worker after ``load_s`` seconds (a model load)."""

    def __init__(self, scale: int, load_s: float, frame_s: float) -> None:
        self.scale, self.load_s, self.frame_s = scale, load_s, frame_s

    def __call__(self, device):
        time.sleep(self.load_s)
        return SleepingModel(self.scale, self.frame_s)


class SleepingModel:
    """A GPU as the CPU sees it: busy ``frame_s`` per frame without using the CPU; output by pixel
    repetition (the engine's stand-in adds noise in int64, which costs a CPU more than the I/O)."""

    def __init__(self, scale: int, frame_s: float) -> None:
        self.scale, self.frame_s = scale, frame_s

    def process(self, task, frames, context):
        from seedvr_cli.parallel.fakes import weighted_chunk

        time.sleep(self.frame_s * task.out_frames)
        lo, hi = task.out_start - task.read_start, task.out_stop - task.read_start
        out = np.repeat(np.repeat(frames[lo:hi], self.scale, axis=1), self.scale, axis=2)
        return weighted_chunk(task, out)


def run_standin(args, folder: Path, clip: Path) -> list[str]:
    """The engine in this process, real reader, spills and writer around the stand-in model."""
    from seedvr_cli.media.reader import open_reader
    from seedvr_cli.media.settings import OutputSettings
    from seedvr_cli.media.writer import open_writer
    from seedvr_cli.parallel import RunOptions, WorkerPool, parse_devices, run_job
    from seedvr_cli.parallel.fakes import fake_chunks
    from seedvr_cli.run.sources import InputSource

    from seedvr_cli.parallel.launcher import start_worker_server
    from seedvr_cli.run.preload import WORKER_MODULES

    start_worker_server(WORKER_MODULES)  # as the CLI does: workers forked with torch imported
    tasks = fake_chunks(args.frames, size=args.batch_size, overlap=0)
    factory = SleepingModelFactory(args.scale, args.load_s, args.frame_s)
    settings = OutputSettings(preset=args.preset, overwrite=True)
    with open_reader(str(clip)) as reader:
        source = NumpySource(InputSource.of(str(clip), False, None, 0, reader))
        writer = open_writer(folder / "out.mp4", settings, width=args.width * args.scale,
                             height=args.height * args.scale, source=reader, fps=reader.fps)
        with WorkerPool(parse_devices(args.devices), factory) as pool:
            run_job(pool, source=source, tasks=tasks, workdir=folder / "work", key="standin", sink=writer,
                    options=RunOptions(resume=False, durable=False))
    return [f"standin: {len(tasks)} chunks of {args.batch_size} frames, load {args.load_s} s, "
            f"{args.frame_s} s/frame, x{args.scale}, preset {args.preset}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="DiT checkpoint (default: a tiny random one)")
    parser.add_argument("--vae", type=Path, help="VAE checkpoint (default: a tiny random one)")
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--frames", type=int, default=66)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--resolution", type=int, default=360)
    parser.add_argument("--batch-size", type=int, default=9)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `seedvr upscale` flags")
    parser.add_argument("--standin", action="store_true", help="real file I/O around a stand-in model")
    parser.add_argument("--scale", type=int, default=3, help="--standin: upscale factor (pixel repetition)")
    parser.add_argument("--load-s", type=float, default=2.0, help="--standin: model load time")
    parser.add_argument("--frame-s", type=float, default=0.15, help="--standin: device time per frame")
    parser.add_argument("--preset", default="ultrafast", help="--standin: x264 preset of the output")
    parser.add_argument("--dir", type=Path, help="work here and keep the files (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.vae is None):
        parser.error("give both --model and --vae, or neither")

    with tempfile.TemporaryDirectory() as temporary:
        folder = args.dir or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        clip = folder / f"clip_{args.frames}_{args.width}x{args.height}.mp4"
        if not clip.exists():
            subprocess.run([sys.executable, str(REPO / "scripts" / "make_clip.py"), str(clip), "--frames",
                            str(args.frames), "--width", str(args.width), "--height", str(args.height)], check=True)
        timeline = folder / "timeline.jsonl"
        timeline.unlink(missing_ok=True)
        os.environ[TIMELINE_ENV] = str(timeline)  # read by this process and inherited by the workers
        launched = time.time()
        command = (run_standin if args.standin else run_cli)(args, folder, clip)
        ended = time.time()
        spans = [json.loads(line) for line in timeline.read_text().splitlines() if line.strip()]
        summary = summarize(spans, launched, ended)
    print(" ".join(command))
    print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps({"command": command, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
