"""Random-weight checkpoints in every published layout, for tests and benchmarks (never a real model).

Names and shapes come from the model classes built on the meta device (so they are the published
names, rope buffers included); the file layout of each format follows the published files (see the
manifests): fp8 files store every entry as float8_e4m3fn without scales, the "mixed" files keep the
last block in fp16 (block 35 of the 7B), GGUF files carry ComfyUI-GGUF's metadata and llama.cpp's
Q4_K_M mix.

Values depend only on (seed, tensor name), so files of different formats written with one seed hold
the same underlying model and can be compared against each other. Each tensor is generated,
converted and written in turn (on the GPU with ``device="cuda"``), so a real-size file never sits
in memory twice.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from safetensors.torch import save_file

from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.models.vae import VideoVAE
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.weights.gguf_quant import can_quantize, quantize

DIT_VARIANTS = ("tiny-3b", "tiny-7b", "3b", "7b")
VAE_VARIANTS = ("vae", "tiny-vae")
VARIANTS = DIT_VARIANTS + VAE_VARIANTS

FORMATS = ("fp32-pth", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_mixed_block35",
           "gguf-f16", "gguf-bf16", "gguf-q8_0", "gguf-q4_0", "gguf-q5_0", "gguf-q4_k_m", "gguf-q4_k",
           "gguf-q5_k_m", "gguf-q6_k")  # fmt: skip
# "gguf-q4_k_m" follows llama.cpp's Q4_K_M mix (Q6_K for the output layer and the value/down
# projections of some blocks). The published SeedVR2 "Q4_K_M" uploads measure as nearly all-Q4_K
# (their sizes match 4.5 bits per weight: the converter's llama.cpp rules do not recognise SeedVR2
# tensor names), which is what "gguf-q4_k" writes.

TEXT_TOKENS = 58
GGUF_ARCH = "seedvr"
_SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float8_e4m3fn: "F8_E4M3"}  # fmt: skip
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    fixed: torch.Tensor | None = None  # a value the published files hold exactly (rope frequencies)


def model_entries(variant: str) -> list[Entry]:
    """Every state-dict entry (name, shape) of ``variant``, in module order."""
    if variant in DIT_VARIANTS:
        config = dit_config(variant)
        with torch.device("meta"):
            model = NaDiT(config)
        freqs = config.rope.frequencies()
        return [Entry(name, tuple(t.shape), freqs if name.endswith("rope.rope.freqs") else None)
                for name, t in model.state_dict().items()]  # fmt: skip
    elif variant in VAE_VARIANTS:
        with torch.device("meta"):
            model = VideoVAE(vae_config(variant))
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return [Entry(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63))
    return gen


def random_tensor(entry: Entry, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The float32 value of one entry: a plausible, deterministic initialization by role.

    Matrices N(0, 1/fan_in); biases N(0, 0.1^2); norm weights and modulation scales 1 + N(0, 0.2^2);
    modulation shifts/gates N(0, 0.2^2); rope frequency buffers get their exact formula values.
    """
    device = torch.device(device)
    name, shape = entry.name, entry.shape
    if entry.fixed is not None:
        return entry.fixed.to(device=device, dtype=torch.float32)
    gen = _generator(seed, name, device)
    noise = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return noise / math.sqrt(fan_in)
    if "norm" in name and leaf == "weight" or leaf.endswith("scale"):
        return 1.0 + 0.2 * noise
    if leaf.endswith(("shift", "gate")):
        return 0.2 * noise
    return 0.1 * noise


# --------------------------------------------------------------------------------------------- formats


def _float_dtype(fmt: str, entry: Entry, last_block: int) -> torch.dtype:
    if fmt in ("fp32", "fp32-pth"):
        return torch.float32
    if fmt == "fp16":
        return torch.float16
    if fmt == "bf16":
        return torch.bfloat16
    if fmt == "fp8_e4m3fn":
        return torch.float8_e4m3fn
    if fmt == "fp8_mixed_block35":
        m = _BLOCK.match(entry.name)
        return torch.float16 if m and int(m.group(1)) == last_block else torch.float8_e4m3fn
    raise ValueError(fmt)


