"""The work directory of one output: its identity, the finished chunks, and resume.

Layout of ``WORKDIR`` (created next to the output, removed when the output is complete)::

    manifest.json         key, input fingerprint, pixel-changing settings, the chunk plan, caller meta
    chunk-000007.npy      finished chunk 7 (spill.ChunkFrames: shared frames as float32 partial
                          sums around uint8/uint16 final ones), written atomically
    chunk-000007.json     its journal record, written atomically *after* the .npy: present = done

One record file per chunk (instead of one appended log) lets render-farm shards on several
machines journal into the same directory without ever writing the same file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seedvr_cli.errors import UsageError
from seedvr_cli.parallel.spill import read_spill_header, remove_orphan_spills, spill_name
from seedvr_cli.parallel.tasks import ChunkTask, plan_digest, shared_frames, total_frames

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
_EDGE_BYTES = 1 << 20


def _hash_edges(path: Path, size: int, digest) -> None:
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE_BYTES))
        if size > _EDGE_BYTES:
            handle.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))


def fingerprint_input(path: Path) -> str:
    """Cheap identity of an input file (or image-sequence folder): size, mtime and its first/last MiB.

    Re-encoding, trimming or touching the file changes it; reading a 100 GB file does not happen.
    A folder hashes the names, sizes and mtimes of its files, plus the edges of the first and last.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        # Hidden files (partial outputs, .DS_Store) come and go without changing the input.
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for file in files:
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        for file in files[:1] + files[-1:]:
            _hash_edges(file, file.stat().st_size, digest)
    else:
        stat = path.stat()
        digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        _hash_edges(path, stat.st_size, digest)
    return digest.hexdigest()


def job_key(input_fingerprint: str, settings: Mapping[str, Any], tasks: Sequence[ChunkTask]) -> str:
    """Key of a job: the input, every setting that changes pixels, and the chunk plan.

    ``settings`` must be JSON-serialisable (paths as strings; model files by their own fingerprint).
    """
    payload = json.dumps(
        {"version": FORMAT_VERSION, "input": input_fingerprint, "settings": settings, "plan": plan_digest(tasks)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def workdir_for(output: Path, key: str) -> Path:
    """The work directory of ``output`` for job ``key``: hidden, beside the output, on its filesystem."""
    output = Path(output)
    return output.parent / f".{output.name}.seedvr-{key[:16]}"


def stale_workdirs(output: Path) -> list[Path]:
    """Every work directory of ``output``, whatever its key (what ``--restart`` discards)."""
    output = Path(output)
    return sorted(p for p in output.parent.glob(f".{glob.escape(output.name)}.seedvr-*") if p.is_dir())


@dataclass(frozen=True)
class ChunkRecord:
    index: int
    frames: int
    shape: tuple[int, ...]
    dtype: str
    device: str
    seconds: float


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _chunk_spans(tasks: Sequence[ChunkTask]) -> list[list]:
    return [[t.out_start, t.out_stop, list(t.weights)] for t in tasks]


def tasks_from_spans(spans: Sequence[Sequence]) -> list[ChunkTask]:
    """The assembler's view of a plan read back from a manifest (no windows, no read ranges)."""
    shared = shared_frames([(s[0], s[1]) for s in spans])
    return [
        ChunkTask(index=k, read_start=s[0], read_stop=s[1], out_start=s[0], out_stop=s[1], weights=tuple(s[2]),
                  shared_head=head, shared_tail=tail)
        for k, (s, (head, tail)) in enumerate(zip(spans, shared))
    ]


class Journal:
    """One work directory: create or reopen it, record finished chunks, list them, remove it."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        key: str,
        tasks: Sequence[ChunkTask],
        meta: Mapping[str, Any] | None = None,
        restart: bool = False,
    ) -> Journal:
        """Create ``root`` for job ``key``, or reopen it when it holds the same job (resume).

        ``meta`` is stored for ``assemble`` (e.g. output fps, the audio source), not part of the key.
        """
        root = Path(root)
        if restart and root.exists():
            shutil.rmtree(root)
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            journal = cls.load(root)
            if journal.key != key:
                raise UsageError(
                    f"{root} belongs to a different job (other input or settings); "
                    "remove it or pass --restart to discard it"
                )
            journal.remove_orphans()  # what workers of the interrupted run were writing when it died
            return journal
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "version": FORMAT_VERSION,
            "key": key,
            "frames": total_frames(tasks),
            "chunks": _chunk_spans(tasks),
            "meta": dict(meta or {}),
            "created": time.time(),
        }
        _write_json_atomic(manifest_path, manifest)
        return cls(root, manifest)

    @classmethod
    def load(cls, root: Path) -> Journal:
        """Reopen an existing work directory (``assemble``), checking it is one."""
        root = Path(root)
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except FileNotFoundError:
            raise UsageError(f"{root} is not a seedvr work directory (no {MANIFEST})") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{root / MANIFEST} is damaged ({exc}); remove the work directory and re-run") from None
        if manifest.get("version") != FORMAT_VERSION:
            raise UsageError(f"{root} was written by another version of seedvr-cli; re-run with --restart")
        return cls(root, manifest)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    def tasks(self) -> list[ChunkTask]:
        return tasks_from_spans(self.manifest["chunks"])

    def spill_path(self, index: int) -> Path:
        return self.root / spill_name(index)

    def record_path(self, index: int) -> Path:
        return self.root / f"chunk-{index:06d}.json"

    def record(self, index: int, *, shape: Sequence[int], dtype: str, device: str, seconds: float) -> ChunkRecord:
        """Journal chunk ``index`` as finished; its spill file must already be complete."""
        record = ChunkRecord(index, int(shape[0]), tuple(int(s) for s in shape), str(dtype), device, float(seconds))
        _write_json_atomic(self.record_path(index), record.__dict__ | {"shape": list(record.shape)})
        return record

    def done(self) -> dict[int, ChunkRecord]:
        """Finished chunks whose record and complete spill file agree; anything else is redone."""
        spans = self.manifest["chunks"]
        done: dict[int, ChunkRecord] = {}
        for path in self.root.glob("chunk-*.json"):
            try:
                data = json.loads(path.read_text())
                record = ChunkRecord(**{**data, "shape": tuple(data["shape"])})
                shape, dtype = read_spill_header(self.spill_path(record.index))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if not 0 <= record.index < len(spans):
                continue
            expected_frames = spans[record.index][1] - spans[record.index][0]
            if tuple(shape) == record.shape and str(dtype) == record.dtype and shape[0] == expected_frames:
                done[record.index] = record
        return done

    def remove_orphans(self) -> int:
        """Delete half-written chunk files left by workers of this machine that died while writing."""
        return remove_orphan_spills(self.root)

    def discard(self, index: int) -> None:
        """Forget chunk ``index`` (record first, so a crash in between leaves it merely undone)."""
        self.record_path(index).unlink(missing_ok=True)
        self.spill_path(index).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
