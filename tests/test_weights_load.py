"""Every published format loads into the tiny models and computes what the fp32 model computes,
within a tolerance per format; compressed weights stay compressed in memory."""

from __future__ import annotations

import pytest
import torch

from conftest import shared_path
from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.loader import load_dit, load_vae
from seedvr_cli.weights.quantized import Fp8Linear, GGUFLinear
from seedvr_cli.weights.synthesize import write_checkpoint
from seedvr_cli.weights.text_embedding import find_text_embedding, load_text_embedding

SEED = 7

# Max abs error of the tiny DiT's output vs the fp32 file loaded in fp32, on the input below (output
# |max| 5.5 for tiny-3b, 4.1 for tiny-7b), compute dtype float32 so only the storage format differs.
# Measured on the CPU (seed 7):
#   format        tiny-3b  tiny-7b
#   fp32 (.pth)   0        0
#   fp16          0.0020   0.0017
#   bf16          0.018    0.011
#   fp8_e4m3fn    0.27     0.17
#   fp8 mixed     0.25     0.17
#   gguf-bf16     0.013    0.012
#   gguf-q8_0     0.033    0.031
#   gguf-q6_k     0.055    0.036
#   gguf-q5_0     0.25     0.23
#   gguf-q4_k_m   0.18     0.16
#   gguf-q4_0     0.52     0.42
# Tiny models have 128-wide rows, so the K-quant files fall back to 32-blocks (Q5_0/Q8_0) for most
# matrices, as llama.cpp does; the K-quant blocks themselves are checked in test_weights_gguf.py.
# Bounds: about 1.5x the larger measurement.
DIT_TOLERANCE = {
    "fp32-pth": 1e-6,
    "fp16": 0.0035,
    "bf16": 0.03,
    "fp8_e4m3fn": 0.4,
    "fp8_mixed_block35": 0.4,
    "gguf-bf16": 0.02,
    "gguf-q8_0": 0.05,
    "gguf-q6_k": 0.085,
    "gguf-q5_0": 0.38,
    "gguf-q4_k_m": 0.28,
    "gguf-q4_0": 0.8,
}
# Tiny VAE, float32 compute: (encode latent mean |max| 1.26, decode |max| 2.7). Measured max abs:
#   fp16 0.0014 / 0.0044, bf16 0.0054 / 0.032, fp8_e4m3fn 0.12 / 0.60 (no fp8 VAE is published).
VAE_TOLERANCE = {"fp16": (0.003, 0.007), "bf16": (0.009, 0.05), "fp8_e4m3fn": (0.18, 0.9)}


def _suffix(fmt: str) -> str:
    return ".pth" if fmt == "fp32-pth" else ".gguf" if fmt.startswith("gguf") else ".safetensors"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for variant in ("tiny-3b", "tiny-7b"):
        for fmt in DIT_TOLERANCE:
            out[variant, fmt] = write_checkpoint(variant, fmt, root / variant / f"dit{_suffix(fmt)}".replace(
                "dit", fmt), seed=SEED)  # fmt: skip
    for fmt in ("fp32-pth", *VAE_TOLERANCE):
        out["tiny-vae", fmt] = write_checkpoint("tiny-vae", fmt, root / "vae" / f"{fmt}{_suffix(fmt)}", seed=SEED)
    return out


def _dit_input(txt_dim: int):
    gen = torch.Generator().manual_seed(0)
    t, h, w = 2, 6, 8  # latent grid; the DiT patches 1x2x2
    vid = torch.randn(t * h * w, 33, generator=gen)
    txt = torch.randn(10, txt_dim, generator=gen)
    return vid, txt, torch.tensor([[t, h, w]]), torch.tensor([[10]]), torch.tensor([1000.0])