def _last_block(entries: list[Entry]) -> int:
    return max((int(m.group(1)) for e in entries if (m := _BLOCK.match(e.name))), default=-1)


def gguf_plan(entries: list[Entry], fmt: str):
    """GGML type per entry for a GGUF format, the way llama.cpp's quantize picks them."""
    base = {"gguf-f16": Q.F16, "gguf-bf16": Q.BF16, "gguf-q8_0": Q.Q8_0, "gguf-q4_0": Q.Q4_0,
            "gguf-q5_0": Q.Q5_0, "gguf-q4_k_m": Q.Q4_K, "gguf-q4_k": Q.Q4_K, "gguf-q5_k_m": Q.Q5_K, "gguf-q6_k": Q.Q6_K}[fmt]  # fmt: skip
    # llama.cpp falls back to a 32-block type when a row is not a multiple of 256 (Q5_K -> Q5_1
    # there; we write no Q5_1, so Q8_0).
    fallback = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q8_0, Q.Q6_K: Q.Q8_0}
    num_blocks = _last_block(entries) + 1
    plan = {}
    for entry in entries:
        if len(entry.shape) < 2:
            plan[entry.name] = Q.F32 if entry.name.endswith("rope.rope.freqs") else Q.F16
            continue
        qtype = base
        if fmt in ("gguf-q4_k_m", "gguf-q5_k_m") and _more_bits(entry.name, num_blocks):
            qtype = Q.Q6_K
        while qtype in fallback and not can_quantize(entry.shape, qtype):
            qtype = fallback[qtype]
        if not can_quantize(entry.shape, qtype):
            qtype = Q.F16
        plan[entry.name] = qtype
    return plan


def _more_bits(name: str, num_blocks: int) -> bool:
    """llama.cpp's *_K_M rule: the output layer, and the value/down projections of the first and
    last eighth of the layers and every third layer between get Q6_K."""
    if name == "vid_out.proj.weight":
        return True
    m = _BLOCK.match(name)
    if not m or not (".proj_qkv." in name or ".mlp." in name and ".proj_out." in name):
        return False
    i, n = int(m.group(1)), num_blocks
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# --------------------------------------------------------------------------------------------- writers


def write_checkpoint(variant: str, fmt: str, out: str | Path, *, seed: int = 0, device: str = "cpu",
                     text_embedding: bool = True, gguf_prefix: bool = False) -> Path:
    """Write a random ``variant`` checkpoint in format ``fmt`` to ``out``; for DiTs also a stand-in
    ``pos_emb.safetensors`` beside it (unless one exists or ``text_embedding`` is False)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = model_entries(variant)
    dev = torch.device(device)
    tmp = out.with_name(out.name + ".partial")
    if fmt == "fp32-pth":
        torch.save({e.name: random_tensor(e, seed, dev).cpu() for e in entries}, tmp)
    elif fmt.startswith("gguf-"):
        _write_gguf(tmp, entries, fmt, seed, dev, variant, gguf_prefix)
    else:
        last = _last_block(entries)
        dtypes = {e.name: _float_dtype(fmt, e, last) for e in entries}
        _write_safetensors(tmp, entries, dtypes, seed, dev, {"format": "pt"})
    tmp.replace(out)
    if text_embedding and variant in DIT_VARIANTS:
        emb_path = out.parent / "pos_emb.safetensors"
        if not emb_path.exists():
            write_text_embedding(emb_path, _txt_in_dim(entries), seed=seed)
    return out


def _txt_in_dim(entries: list[Entry]) -> int:
    return next(e.shape[1] for e in entries if e.name == "txt_in.weight")


def write_text_embedding(path: Path, dim: int, *, seed: int = 0, tokens: int = TEXT_TOKENS) -> Path:
    gen = torch.Generator().manual_seed(seed + 58)
    emb = torch.randn(tokens, dim, generator=gen).to(torch.bfloat16)
    save_file({"emb": emb}, str(path))
    return path


def _tensors(entries: list[Entry], seed: int, device: torch.device) -> Iterator[tuple[Entry, torch.Tensor]]:
    for entry in entries:
        yield entry, random_tensor(entry, seed, device)


def _write_safetensors(path: Path, entries: list[Entry], dtypes: dict[str, torch.dtype], seed: int,
                       device: torch.device, metadata: dict[str, str]) -> None:
    """Header first (sizes are known from shapes), then one tensor at a time."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for entry in entries:
        dtype = dtypes[entry.name]
        nbytes = math.prod(entry.shape) * torch.empty((), dtype=dtype).element_size()
        header[entry.name] = {"dtype": _SAFETENSORS_NAMES[dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + nbytes]}  # fmt: skip
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for entry, value in _tensors(entries, seed, device):
            data = value.to(dtypes[entry.name]).contiguous().view(torch.uint8).cpu().numpy()
            f.write(memoryview(data))


