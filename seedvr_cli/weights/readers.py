"""Open a checkpoint file and hand out its tensors one at a time, without reading it whole.

Three containers: ``.safetensors`` (header parsed, tensors read from the memory map on request),
``.pth``/``.pt`` (``torch.load(weights_only=True, mmap=True)``) and ``.gguf`` (the ``gguf`` package's
reader over a read-only ``numpy.memmap``; packed weights come back as ``GGUFTensor`` views of the map).
Every failure to parse becomes a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import torch

from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.gguf_quant import PLAIN_TYPES, dequantize

COMFY_PREFIX = "model.diffusion_model."
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class GGUFTensor:
    """A GGUF tensor still in its packed block form: ``data`` is uint8 [rows, bytes per row]."""

    data: torch.Tensor
    qtype: gguf.GGMLQuantizationType
    shape: torch.Size

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.data, self.qtype, self.shape, dtype)

    def to(self, device: torch.device | str) -> GGUFTensor:
        return GGUFTensor(self.data.to(device), self.qtype, self.shape)

    @property
    def nbytes(self) -> int:
        return self.data.numel()


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor is, without its data. ``dtype`` is None for packed GGUF types (see ``qtype``)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None
    qtype: str | None = None  # GGUF type name ("Q4_K", "F16", ...) for .gguf files

    @property
    def kind(self) -> str:
        """A short storage name: "F16", "BF16", "F8_E4M3", "Q4_K", ..."""
        if self.qtype is not None:
            return self.qtype
        return _DTYPE_NAMES.get(self.dtype, str(self.dtype))


_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


class CheckpointReader:
    """Base for the three containers: ``infos`` (cheap), ``get(name)`` (one tensor)."""

    container = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: dict[str, Any] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._source_names: dict[str, str] = {}  # our name -> name in the file

    @property
    def infos(self) -> dict[str, TensorInfo]:
        return self._infos

    def names(self) -> list[str]:
        return list(self._infos)

    def get(self, name: str) -> torch.Tensor | GGUFTensor:
        raise NotImplementedError

    def release(self, name: str) -> None:
        """Done with tensor ``name`` (its data now lives elsewhere): drop its mapped pages if mapped."""

    def items(self) -> Iterator[tuple[str, torch.Tensor | GGUFTensor]]:
        for name in self._infos:
            yield name, self.get(name)

    def close(self) -> None:
        pass

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_names(self, infos: list[TensorInfo]) -> None:
        """Keep our names; strip ComfyUI's ``model.diffusion_model.`` prefix when the file uses it."""
        prefixed = any(info.name.startswith(COMFY_PREFIX) for info in infos)
        for info in infos:
            source = info.name
            if prefixed:
                if not source.startswith(COMFY_PREFIX):
                    continue
                info = TensorInfo(source[len(COMFY_PREFIX) :], info.shape, info.dtype, info.qtype)
            self._infos[info.name] = info
            self._source_names[info.name] = source

    def _corrupt(self, detail: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path}: cannot read this {self.container} file ({detail}); it is truncated or corrupt: "
            "delete it and download it again (seedvr models download NAME)"
        )


