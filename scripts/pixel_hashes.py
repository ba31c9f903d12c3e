#!/usr/bin/env python3
"""Hashes of what ``seedvr upscale`` writes, for checking that a refactor leaves pixels unchanged.

Synthesizes tiny random-weight checkpoints and short clips in WORKDIR, runs the CLI on the CPU in
several configurations (plain, crossfaded windows grouped into chunks, prepended frames, RGBA
image, 16-bit output, two workers, input and latent noise, shards joined by ``seedvr assemble``)
and prints one line per output: the configuration, the frame count and the sha256 of the decoded
frames. Run it before and after a change and diff the two listings.

Usage: python scripts/pixel_hashes.py WORKDIR [--only NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "plain": ["--batch-size", "5"],
    "overlap_chunks": ["--batch-size", "9", "--temporal-overlap", "3", "--chunk-windows", "2"],
    "overlap_single": ["--batch-size", "9", "--temporal-overlap", "2"],
    "prepend_lab": ["--batch-size", "5", "--prepend-frames", "3", "--color-correction", "lab"],
    "noise": ["--batch-size", "5", "--input-noise-scale", "0.2", "--latent-noise-scale", "0.1"],
    "two_workers": ["--batch-size", "5", "--temporal-overlap", "1", "--devices", "cpu,cpu"],
    "16bit": ["--batch-size", "5", "--pix-fmt", "rgb48le"],
}


def run(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "seedvr_cli", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): seedvr {' '.join(args)}\n{result.stderr[-3000:]}")


def frame_hash(path: Path) -> tuple[int, str]:
    from seedvr_cli.media.reader import open_reader

    digest = hashlib.sha256()
    with open_reader(str(path)) as reader:
        frames = reader.read(0, reader.num_frames)
        count = reader.num_frames
    digest.update(frames.tobytes() if hasattr(frames, "tobytes") else frames.numpy().tobytes())
    return count, digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    dit, vae = work / "tiny-3b.safetensors", work / "tiny-vae.safetensors"
    for variant, path in (("tiny-3b", dit), ("tiny-vae", vae)):
        if not path.exists():
            subprocess.run([sys.executable, str(ROOT / "scripts/make_checkpoint.py"), "--variant", variant,
                            "--format", "fp16", "--out", str(path)], check=True)
    clip = work / "clip.mp4"
    if not clip.exists():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_clip.py"), str(clip), "--frames", "17",
                        "--width", "48", "--height", "32"], check=True)
    models = ["--model", str(dit), "--vae", str(vae), "--resolution", "64", "--devices", "cpu", "--codec", "ffv1"]
    for name, extra in CASES.items():
        if args.only and name not in args.only:
            continue
        # Lossless output: a changed pixel always changes the hash.
        out = work / f"{name}.mkv"
        # --devices given twice: the case's own value (last) wins.
        run(["upscale", str(clip), "-o", str(out), "--overwrite", "--no-resume", *models, *extra])
        count, digest = frame_hash(out)
        print(f"{name:<16} {count:>4} frames  {digest}", flush=True)
    if not args.only or "shards" in args.only:
        out = work / "shards.mkv"
        out.unlink(missing_ok=True)
        for shard in ("0/2", "1/2"):
            run(["upscale", str(clip), "-o", str(out), *models, "--batch-size", "5", "--temporal-overlap", "2",
                 "--shard", shard])
        workdirs = sorted(work.glob(".shards.mkv.seedvr-*"))
        run(["assemble", *map(str, workdirs)])
        count, digest = frame_hash(out)
        print(f"{'shards':<16} {count:>4} frames  {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