def _write_gguf(path: Path, entries: list[Entry], fmt: str, seed: int, device: torch.device, variant: str,
                prefix: bool) -> None:
    plan = gguf_plan(entries, fmt)
    file_types = {"gguf-f16": gguf.LlamaFileType.MOSTLY_F16, "gguf-bf16": gguf.LlamaFileType.MOSTLY_BF16,
                  "gguf-q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "gguf-q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                  "gguf-q5_0": gguf.LlamaFileType.MOSTLY_Q5_0, "gguf-q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
                  "gguf-q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_M,
                  "gguf-q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M, "gguf-q6_k": gguf.LlamaFileType.MOSTLY_Q6_K}  # fmt: skip
    writer = gguf.GGUFWriter(path=None, arch=GGUF_ARCH)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(int(file_types[fmt]))
    writer.add_string("general.name", f"synthetic SeedVR2 {variant} (random weights)")
    name_in_file = (lambda n: "model.diffusion_model." + n) if prefix else (lambda n: n)
    for entry in entries:
        qtype = plan[entry.name]
        if len(entry.shape) > 4:
            # ggml tensors have at most 4 dims; ComfyUI-GGUF records the real shape in metadata.
            writer.add_array(f"comfy.gguf.orig_shape.{name_in_file(entry.name)}", list(entry.shape))
        shape = _gguf_shape(entry.shape)
        if qtype in (Q.F32, Q.F16):
            np_dtype = np.float32 if qtype == Q.F32 else np.float16
            nbytes = math.prod(shape) * np.dtype(np_dtype).itemsize
            writer.add_tensor_info(name_in_file(entry.name), shape, np.dtype(np_dtype), nbytes)
        else:
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            byte_shape = (*shape[:-1], shape[-1] // block * type_size)
            writer.add_tensor_info(name_in_file(entry.name), byte_shape, np.dtype(np.uint8),
                                   math.prod(byte_shape), raw_dtype=qtype)  # fmt: skip
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for entry, value in _tensors(entries, seed, device):
        qtype = plan[entry.name]
        value = value.reshape(_gguf_shape(entry.shape))
        if qtype == Q.F32:
            data = value.to(torch.float32).cpu().numpy()
        elif qtype == Q.F16:
            data = value.to(torch.float16).cpu().numpy()
        else:
            data = quantize(value, qtype).cpu().numpy()
        writer.write_tensor_data(data)
    writer.close()


def _gguf_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shapes of more than 4 dims are flattened to 2-D (rows, last dim) the way ComfyUI-GGUF does."""
    if len(shape) <= 4:
        return shape
    return (math.prod(shape[:-1]), shape[-1])