class SafetensorsReader(CheckpointReader):
    """Tensors are zero-copy views of a read-only memory map of the file."""

    container = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        header, self._data_start = _read_safetensors_header(path, self._corrupt)
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        infos = []
        for name, entry in header.items():
            dtype = SAFETENSORS_DTYPES.get(entry.get("dtype", "")) if isinstance(entry, dict) else None
            if dtype is None:
                raise self._corrupt(f"tensor {name!r} has no known dtype ({entry!r:.80})")
            try:
                shape = tuple(int(d) for d in entry["shape"])
            except (KeyError, TypeError, ValueError):
                raise self._corrupt(f"tensor {name!r} has no valid shape") from None
            infos.append(TensorInfo(name, shape, dtype))
        self._set_names(infos)
        with path.open("rb") as f:
            # Copy-on-write: pages come from the file, and a caller writing into a loaded weight gets
            # a private copy of that page instead of a crash on a read-only map.
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if path.stat().st_size else None

    def _span(self, name: str) -> tuple[int, int]:
        begin, end = self._entries[self._source_names[name]]["data_offsets"]
        return self._data_start + begin, self._data_start + end

    def get(self, name: str) -> torch.Tensor:
        info = self._infos[name]
        start, end = self._span(name)
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        count = (end - start) // itemsize
        if count * itemsize != end - start or count != math.prod(info.shape):
            raise self._corrupt(f"tensor {name!r} spans {end - start} bytes, not {info.shape} of {info.kind}")
        if count == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        if start % itemsize:
            # An unaligned tensor cannot be viewed in place; copy just this one.
            data = torch.frombuffer(bytearray(self._map[start:end]), dtype=info.dtype)
        else:
            data = torch.frombuffer(self._map, dtype=info.dtype, count=count, offset=start)
        return data.reshape(info.shape)

    def release(self, name: str) -> None:
        _drop_pages(self._map, *self._span(name))

    def close(self) -> None:
        # Tensors handed out may still view the map; it closes when the last of them is gone.
        self._map = None


