"""Synthetic checkpoints: published names and layouts, determinism, the script's command line."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter

import pytest
import torch
from gguf import GGML_QUANT_SIZES

from conftest import REPO_ROOT, shared_path
from seedvr_cli.weights.readers import open_checkpoint
from seedvr_cli.weights.synthesize import gguf_plan, model_entries, write_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("variant", "manifest"), [("3b", "seedvr2_3b_dit.json"), ("7b", "seedvr2_7b_dit.json"),
                                                   ("vae", "ema_vae.json")])  # fmt: skip
def test_real_size_entries_are_the_published_ones(variant, manifest):
    data = json.loads(shared_path("reference", "manifests", manifest).read_text())
    published = {e["name"]: tuple(e["shape"]) for e in data["entries"]}
    # Same names and shapes; the order may differ (the VAE's mid block registers its modules in
    # another order than the reference), which no reader depends on.
    assert {e.name: e.shape for e in model_entries(variant)} == published


def test_real_size_fp8_layout_matches_the_published_file_size():
    # The published 3B fp8 file is 3,391,544,696 bytes = every entry at one byte + a ~68 KB header.
    numel = sum(math.prod(e.shape) for e in model_entries("3b"))
    assert numel == 3_391_476_448
    assert 0 < 3_391_544_696 - numel < 100_000


def test_q4_k_m_layout_follows_llama_cpp():
    entries = model_entries("7b")
    plan = gguf_plan(entries, "gguf-q4_k_m")
    kinds = Counter(q.name for q in plan.values())
    assert kinds["Q4_K"] > kinds["Q6_K"] > 0
    assert plan["vid_out.proj.weight"].name == "Q6_K"  # llama.cpp's output layer rule
    assert plan["vid_in.proj.weight"].name == "F16"  # 132 inputs: no block type fits
    assert all(plan[e.name].name in ("F16", "F32") for e in entries if len(e.shape) == 1)
    # "gguf-q4_k" reproduces the size of the published 7B "Q4_K_M" upload (4,638,795,680 bytes).
    all_q4k = gguf_plan(entries, "gguf-q4_k")
    size = sum(math.prod(e.shape) // GGML_QUANT_SIZES[all_q4k[e.name]][0] * GGML_QUANT_SIZES[all_q4k[e.name]][1]
               for e in entries)  # fmt: skip
    assert abs(size - 4_638_795_680) / 4_638_795_680 < 0.002


def test_same_seed_same_model_across_formats(tmp_path):
    fp32 = write_checkpoint("tiny-7b", "fp32", tmp_path / "a.safetensors", seed=3, text_embedding=False)
    again = write_checkpoint("tiny-7b", "fp32", tmp_path / "b.safetensors", seed=3, text_embedding=False)
    other = write_checkpoint("tiny-7b", "fp32", tmp_path / "c.safetensors", seed=4, text_embedding=False)
    fp16 = write_checkpoint("tiny-7b", "fp16", tmp_path / "d.safetensors", seed=3, text_embedding=False)
    assert fp32.read_bytes() == again.read_bytes() != other.read_bytes()
    with open_checkpoint(fp32) as a, open_checkpoint(fp16) as b:
        for name in a.names():
            assert b.infos[name].dtype == torch.float16
            torch.testing.assert_close(b.get(name).float(), a.get(name), rtol=1e-3, atol=1e-4)


def test_fp8_files_store_every_entry_in_fp8_and_mixed_keep_the_last_block(tmp_path):
    plain = write_checkpoint("tiny-7b", "fp8_e4m3fn", tmp_path / "fp8.safetensors", text_embedding=False)
    mixed = write_checkpoint("tiny-7b", "fp8_mixed_block35", tmp_path / "mixed.safetensors", text_embedding=False)
    with open_checkpoint(plain) as reader:
        assert {info.dtype for info in reader.infos.values()} == {torch.float8_e4m3fn}
    with open_checkpoint(mixed) as reader:
        for name, info in reader.infos.items():
            expected = torch.float16 if name.startswith("blocks.3.") else torch.float8_e4m3fn
            assert info.dtype == expected, name


def test_gguf_metadata_is_what_comfyui_gguf_files_carry(tmp_path):
    path = write_checkpoint("tiny-3b", "gguf-q4_k_m", tmp_path / "m.gguf", text_embedding=False)
    with open_checkpoint(path) as reader:
        assert reader.metadata["general.architecture"] == "seedvr"
        assert reader.metadata["general.quantization_version"] == 2
        assert reader.metadata["general.file_type"] == 15  # MOSTLY_Q4_K_M
        # 4 blocks: llama.cpp's "more bits" rule picks blocks 2 and 3 (the last eighth, every third).
        assert reader.infos["blocks.3.mlp.all.proj_out.weight"].qtype == "Q6_K"
        assert reader.infos["blocks.0.mlp.vid.proj_out.weight"].qtype == "Q4_K"


def _script():
    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO_ROOT / "scripts" / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_writes_checkpoint_and_text_embedding_stand_in(tmp_path, capsys):
    out = tmp_path / "dit.safetensors"
    assert _script().main(["--variant", "tiny-3b", "--format", "fp16", "--out", str(out), "--seed", "5"]) == 0
    assert out.is_file() and "tiny-3b fp16" in capsys.readouterr().out
    from safetensors.torch import load_file

    emb = load_file(str(tmp_path / "pos_emb.safetensors"))["emb"]
    assert emb.shape == (58, 64) and emb.dtype == torch.bfloat16
    # An existing embedding is left alone.
    before = (tmp_path / "pos_emb.safetensors").read_bytes()
    write_checkpoint("tiny-3b", "bf16", tmp_path / "other.safetensors", seed=9)
    assert (tmp_path / "pos_emb.safetensors").read_bytes() == before


def test_script_rejects_unknown_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _script().main(["--variant", "tiny-3b", "--format", "int3", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "invalid choice: 'int3'" in capsys.readouterr().err


def test_bench_loading_measures_a_tiny_load(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_loading", REPO_ROOT / "scripts" / "bench_loading.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    paths = bench.synthesize(tmp_path, "tiny-7b", "cpu")
    results = {label: bench.measure(paths[fmt], "cpu", dtype) for label, fmt, dtype in bench.CASES}
    assert results["gguf Q4_K_M"]["compressed_layers"] > 0
    assert all(r["rss_peak"] >= r["rss_baseline"] > 0 and r["model_bytes"] > 0 for r in results.values())
    bench.report(results, "tiny-7b", "cpu")
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["bench"] == "loading" and set(last["cases"]) == {label for label, _, _ in bench.CASES}
