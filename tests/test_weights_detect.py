"""Variant and format detection from names/shapes/dtypes; clear errors for foreign, truncated and
corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import shared_path
from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.detect import classify, inspect_checkpoint
from seedvr_cli.weights.readers import TensorInfo
from seedvr_cli.weights.synthesize import write_checkpoint

# (variant, format written, format detected)
CASES = [
    ("tiny-3b", "fp32-pth", "fp32"),
    ("tiny-3b", "fp16", "fp16"),
    ("tiny-3b", "bf16", "bf16"),
    ("tiny-3b", "fp8_e4m3fn", "fp8_e4m3fn"),
    ("tiny-3b", "gguf-q8_0", "gguf-Q8_0"),
    ("tiny-3b", "gguf-q4_k_m", "gguf-Q4_K_M"),
    ("tiny-7b", "fp32", "fp32"),
    ("tiny-7b", "fp16", "fp16"),
    ("tiny-7b", "fp8_mixed_block35", "fp8_e4m3fn_mixed"),
    ("tiny-7b", "gguf-q4_0", "gguf-Q4_0"),
    ("tiny-7b", "gguf-q5_0", "gguf-Q5_0"),
    ("tiny-7b", "gguf-q6_k", "gguf-Q6_K"),
    ("tiny-7b", "gguf-bf16", "gguf-BF16"),
    ("tiny-vae", "fp16", "fp16"),
    ("tiny-vae", "fp32-pth", "fp32"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _suffix(fmt: str) -> str:
    return ".pth" if fmt == "fp32-pth" else ".gguf" if fmt.startswith("gguf") else ".safetensors"


@pytest.mark.parametrize(("variant", "fmt", "detected"), CASES, ids=[f"{v}-{f}" for v, f, _ in CASES])
def test_detects_variant_and_format_of_every_generated_file(tmp_path, variant, fmt, detected):
    path = write_checkpoint(variant, fmt, tmp_path / f"model{_suffix(fmt)}", text_embedding=False)
    info = inspect_checkpoint(path)
    assert (info.kind, info.variant, info.format) == ("vae" if "vae" in variant else "dit", variant, detected)
    assert info.file_size == path.stat().st_size
    if fmt == "fp8_mixed_block35":
        assert info.fp16_blocks == (3,)  # the last block, as block 35 is the 7B's last


def test_gguf_with_comfy_prefix_is_detected(tmp_path):
    path = write_checkpoint("tiny-3b", "gguf-q8_0", tmp_path / "m.gguf", text_embedding=False, gguf_prefix=True)
    info = inspect_checkpoint(path)
    assert (info.variant, info.format) == ("tiny-3b", "gguf-Q8_0")


def _manifest_infos(name: str, dtype_of) -> dict[str, TensorInfo]:
    entries = json.loads(shared_path("reference", "manifests", name).read_text())["entries"]
    return {e["name"]: TensorInfo(e["name"], tuple(e["shape"]), dtype_of(e["name"], e["shape"])) for e in entries}


def test_detects_real_size_files_from_manifests():
    fp16 = lambda name, shape: torch.float16  # noqa: E731
    fp8 = lambda name, shape: torch.float8_e4m3fn  # noqa: E731
    mixed = lambda name, shape: torch.float16 if name.startswith("blocks.35.") else torch.float8_e4m3fn  # noqa: E731
    here = Path("x.safetensors")
    assert (classify(here, _manifest_infos("seedvr2_3b_dit.json", fp16)).variant,
            classify(here, _manifest_infos("seedvr2_3b_dit.json", fp8)).format) == ("3b", "fp8_e4m3fn")  # fmt: skip
    seven = classify(here, _manifest_infos("seedvr2_7b_dit.json", mixed))
    assert (seven.variant, seven.format, seven.fp16_blocks, seven.num_blocks) == ("7b", "fp8_e4m3fn_mixed", (35,), 36)
    assert seven.num_params == 8_239_607_872  # manifest total_parameters (rope buffers excluded)
    vae = classify(here, _manifest_infos("ema_vae.json", fp16))
    assert (vae.kind, vae.variant, vae.format, vae.num_params) == ("vae", "vae", "fp16", 250_648_227)


def test_foreign_safetensors_is_rejected_naming_its_keys(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(2)}, str(path))  # fmt: skip
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "not a SeedVR2 checkpoint" in message
    assert "input_blocks.0.0.weight" in message or "first_stage_model.encoder.conv_in.weight" in message


def test_dit_with_stray_tensors_lists_the_unexpected_ones(tmp_path):
    path = write_checkpoint("tiny-7b", "fp16", tmp_path / "m.safetensors", text_embedding=False)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    tensors["lora_up.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: lora_up.weight"):
        inspect_checkpoint(path)


@pytest.mark.parametrize("fmt", ["fp16", "fp32-pth", "gguf-q8_0"])
def test_truncated_file_is_a_clear_error(tmp_path, fmt):
    path = write_checkpoint("tiny-7b", fmt, tmp_path / f"m{_suffix(fmt)}", text_embedding=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name}: cannot read this .* file .*truncated or corrupt"):
        from seedvr_cli.weights.loader import load_dit

        load_dit(path, compute_dtype=torch.float32)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage that is no header" * 10, b"\xff" * 64])
def test_corrupt_safetensors_header_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.safetensors: cannot read this safetensors file"):
        inspect_checkpoint(path)


def test_corrupt_gguf_and_pth_are_clear_errors(tmp_path):
    gguf_path = tmp_path / "broken.gguf"
    gguf_path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(CheckpointError, match="broken.gguf: cannot read this GGUF file"):
        inspect_checkpoint(gguf_path)
    pth_path = tmp_path / "broken.pth"
    pth_path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="broken.pth: cannot read this PyTorch file"):
        inspect_checkpoint(pth_path)


def test_missing_file_and_plain_tensor_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        inspect_checkpoint(tmp_path / "absent.safetensors")
    path = tmp_path / "emb.pt"
    torch.save(torch.zeros(3, 4), path)
    with pytest.raises(CheckpointError, match="not a dict of tensors"):
        inspect_checkpoint(path)


@pytest.mark.parametrize("entry", [{"dtype": "F16"}, {"dtype": "F16", "shape": "2x2"}, ["not", "a", "dict"]])
def test_safetensors_header_with_a_broken_entry_is_a_clear_error(tmp_path, entry):
    header = json.dumps({"blocks.0.weight": entry}).encode()
    path = tmp_path / "broken.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="broken.safetensors: cannot read this safetensors file"):
        inspect_checkpoint(path)


def test_gguf_quant_types_we_cannot_dequantize_are_refused_up_front(tmp_path):
    from seedvr_cli.weights.detect import _check_quant_types

    infos = {"a.weight": TensorInfo("a.weight", (64, 256), None, "Q4_K"),
             "b.weight": TensorInfo("b.weight", (64, 256), None, "IQ2_XXS")}
    with pytest.raises(CheckpointError, match=r"m.gguf: GGUF quant type\(s\) IQ2_XXS are not supported"):
        _check_quant_types(tmp_path / "m.gguf", infos)
    _check_quant_types(tmp_path / "m.gguf", {"a.weight": infos["a.weight"]})  # supported types pass
