#!/usr/bin/env python3
"""Write a synthetic test clip: moving gradients and shapes, H.264 in .mp4, optional AAC audio.

Usage: python scripts/make_clip.py OUT.mp4 [--frames 66] [--width 640 --height 360] [--fps 24000/1001] [--audio]
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

import av
import numpy as np


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = index * 0.15
    red = 127 + 120 * np.sin(x / 37.0 + phase)
    green = 127 + 120 * np.sin(y / 23.0 - phase)
    blue = 127 + 120 * np.sin((x + y) / 51.0 + 2 * phase)
    image = np.stack([red, green, blue], axis=-1)
    cx, cy = (index * 7) % width, height // 2
    inside = (x - cx) ** 2 + (y - cy) ** 2 < (height // 6) ** 2
    image[inside] = (240, 240, 240)
    return np.clip(image, 0, 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=66)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", default="24000/1001")
    parser.add_argument("--audio", action="store_true", help="add a 48 kHz stereo AAC sine track")
    args = parser.parse_args()
    fps = Fraction(args.fps)
    with av.open(args.out, "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = args.width, args.height, "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        audio = None
        if args.audio:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "stereo"
        for index in range(args.frames):
            frame = av.VideoFrame.from_ndarray(frame_image(index, args.width, args.height), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            samples = int(48000 * args.frames / fps)
            t = np.arange(samples) / 48000.0
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            pcm = np.stack([tone, tone])
            for start in range(0, samples, 1024):
                chunk = np.ascontiguousarray(pcm[:, start:start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = 48000
                frame.pts = start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    print(f"{args.out}: {args.frames} frames {args.width}x{args.height} at {fps} fps{' with audio' if args.audio else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
