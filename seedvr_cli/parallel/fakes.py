"""Stand-ins for the media reader, the model and the writer, to exercise the engine without either.

Used by the tests (and usable by the CLI's tests) to drive real spawned workers on the CPU:
a synthetic clip generated on the fly, a processor that upscales by pixel repetition and adds
noise seeded by chunk position (so overlaps really need blending), optional slowness, injected
faults, and sinks that hash, keep or write what they receive. Like the real processor, the fake
ones return the frames they share with a neighbouring chunk as partial sums weighted by the
chunk's shares (``spill.ChunkFrames``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seedvr_cli.parallel.assembler import quantize_partials
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.spill import ChunkFrames, as_frames
from seedvr_cli.parallel.tasks import ChunkTask, plan_chunks
from seedvr_cli.pipeline.blend import blend_weights, fold_shares, summed_shares


class SyntheticReader:
    def __init__(self, source: SyntheticSource) -> None:
        self.source = source

    def read(self, start: int, stop: int) -> np.ndarray:
        s = self.source
        if not 0 <= start <= stop <= s.frames:
            raise IndexError(f"frames {start}:{stop} outside a clip of {s.frames}")
        if s.read_delay_s:
            time.sleep(s.read_delay_s)
        # uint8 arithmetic wraps modulo 256: a cheap pattern, even for large frames.
        f = (np.arange(start, stop, dtype=np.int64) * 37 % 256).astype(np.uint8)[:, None, None, None]
        y = (np.arange(s.height, dtype=np.int64) * 5 % 256).astype(np.uint8)[None, :, None, None]
        x = (np.arange(s.width, dtype=np.int64) * 3 % 256).astype(np.uint8)[None, None, :, None]
        c = (np.arange(s.channels, dtype=np.int64) * 101 + s.seed) % 256
        values = f + y + x + c.astype(np.uint8)[None, None, None, :]
        if s.dtype == "uint16":
            return values.astype(np.uint16) * np.uint16(257)
        return values

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SyntheticSource:
    """A clip of ``frames`` frames computed from their index: any length, no memory, no file."""

    frames: int
    height: int = 8
    width: int = 8
    channels: int = 3
    seed: int = 0
    dtype: str = "uint8"
    read_delay_s: float = 0.0  # per read: a slow disk or decoder

    def open(self) -> SyntheticReader:
        return SyntheticReader(self)


@dataclass(frozen=True)
class Fault:
    """Make the processor fail: ``raise`` an exception, ``exit`` the process, ``kill`` it (SIGKILL) or ``hang``.

    Matches chunk ``chunk`` (any when ``None``) on device label ``device`` (any when ``None``), at most
    ``times`` times over all processes (counted with marker files; 0 = every time).
    """

    mode: Literal["raise", "exit", "kill", "hang"]
    chunk: int | None = None
    device: str | None = None
    times: int = 1


def weighted_chunk(task: ChunkTask, frames: np.ndarray) -> ChunkFrames:
    """A chunk's own integer frames -> what a processor returns: shared frames as [0, 1] floats
    weighted by the chunk's shares, the others as they are."""
    head, tail = task.shared_head, task.shared_tail
    scale = np.float32(np.iinfo(frames.dtype).max)
    weights = np.asarray(task.weights, dtype=np.float32)[:, None, None, None]

    def partial(lo: int, hi: int) -> np.ndarray:
        return frames[lo:hi].astype(np.float32) / scale * weights[lo:hi]

    count = frames.shape[0]
    return ChunkFrames(partial(0, head), np.ascontiguousarray(frames[head:count - tail]), partial(count - tail, count))