@pytest.fixture(scope="module")
def dit_reference(files):
    out = {}
    for variant in ("tiny-3b", "tiny-7b"):
        model = load_dit(files[variant, "fp32-pth"], compute_dtype=torch.float32)
        inputs = _dit_input(model.config.txt_in_dim)
        with torch.no_grad():
            out[variant] = (inputs, model(*inputs))
    return out


@pytest.mark.parametrize("variant", ["tiny-3b", "tiny-7b"])
@pytest.mark.parametrize("fmt", list(DIT_TOLERANCE))
def test_dit_format_matches_fp32_within_tolerance(files, dit_reference, variant, fmt):
    inputs, expected = dit_reference[variant]
    model = load_dit(files[variant, fmt], compute_dtype=torch.float32)
    assert model.checkpoint_info.variant == variant
    with torch.no_grad():
        got = model(*inputs)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= DIT_TOLERANCE[fmt], f"{variant} {fmt}: max abs error {err:.4g}"


@pytest.mark.parametrize("variant", ["tiny-3b", "tiny-7b"])
def test_fp8_weights_stay_fp8_and_match_the_upcast_reference(files, dit_reference, variant):
    inputs, _ = dit_reference[variant]
    kept = load_dit(files[variant, "fp8_e4m3fn"], compute_dtype=torch.float32)
    fp8_layers = [m for m in kept.modules() if isinstance(m, Fp8Linear)]
    assert fp8_layers and all(m.weight.dtype == torch.float8_e4m3fn for m in fp8_layers)
    assert all(m.bias is None or m.bias.dtype == torch.float32 for m in fp8_layers)
    # Plain reference path: everything upcast once at load.
    upcast = load_dit(files[variant, "fp8_e4m3fn"], compute_dtype=torch.float32, keep_fp8=False)
    assert not any(isinstance(m, Fp8Linear) for m in upcast.modules())
    with torch.no_grad():
        torch.testing.assert_close(kept(*inputs), upcast(*inputs), rtol=0, atol=1e-6)


def test_mixed_file_keeps_its_fp16_block_plain(files):
    model = load_dit(files["tiny-7b", "fp8_mixed_block35"], compute_dtype=torch.float32)
    last = model.blocks[-1]
    assert not any(isinstance(m, Fp8Linear) for m in last.modules())
    assert any(isinstance(m, Fp8Linear) for m in model.blocks[0].modules())


@pytest.mark.parametrize("fmt", ["gguf-q8_0", "gguf-q4_k_m"])
def test_gguf_weights_stay_packed_and_match_dequantized_reference(files, dit_reference, fmt):
    inputs, _ = dit_reference["tiny-7b"]
    packed = load_dit(files["tiny-7b", fmt], compute_dtype=torch.float32)
    layers = [m for m in packed.modules() if isinstance(m, GGUFLinear)]
    assert layers and all(m.weight.dtype == torch.uint8 for m in layers)
    if fmt == "gguf-q4_k_m":
        assert {m.qtype.name for m in layers} >= {"Q4_K", "Q6_K"}
    packed_bytes = sum(m.weight.numel() for m in layers)
    dense_bytes = sum(m.in_features * m.out_features * 4 for m in layers)
    assert packed_bytes < dense_bytes / 3
    plain = load_dit(files["tiny-7b", fmt], compute_dtype=torch.float32, keep_gguf=False)
    with torch.no_grad():
        torch.testing.assert_close(packed(*inputs), plain(*inputs), rtol=0, atol=1e-5)


def test_bf16_compute_runs_every_compressed_layer(files, dit_reference):
    inputs, expected = dit_reference["tiny-3b"]
    for fmt, bound in (("fp8_e4m3fn", 0.4), ("gguf-q4_k_m", 0.3), ("fp16", 0.06)):
        model = load_dit(files["tiny-3b", fmt], compute_dtype=torch.bfloat16)
        with torch.no_grad():
            got = model(*inputs).float()
        # Measured: fp8 0.27, Q4_K_M 0.19, fp16 0.036 (bf16 activations add ~0.03).
        assert (got - expected).abs().max().item() <= bound, fmt