def _drop_pages(mapping: mmap.mmap | None, start: int, end: int) -> None:
    """Tell the kernel we are done with these pages of a file map: they leave our RSS (the page
    cache keeps them; touching them again reads them back from the file)."""
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = start // mmap.PAGESIZE * mmap.PAGESIZE
    last = -(-end // mmap.PAGESIZE) * mmap.PAGESIZE
    length = min(last, len(mapping)) - first
    if length > 0:
        mapping.madvise(mmap.MADV_DONTNEED, first, length)


def _read_safetensors_header(path: Path, corrupt) -> dict[str, Any]:
    """Parse and sanity-check the JSON header, including that the data it promises is present."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise corrupt("file shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8 or length > 100_000_000:
            raise corrupt(f"header length {length} exceeds the file size {size}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise corrupt(f"header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    try:
        end = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, IndexError):
        raise corrupt("header entries lack data_offsets") from None
    if 8 + length + end > size:
        raise corrupt(f"file is {size} bytes but its header promises {8 + length + end}")
    return header, 8 + length


class TorchReader(CheckpointReader):
    """``.pth``: a (possibly nested) dict of tensors saved with ``torch.save``."""

    container = "PyTorch"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        state = load_pickled_weights(path, self._corrupt)
        state = _unwrap_state_dict(state)
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path}: holds a {type(state).__name__}, not a dict of tensors: it is not a model checkpoint"
            )
        self._tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self._set_names([TensorInfo(k, tuple(v.shape), v.dtype) for k, v in self._tensors.items()])

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[self._source_names[name]]

    def close(self) -> None:
        self._tensors = {}


def load_pickled_weights(path: Path, corrupt) -> Any:
    """What a ``torch.save`` file holds, read with ``weights_only=True``: tensors and plain
    containers only, never code. ``corrupt(detail)`` makes the error for a file that cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        # Files from the legacy (non-zip) serializer cannot be memory-mapped; read them plainly.
        if "mmap" not in str(err) and "zip" not in str(err):
            raise _load_failure(path, err, corrupt) from None
    except Exception as err:
        raise _load_failure(path, err, corrupt) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _load_failure(path, err, corrupt) from None


# How PyTorch's weights-only unpickler names a callable the file wanted to run ("Unsupported
# global: GLOBAL builtins.print was not ...", "unsupported GLOBAL posix.system whose module ...").
_PICKLED_CALL = re.compile(r"\bGLOBAL ([\w.]+)")


def _load_failure(path: Path, err: Exception, corrupt) -> CheckpointError:
    """One line for a failed ``torch.load``. PyTorch's refusal of pickled code comes with advice to
    load the file with ``weights_only=False``, which would run that code: it is never passed on."""
    text = str(err)
    if "Weights only load failed" in text:
        call = _PICKLED_CALL.search(text)
        if call is not None:
            return CheckpointError(
                f"{path}: holds Python code ({call.group(1)}) besides tensors; it was not loaded and nothing in "
                "it ran. Use the .safetensors file of this model instead (see `seedvr models list`)"
            )
        detail = next((line.split("WeightsUnpickler error:", 1)[1] for line in text.splitlines()
                       if "WeightsUnpickler error:" in line), "not a plain file of tensors")  # fmt: skip
        return corrupt(detail.strip())
    return corrupt(text.splitlines()[0] if text else type(err).__name__)


def _unwrap_state_dict(state: Any) -> Any:
    """Training checkpoints nest the weights one level down (``{"state_dict": {...}}`` and the like)."""
    for _ in range(2):
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            nested = [v for v in state.values() if isinstance(v, dict)]
            if len(nested) == 1:
                state = nested[0]
                continue
            for key in ("state_dict", "ema", "model", "module"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    return state


class GGUFReader(CheckpointReader):
    container = "GGUF"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._reader = gguf.GGUFReader(path, "c")  # copy-on-write map, as for safetensors
        except Exception as err:
            raise self._corrupt(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        self.metadata = _gguf_scalar_fields(self._reader)
        self._tensors = {}
        infos = []
        for tensor in self._reader.tensors:
            qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
            shape = self._logical_shape(tensor.name, tensor.shape)
            dtype = {"F32": torch.float32, "F16": torch.float16}.get(qtype.name)
            infos.append(TensorInfo(tensor.name, shape, dtype, qtype.name))
            self._tensors[tensor.name] = tensor
        self._set_names(infos)

    def _logical_shape(self, name: str, gguf_dims) -> tuple[int, ...]:
        field = self._reader.fields.get(ORIG_SHAPE_KEY + name)
        if field is not None:
            return tuple(int(field.parts[i][0]) for i in field.data)
        return tuple(int(d) for d in reversed(list(gguf_dims)))

    def get(self, name: str) -> torch.Tensor | GGUFTensor:
        tensor = self._tensors[self._source_names[name]]
        info = self._infos[name]
        qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
        data = torch.from_numpy(tensor.data)
        if qtype in PLAIN_TYPES:
            return data.reshape(info.shape)
        return GGUFTensor(data.reshape(-1, data.shape[-1]) if data.dim() > 1 else data.reshape(1, -1),
                          qtype, torch.Size(info.shape))

    def release(self, name: str) -> None:
        tensor = self._tensors[self._source_names[name]]
        mapping = getattr(self._reader.data, "_mmap", None)
        _drop_pages(mapping, int(tensor.data_offset), int(tensor.data_offset) + int(tensor.n_bytes))

    def close(self) -> None:
        self._tensors = {}


def _gguf_scalar_fields(reader) -> dict[str, Any]:
    """Metadata strings and numbers (arrays left out; the shape arrays are read separately)."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key.startswith(ORIG_SHAPE_KEY) or len(field.data) != 1:
            continue
        part = field.parts[field.data[0]]
        try:
            if part.dtype.kind == "u" and part.dtype.itemsize == 1 and len(part) != 1:
                out[key] = bytes(part).decode("utf-8", errors="replace")
            else:
                out[key] = part[0].item()
        except (IndexError, ValueError):
            continue
    return out


_READERS = {
    ".safetensors": SafetensorsReader,
    ".sft": SafetensorsReader,
    ".pth": TorchReader,
    ".pt": TorchReader,
    ".ckpt": TorchReader,
    ".bin": TorchReader,
    ".gguf": GGUFReader,
}


def open_checkpoint(path: str | Path) -> CheckpointReader:
    """A reader for ``path``, chosen by its extension (or by its first bytes for unknown ones)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; check the path or run `seedvr models list`")
    reader_cls = _READERS.get(path.suffix.lower()) or _sniff(path)
    if reader_cls is None:
        raise CheckpointError(
            f"{path}: unknown checkpoint format (expected .safetensors, .pth or .gguf)"
        )
    return reader_cls(path)


def _sniff(path: Path) -> type[CheckpointReader] | None:
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"GGUF":
        return GGUFReader
    if head[:2] == b"PK":
        return TorchReader
    if len(head) == 9 and head[8:9] == b"{":
        return SafetensorsReader
    return None