class FakeProcessor:
    def __init__(self, factory: FakeProcessorFactory, device: DeviceSpec) -> None:
        self.factory, self.device = factory, device

    def _maybe_fail(self, task: ChunkTask) -> None:
        for number, fault in enumerate(self.factory.faults):
            if fault.chunk not in (None, task.index) or fault.device not in (None, self.device.label):
                continue
            marker_dir = Path(self.factory.fault_dir or ".") / f"fault-{number}"
            marker_dir.mkdir(parents=True, exist_ok=True)
            if fault.times and len(list(marker_dir.iterdir())) >= fault.times:
                continue
            (marker_dir / uuid.uuid4().hex).touch()
            if fault.mode == "raise":
                raise RuntimeError(f"injected failure on chunk {task.index} ({self.device.label})")
            if fault.mode == "hang":
                time.sleep(3600)
            if fault.mode == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)

    def process(self, task: ChunkTask, frames: np.ndarray, context: object) -> ChunkFrames:
        self._maybe_fail(task)
        delay = dict(self.factory.device_delays).get(self.device.label, self.factory.delay_s)
        if delay:
            time.sleep(delay)
        scale = self.factory.scale
        lo, hi = task.out_start - task.read_start, task.out_stop - task.read_start
        out = np.repeat(np.repeat(np.asarray(frames[lo:hi]), scale, axis=1), scale, axis=2).astype(np.int64)
        # Noise keyed by chunk position only: two chunks disagree on their shared frames (as two
        # diffusion windows do), so the result depends on blending, never on which worker ran what.
        rng = np.random.default_rng([self.factory.seed, task.index])
        out += rng.integers(-9, 10, size=(out.shape[0], 1, 1, out.shape[3]))
        top = np.iinfo(frames.dtype).max
        return weighted_chunk(task, np.clip(out, 0, top).astype(frames.dtype))


@dataclass(frozen=True)
class FakeProcessorFactory:
    """Picklable factory of ``FakeProcessor``; ``startup_s`` imitates loading a model."""

    scale: int = 2
    delay_s: float = 0.0
    startup_s: float = 0.0
    faults: tuple[Fault, ...] = ()
    fault_dir: str | None = None
    seed: int = 0
    device_delays: tuple[tuple[str, float], ...] = ()  # per device label, overriding delay_s
    fail_startup: bool = False
    fail_startup_on: tuple[str, ...] = ()  # device labels whose processor fails to build
    build_log: str | None = None  # a folder that gets one file per processor built

    def __call__(self, device: DeviceSpec) -> FakeProcessor:
        if self.startup_s:
            time.sleep(self.startup_s)
        if self.fail_startup or device.label in self.fail_startup_on:
            raise RuntimeError(f"injected failure while loading on {device.label}")
        if self.build_log is not None:
            (Path(self.build_log) / f"{device.label}-{os.getpid()}").touch()
        return FakeProcessor(self, device)


class ArraySink:
    """Keeps every frame (small tests only)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.closed = self.aborted = False

    def write(self, frames: np.ndarray) -> None:
        self.parts.append(np.array(frames, copy=True))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    @property
    def frames(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0,), dtype=np.uint8)


class HashSink:
    """Hashes frames as they come and forgets them: for long clips (``crc32``: for fast, large ones)."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self._digest = hashlib.new(algorithm) if algorithm != "crc32" else None
        self._crc = 0
        self.count = 0
        self.closed = self.aborted = False

    def write(self, frames: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(frames)).cast("B")
        if self._digest is None:
            self._crc = zlib.crc32(data, self._crc)
        else:
            self._digest.update(data)
        self.count += frames.shape[0]

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def hexdigest(self) -> str:
        return self._digest.hexdigest() if self._digest is not None else f"{self._crc:08x}"


class RawFileSink:
    """Writes raw frame bytes to a temporary name and renames it to ``path`` on ``close``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._handle = open(self._tmp, "wb")

    def write(self, frames: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(frames).tobytes())

    def close(self) -> None:
        self._handle.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


def fake_windows(frames: int, size: int = 9, overlap: int = 3) -> list[tuple[int, int]]:
    """A stand-in for the pipeline's temporal windows: ``size`` frames, ``overlap`` shared, covering the clip."""
    windows: list[tuple[int, int]] = []
    start = 0
    while start < frames:
        stop = min(start + size, frames)
        windows.append((start, stop))
        if stop == frames:
            break
        start = stop - overlap
    return windows