@pytest.mark.parametrize("fmt", list(VAE_TOLERANCE))
def test_vae_format_matches_fp32_within_tolerance(files, fmt):
    gen = torch.Generator().manual_seed(1)
    clip = torch.rand(1, 3, 5, 16, 16, generator=gen) * 2 - 1
    reference = load_vae(files["tiny-vae", "fp32-pth"], dtype=torch.float32)
    model = load_vae(files["tiny-vae", fmt], dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        mean_ref = reference.encode(clip)[0]
        mean = model.encode(clip)[0]
        decoded_ref = reference.decode(mean_ref)
        decoded = model.decode(mean_ref)
    encode_bound, decode_bound = VAE_TOLERANCE[fmt]
    assert (mean - mean_ref).abs().max().item() <= encode_bound
    assert (decoded - decoded_ref).abs().max().item() <= decode_bound


def test_wrong_kind_and_mismatched_files_are_clear_errors(files, tmp_path):
    with pytest.raises(CheckpointError, match="is a SeedVR2 VAE checkpoint, not a DIT; pass it with --vae"):
        load_dit(files["tiny-vae", "fp16"])
    with pytest.raises(CheckpointError, match="is a SeedVR2 DIT checkpoint, not a VAE; pass it with --model"):
        load_vae(files["tiny-7b", "fp16"])
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(files["tiny-7b", "fp16"]))
    del tensors["blocks.1.attn.proj_out.vid.bias"]
    tensors["txt_in.weight"] = tensors["txt_in.weight"][:, :32].contiguous()
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(CheckpointError, match=r"1 missing tensors \(blocks.1.attn.proj_out.vid.bias\)"):
        load_dit(broken)
    tensors["blocks.1.attn.proj_out.vid.bias"] = torch.zeros(128, dtype=torch.float16)
    save_file(tensors, str(broken))
    with pytest.raises(CheckpointError, match=r"wrong shape \(txt_in.weight \(128, 32\) \(expected \(128, 64\)\)"):
        load_dit(broken)


def test_old_vae_attention_names_load(files, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(files["tiny-vae", "fp16"]))
    renamed = {k.replace("attentions.0.to_q.", "attentions.0.query.").replace("attentions.0.to_out.0.",
                                                                              "attentions.0.proj_attn."): v
               for k, v in tensors.items()}  # fmt: skip
    assert renamed.keys() != tensors.keys()
    old = tmp_path / "old_vae.safetensors"
    save_file(renamed, str(old))
    a = load_vae(files["tiny-vae", "fp16"], dtype=torch.float32).state_dict()
    b = load_vae(old, dtype=torch.float32).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_text_embeddings_load_from_pt_and_safetensors():
    folder = shared_path("reference", "text_embeddings")
    pt = load_text_embedding(folder / "pos_emb.pt")
    st = load_text_embedding(folder / "pos_emb.safetensors")
    assert pt.shape == (58, 5120) and pt.dtype == torch.bfloat16
    assert torch.equal(pt, st)


def test_text_embedding_lookup_and_errors(files, tmp_path):
    dit = files["tiny-3b", "fp16"]
    # make_checkpoint wrote a stand-in beside the DiT: found without being named.
    sibling = find_text_embedding(dit)
    assert sibling == dit.parent / "pos_emb.safetensors"
    assert load_text_embedding(sibling, expected_dim=64).shape == (58, 64)
    with pytest.raises(CheckpointError, match=r"shape \(58, 64\), expected \[tokens, 5120\]"):
        load_text_embedding(sibling)
    with pytest.raises(CheckpointError, match="--text-embedding file not found"):
        find_text_embedding(dit, override=tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="text embedding not found; pass --text-embedding"):
        load_text_embedding(tmp_path / "nope.pt")


