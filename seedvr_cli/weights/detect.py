"""What a checkpoint file is: model (DiT 3B / 7B, VAE), size (real or tiny test model) and storage
format (fp32 / fp16 / bf16 / fp8 / fp8 mixed / GGUF quant type), from tensor names, shapes and
dtypes alone. Nothing here reads tensor data.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from gguf import LlamaFileType

from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.gguf_quant import DEQUANTIZERS
from seedvr_cli.weights.readers import TensorInfo, open_checkpoint

DIT_REQUIRED = ("vid_in.proj.weight", "txt_in.weight", "emb_in.proj_in.weight", "vid_out.proj.weight")
VAE_REQUIRED = ("encoder.conv_in.weight", "decoder.conv_out.weight")

# Every tensor name a SeedVR2 DiT or VAE file may hold; anything else is "unexpected".
_DIT_NAME = re.compile(
    r"^(vid_in\.proj|txt_in|emb_in\.proj_(in|hid|out)|vid_out\.proj|vid_out_norm|vid_out_ada)\.\w+$"
    r"|^blocks\.\d+\.(attn|mlp|ada)\.[\w.]+$"
)
_VAE_NAME = re.compile(r"^(encoder|decoder)\.[\w.]+$")
ROPE_BUFFER = re.compile(r"^blocks\.\d+\.attn\.rope\.rope\.freqs$")
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")

# Real-size widths; any other width is a test-size model of the same family.
_DIT_WIDTHS = {2560: "3b", 3072: "7b"}
_VAE_WIDTH = 128

_FLOAT_FORMATS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                  torch.float8_e4m3fn: "fp8_e4m3fn", torch.float8_e5m2: "fp8_e5m2"}  # fmt: skip


@dataclass(frozen=True)
class CheckpointInfo:
    """The answer of ``inspect_checkpoint``."""

    path: Path
    kind: str  # "dit" or "vae"
    variant: str  # "3b", "7b", "tiny-3b", "tiny-7b", "vae", "tiny-vae"
    format: str  # "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e4m3fn_mixed", "gguf-Q4_K_M", ...
    container: str  # "safetensors", "PyTorch", "GGUF"
    num_tensors: int
    num_params: int
    file_size: int
    width: int
    num_blocks: int
    storage: dict[str, int] = field(default_factory=dict)  # storage kind -> tensor count
    fp16_blocks: tuple[int, ...] = ()  # blocks kept in fp16 inside an fp8 file (the "mixed" files)
    metadata: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        size = f"{self.file_size / 1e9:.2f} GB" if self.file_size >= 1e8 else f"{self.file_size / 1e6:.1f} MB"
        model = {"dit": "DiT", "vae": "VAE"}[self.kind]
        return (f"SeedVR2 {model} {self.variant} {self.format} ({self.container}, {self.num_tensors} tensors, "
                f"{self.num_params / 1e6:.1f} M params, {size})")  # fmt: skip


def classify(path: Path, infos: dict[str, TensorInfo], metadata: dict | None = None) -> CheckpointInfo:
    """Variant and format of a file whose tensors are described by ``infos``."""
    names = set(infos)
    if all(name in names for name in DIT_REQUIRED):
        kind, pattern = "dit", _DIT_NAME
    elif all(name in names for name in VAE_REQUIRED) or _looks_like_old_vae(names):
        kind, pattern = "vae", _VAE_NAME
    else:
        raise not_seedvr(path, infos, f"it has none of the tensors a SeedVR2 DiT ({DIT_REQUIRED[0]}) or VAE "
                         f"({VAE_REQUIRED[0]}) starts with")  # fmt: skip
    unexpected = [name for name in infos if not pattern.match(name)]
    if unexpected:
        raise not_seedvr(path, infos, f"{len(unexpected)} tensors that no SeedVR2 {kind.upper()} has", unexpected)

    blocks = sorted({int(m.group(1)) for name in names if (m := _BLOCK_INDEX.match(name))})
    if kind == "dit":
        width = infos["vid_in.proj.weight"].shape[0]
        style = "3b" if any(".proj_in_gate." in n or ".all." in n for n in names) else "7b"
        real = _DIT_WIDTHS.get(width)
        variant = style if real == style else f"tiny-{style}"
        if real is not None and real != style:
            raise not_seedvr(path, infos, f"its width {width} belongs to the {real.upper()} but its layout to the "
                             f"{style.upper()}")  # fmt: skip
    else:
        width = infos["encoder.conv_in.weight"].shape[0] if "encoder.conv_in.weight" in infos else 0
        variant = "vae" if width == _VAE_WIDTH else "tiny-vae"

    fmt, fp16_blocks = _storage_format(infos)
    _check_quant_types(path, infos)
    if fmt.startswith("gguf-") and (named := _gguf_file_type((metadata or {}).get("general.file_type"))):
        fmt = named  # small test models fall back to 32-blocks nearly everywhere; the file says what it is
    storage = Counter(info.kind for info in infos.values())
    num_params = sum(math.prod(info.shape) for name, info in infos.items() if not ROPE_BUFFER.match(name))
    return CheckpointInfo(
        path=path, kind=kind, variant=variant, format=fmt, container="", num_tensors=len(infos),
        num_params=num_params, file_size=path.stat().st_size if path.exists() else 0, width=width,
        num_blocks=len(blocks), storage=dict(storage), fp16_blocks=fp16_blocks, metadata=dict(metadata or {}),
    )  # fmt: skip


def _check_quant_types(path: Path, infos: dict[str, TensorInfo]) -> None:
    """GGUF quant types we cannot dequantize fail here, in one line, not at the first forward."""
    known = {t.name for t in DEQUANTIZERS}
    unknown = sorted({info.qtype for info in infos.values() if info.qtype is not None and info.qtype not in known})
    if unknown:
        raise CheckpointError(f"{path}: GGUF quant type(s) {', '.join(unknown)} are not supported "
                              f"(supported: {', '.join(sorted(known))}); use a Q8_0, Q4_K_M or fp16 file")


def _looks_like_old_vae(names: set[str]) -> bool:
    return any(n.startswith("encoder.conv_in.") for n in names) and any(n.startswith("decoder.") for n in names)


def _storage_format(infos: dict[str, TensorInfo]) -> tuple[str, tuple[int, ...]]:
    """Format name from how the matrices (>= 2-D tensors) are stored."""
    matrices = {name: info for name, info in infos.items() if len(info.shape) >= 2}
    qtypes = Counter(info.qtype for info in matrices.values() if info.qtype is not None)
    if qtypes:
        return _gguf_format(qtypes), ()
    dtypes = Counter(info.dtype for info in matrices.values())
    if not dtypes:
        return "empty", ()
    main = dtypes.most_common(1)[0][0]
    fmt = _FLOAT_FORMATS.get(main, str(main))
    if main in (torch.float8_e4m3fn, torch.float8_e5m2) and len(dtypes) > 1:
        wide_blocks = sorted({int(m.group(1)) for name, info in matrices.items()
                              if info.dtype == torch.float16 and (m := _BLOCK_INDEX.match(name))})  # fmt: skip
        if wide_blocks:
            return f"{fmt}_mixed", tuple(wide_blocks)
        return f"{fmt}_mixed", ()
    return fmt, ()


def _gguf_format(qtypes: Counter) -> str:
    """llama.cpp-style file type name: Q4_K_M when Q4_K dominates with some Q6_K, else the main type."""
    quantized = Counter({q: n for q, n in qtypes.items() if q not in ("F32", "F16", "BF16")})
    if not quantized:
        return "gguf-" + qtypes.most_common(1)[0][0]
    main = quantized.most_common(1)[0][0]
    if main == "Q4_K":
        return "gguf-Q4_K_M" if "Q6_K" in quantized or "Q5_K" in quantized else "gguf-Q4_K_S"
    if main == "Q5_K":
        return "gguf-Q5_K_M" if "Q6_K" in quantized else "gguf-Q5_K_S"
    return "gguf-" + main


def _gguf_file_type(value: object) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return None
    return "gguf-" + name.removeprefix("MOSTLY_") if name.startswith("MOSTLY_") else None


def not_seedvr(path: Path, infos: dict[str, TensorInfo], why: str, unexpected: list[str] | None = None) -> CheckpointError:
    shown = (unexpected if unexpected is not None else list(infos))[:5]
    listing = ", ".join(shown) if shown else "(no tensors)"
    more = "" if len(unexpected if unexpected is not None else infos) <= 5 else ", ..."
    label = "unexpected tensors" if unexpected is not None else "first tensors"
    return CheckpointError(
        f"{path}: not a SeedVR2 checkpoint: {why} ({label}: {listing}{more}); "
        "pass a SeedVR2 DiT or VAE file (see `seedvr models list`)"
    )


def require_kind(info: CheckpointInfo, kind: str) -> CheckpointInfo:
    """``info`` if it is a ``kind`` ("dit" or "vae") checkpoint; otherwise the one-line error that
    says which flag the file belongs to."""
    if info.kind != kind:
        flag = {"dit": "--model", "vae": "--vae"}[info.kind]
        raise CheckpointError(
            f"{info.path}: is a SeedVR2 {info.kind.upper()} checkpoint, not a {kind.upper()}; pass it with {flag}"
        )
    return info


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Open ``path`` (header only where the container allows) and say what it holds."""
    with open_checkpoint(path) as reader:
        info = classify(Path(path), reader.infos, reader.metadata)
        return replace(info, container=reader.container)