def fake_chunks(
    frames: int, size: int = 9, overlap: int = 3, windows_per_chunk: int = 1, context: int = 0
) -> list[ChunkTask]:
    """Chunks of ``fake_windows``, with the shares the pipeline's crossfade would give them."""
    windows = fake_windows(frames, size, overlap)
    shares = fold_shares(windows, lambda length: blend_weights(length).tolist())
    return plan_chunks(windows, windows_per_chunk=windows_per_chunk, context=context,
                       shares=lambda indices, start, stop: summed_shares(windows, shares, indices, start, stop))


def run_serially(source, tasks, factory, device: DeviceSpec = DeviceSpec("cpu", 0)) -> np.ndarray:
    """The whole clip in one process, every chunk in turn, partial sums added up in chunk order: the oracle."""
    if not tasks:
        return np.zeros((0,), dtype=np.uint8)
    processor = factory(device)
    reader = source.open()
    total = tasks[-1].out_stop
    out = partials = None
    shared = np.zeros(total, dtype=bool)
    for task in tasks:
        chunk = as_frames(processor.process(task, reader.read(task.read_start, task.read_stop), None), task)
        if out is None:
            out = np.zeros((total, *chunk.shape[1:]), dtype=chunk.dtype)
            partials = np.zeros(out.shape, dtype=np.float32)
        body = task.out_start + chunk.head.shape[0]
        tail = body + chunk.body.shape[0]
        out[body:tail] = chunk.body
        partials[task.out_start:body] += chunk.head
        partials[tail:task.out_stop] += chunk.tail
        shared[task.out_start:body] = shared[tail:task.out_stop] = True
    out[shared] = quantize_partials(partials[shared], out.dtype)
    return out


class TorchConvProcessor:
    """A GPU-bound stand-in for the model: bilinear upscale, then a stack of seeded 3x3 convolutions."""

    def __init__(self, factory: TorchConvFactory, device: DeviceSpec) -> None:
        import torch

        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        self.torch, self.factory = torch, factory
        self.device = torch.device(device.worker_torch_device)
        generator = torch.Generator().manual_seed(factory.seed)
        widths = [3] + [factory.channels] * (factory.layers - 1) + [3]
        # "Loading the model": weights built once per worker, like a checkpoint read.
        self.weights = [
            (torch.randn(o, i, 3, 3, generator=generator) / (3 * i**0.5)).to(self.device)
            for i, o in zip(widths, widths[1:])
        ]

    def process(self, task: ChunkTask, frames: np.ndarray, context: object) -> ChunkFrames:
        torch, F = self.torch, self.torch.nn.functional
        lo, hi = task.out_start - task.read_start, task.out_stop - task.read_start
        outputs = []
        for i in range(lo, hi, self.factory.batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:min(i + self.factory.batch, hi)])).to(self.device)
            x = x.permute(0, 3, 1, 2).float() / 255
            x = F.interpolate(x, scale_factor=self.factory.scale, mode="bilinear", align_corners=False)
            base = x
            for k, w in enumerate(self.weights):
                x = F.conv2d(x, w, padding=1)
                if k + 1 < len(self.weights):
                    x = F.gelu(x)
            outputs.append(((base + 0.1 * torch.tanh(x)).clamp(0, 1) * 255).round().to(torch.uint8))
        out = torch.cat(outputs).permute(0, 2, 3, 1)
        noise = torch.randint(-3, 4, (out.shape[0], 1, 1, 3), generator=torch.Generator().manual_seed(task.index))
        return weighted_chunk(task, (out.cpu().to(torch.int16) + noise).clamp(0, 255).to(torch.uint8).numpy())


@dataclass(frozen=True)
class TorchConvFactory:
    layers: int = 4
    channels: int = 32
    scale: int = 2
    batch: int = 4
    seed: int = 0

    def __call__(self, device: DeviceSpec) -> TorchConvProcessor:
        return TorchConvProcessor(self, device)