@pytest.mark.parametrize("fmt", ["fp16", "gguf-q8_0"])
def test_released_pages_read_back_identically(files, fmt):
    # The loader drops each tensor's mapped pages once it is on a GPU; data must stay intact.
    from seedvr_cli.weights.readers import GGUFTensor, open_checkpoint

    with open_checkpoint(files["tiny-7b", fmt]) as reader:
        for name in reader.names()[:20]:
            first = reader.get(name)
            before = (first.data if isinstance(first, GGUFTensor) else first).clone()
            reader.release(name)
            again = reader.get(name)
            assert torch.equal(again.data if isinstance(again, GGUFTensor) else again, before)
            assert torch.equal(first.data if isinstance(first, GGUFTensor) else first, before)


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["fp16", "fp8_e4m3fn", "gguf-q4_k_m"])
def test_loading_onto_the_gpu_matches_the_cpu(files, dit_reference, fmt):
    inputs, _ = dit_reference["tiny-7b"]
    cpu = load_dit(files["tiny-7b", fmt], compute_dtype=torch.float32)
    gpu = load_dit(files["tiny-7b", fmt], device="cuda", compute_dtype=torch.float32)
    assert all(t.device.type == "cuda" for t in (*gpu.parameters(), *gpu.buffers()))
    with torch.no_grad():
        expected = cpu(*inputs)
        got = gpu(*(x.cuda() for x in inputs)).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=2e-3)


def test_cpu_weights_view_the_file_copy_on_write(files):
    # fp16 file, fp16 compute on the CPU: the parameters are views of the file map (no copy);
    # writing into one must neither crash nor change the file.
    path = files["tiny-7b", "fp16"]
    before = path.read_bytes()
    model = load_dit(path, compute_dtype=torch.float16)
    weight = model.blocks[0].attn.proj_qkv.vid.weight
    weight.data.add_(1)
    assert path.read_bytes() == before
    assert torch.equal(load_dit(path, compute_dtype=torch.float16).blocks[0].attn.proj_qkv.vid.weight + 1, weight)


def test_file_without_rope_buffers_loads_and_computes_the_same(files, dit_reference, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(files["tiny-3b", "fp16"])).items() if not k.endswith("rope.freqs")}
    stripped = tmp_path / "no_rope.safetensors"
    save_file(tensors, str(stripped))
    inputs, _ = dit_reference["tiny-3b"]
    with torch.no_grad():
        expected = load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32)(*inputs)
        got = load_dit(stripped, compute_dtype=torch.float32)(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["fp16", "fp8_e4m3fn", "gguf-q4_k_m"])
def test_placement_decides_each_tensor_and_is_asked_for_every_one(files, dit_reference, fmt):
    inputs, _ = dit_reference["tiny-3b"]
    asked: list[str] = []

    def placement(name: str) -> str:
        asked.append(name)
        return "cpu"

    placed = load_dit(files["tiny-3b", fmt], compute_dtype=torch.float32, placement=placement)
    plain = load_dit(files["tiny-3b", fmt], compute_dtype=torch.float32)
    assert set(asked) == set(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(placed(*inputs), plain(*inputs), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["fp16", "fp8_e4m3fn", "gguf-q4_k_m"])
def test_placement_keeps_blocks_on_the_host_and_the_rest_on_the_gpu(files, fmt):
    model = load_dit(files["tiny-3b", fmt], device="cuda", compute_dtype=torch.float32,
                     placement=lambda name: "cpu" if name.startswith("blocks.") else "cuda")
    for name, tensor in model.state_dict().items():
        expected = "cpu" if name.startswith("blocks.") else "cuda"
        assert tensor.device.type == expected, name
    # Compressed layers keep their stored format wherever they are placed.
    kinds = {type(m).__name__ for n, m in model.named_modules() if n.startswith("blocks.")}
    assert kinds & {"Fp8Linear", "GGUFLinear"} or fmt == "fp16"
