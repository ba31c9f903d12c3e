#!/usr/bin/env python3
"""Compare the decoded frames of videos with the first one: frame count, sha256 of the frames, max
abs difference and PSNR (8-bit RGB), and whether they are identical.

Usage: python scripts/compare_videos.py REFERENCE.mkv OTHER.mkv [OTHER.mkv ...]
"""

from __future__ import annotations

import hashlib
import math
import sys

import av
import numpy as np


def frames(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def digest(decoded: list[np.ndarray]) -> str:
    sha = hashlib.sha256()
    for frame in decoded:
        sha.update(frame.tobytes())
    return sha.hexdigest()


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    reference = frames(sys.argv[1])
    print(f"{sys.argv[1]}: {len(reference)} frames, sha256 {digest(reference)[:16]} (reference)")
    for path in sys.argv[2:]:
        other = frames(path)
        if len(other) != len(reference) or other[0].shape != reference[0].shape:
            print(f"{path}: {len(other)} frames of {other[0].shape if other else None}: not comparable")
            continue
        diff = np.stack([np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(reference, other)])
        mse = float((diff.astype(np.float64) ** 2).mean())
        psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        verdict = "IDENTICAL" if mse == 0 else "different"
        print(f"{path}: {len(other)} frames, sha256 {digest(other)[:16]}, max abs {int(diff.max())}, mean abs {float(diff.mean()):.3f}, "
              f"PSNR {psnr:.2f} dB, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
