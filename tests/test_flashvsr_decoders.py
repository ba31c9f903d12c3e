"""FlashVSR's decoders: TCDecoder (tiny / tiny-long) and the Wan2.1 VAE decoder (full).

Fixture parity, streaming against one-shot decodes, bounded state, the tiled decode's blend, and
the decoder files (synthesized layout, loading, key mismatches)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from conftest import REPO_ROOT, shared_path
from seedvr_cli.errors import CheckpointError
from seedvr_cli.memory.wan_vae_tiling import ramp, tile_starts, tiled_decode
from seedvr_cli.models.flashvsr import tc_decoder, wan_vae
from seedvr_cli.models.flashvsr.tc_decoder import TCDecoder, TCDecoderState
from seedvr_cli.models.flashvsr.wan_vae import CausalCache, CausalConv3d, WanVAEDecoder
from seedvr_cli.parity import detect_kind
from seedvr_cli.parity import flashvsr_decoders as parity
from seedvr_cli.weights.flashvsr_decoders import (
    TC_OPTIONAL_KEYS,
    load_tc_decoder,
    load_wan_vae_decoder,
    tc_decoder_file_shapes,
    wan_vae_file_shapes,
)
from seedvr_cli.weights.synthesize_flashvsr_decoders import write_decoder_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_tc(seed: int = 0) -> TCDecoder:
    torch.manual_seed(seed)
    model = TCDecoder(tc_decoder.VARIANTS["tiny-tcdecoder"]).eval()
    with torch.no_grad():
        for param in model.parameters():  # random identity convs too, as the fixture has them
            param.copy_(torch.randn_like(param) / math.sqrt(max(1, param[0].numel())))
    return model


def _tiny_vae(seed: int = 0) -> WanVAEDecoder:
    torch.manual_seed(seed)
    model = WanVAEDecoder(wan_vae.VARIANTS["tiny-wan2.1-vae"]).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn_like(param)
            param.copy_(1 + 0.2 * noise if name.endswith("gamma") else noise / math.sqrt(max(1, param[0].numel())))
    return model


def _tc_inputs(latent_frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents for ``latent_frames`` steps and the 4T-3 LQ frames a one-shot (tiny) decode gets."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, latent_frames, 16, 2, 3, generator=gen)
    cond = torch.rand(1, 3, 4 * latent_frames - 3, 16, 24, generator=gen) * 2 - 1
    return latents, cond


# ----------------------------------------------------------------------------- fixture parity


def test_fixture_parity_of_both_decoders():
    fixture_dir = shared_path("fixtures", "flashvsr")
    results = parity.run(fixture_dir)
    outputs = {(r.case, r.output) for r in results}
    assert {("tcdecoder", "one-shot (tiny)"), ("tcdecoder", "stream chunk 0"), ("tcdecoder", "stream chunk 1"),
            ("tcdecoder", "memory 19 after chunk 0"), ("tcdecoder", "net_in"), ("wan-vae", "raw decode"),
            ("wan-vae", "tiled decode")} <= outputs  # fmt: skip
    assert all(r.passed and r.tolerance <= 1e-5 for r in results), [r for r in results if not r.passed]


def test_flashvsr_folder_is_its_own_parity_kind():
    fixture_dir = shared_path("fixtures", "flashvsr")
    assert detect_kind(fixture_dir) == "flashvsr"
    assert not parity.detect(shared_path("fixtures", "vae"))


def test_fixture_tile_sizes_come_from_its_metadata():
    assert parity.fixture_tiles(shared_path("fixtures", "flashvsr")) == ((2, 4), (1, 2))


# ----------------------------------------------------------------------------- TCDecoder


def test_tc_first_call_drops_three_frames_later_calls_none():
    model = _tiny_tc()
    latents, cond = _tc_inputs(3)
    state = TCDecoderState()
    with torch.no_grad():
        first = model.decode(latents[:, :1], cond[:, :, :1], state)
        later = model.decode(latents[:, 1:], cond[:, :, 1:], state)
    assert first.shape == (1, 1, 3, 16, 24) and later.shape == (1, 8, 3, 16, 24)


def test_tc_tiny_long_chunks_equal_the_one_shot_decode():
    # tiny-long's schedule: 6 latents with 21 LQ frames first, then 2 latents with 8 frames per call.
    model = _tiny_tc()
    latents, cond = _tc_inputs(10)
    with torch.no_grad():
        one_shot = model.decode(latents, cond)
        state = TCDecoderState()
        chunks = [model.decode(latents[:, :6], cond[:, :, :21], state)]
        for start in (6, 8):
            frame = 4 * start - 3
            chunks.append(model.decode(latents[:, start : start + 2], cond[:, :, frame : frame + 8], state))
    assert one_shot.shape[1] == 37 and [c.shape[1] for c in chunks] == [21, 8, 8]
    assert torch.equal(torch.cat(chunks, dim=1), one_shot)


def test_tc_state_does_not_grow_with_the_clip():
    model = _tiny_tc()
    sizes = []
    for latent_frames in (2, 7):
        latents, cond = _tc_inputs(latent_frames)
        state = TCDecoderState()
        with torch.no_grad():
            frames = sum(1 for _ in model.iter_frames(latents, cond, state))
        assert frames == 4 * latent_frames - 3
        sizes.append({index: tuple(t.shape) for index, t in state.memory.items()})
    # One input frame per MemBlock (nine of them), whatever the length.
    assert sizes[0] == sizes[1] and len(sizes[0]) == 9


def test_tc_condition_is_padded_in_front_with_its_first_frame():
    cond = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 3, 5, 8, 8)
    shuffled = [TCDecoder.condition(cond, step) for step in (0, 1)]
    assert shuffled[0].shape == (1, 768, 1, 1)
    # Channel c*256 + ff*64 + hh*8 + ww holds frame 4f+ff of the padded clip 0,0,0,0,1,2,3,4.
    assert [s[0, [0, 64, 128, 192], 0, 0].tolist() for s in shuffled] == [[0, 0, 0, 0], [1, 2, 3, 4]]


def test_tc_rejects_a_condition_of_the_wrong_length():
    model = _tiny_tc()
    latents, cond = _tc_inputs(3)
    with pytest.raises(ValueError, match="condition frames"):
        model.decode(latents, cond[:, :, :4])


# ----------------------------------------------------------------------------- Wan VAE decoder


def test_vae_decode_in_pieces_equals_one_decode():
    model = _tiny_vae()
    z = torch.randn(1, 16, 5, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model.decode(z)
        cache = CausalCache()
        pieces = [model.decode(z[:, :, :2], cache), model.decode(z[:, :, 2:3], cache), model.decode(z[:, :, 3:], cache)]
    assert whole.shape == (1, 3, 17, 16, 24)
    assert [p.shape[2] for p in pieces] == [5, 4, 8]
    # Rounding only: the latent-side 1x1x1 conv runs over a different number of frames at once.
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=0, atol=1e-5)
    # The cache keeps at most two frames per causal conv, however many frames went through.
    assert max(t.shape[2] for t in cache.frames.values()) == 2


def test_causal_conv_with_cache_equals_one_zero_padded_pass():
    torch.manual_seed(0)
    conv = CausalConv3d(4, 5, 3, padding=1)
    x = torch.randn(1, 4, 6, 5, 5)
    with torch.no_grad():
        whole = conv(x)
        cache = CausalCache()
        steps = torch.cat([conv(x[:, :, t : t + 1], cache) for t in range(6)], dim=2)
        reference = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (1, 1, 1, 1, 2, 0)), conv.weight, conv.bias)
    torch.testing.assert_close(steps, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole, reference, rtol=0, atol=1e-6)


def test_vae_first_latent_gives_one_frame_then_four_each():
    model = _tiny_vae()
    with torch.no_grad():
        sizes = [chunk.shape[2] for chunk in model.iter_decode(torch.randn(1, 16, 3, 1, 1), CausalCache())]
    assert sizes == [1, 4, 4]


# ----------------------------------------------------------------------------- tiled decode


def test_tile_layout_skips_tiles_inside_the_previous_one():
    assert tile_starts(60, 60, 30) == [(0, 60)]
    assert tile_starts(61, 60, 30) == [(0, 60), (30, 61)]
    assert tile_starts(6, 4, 2) == [(0, 4), (2, 6)]
    assert tile_starts(5, 2, 1) == [(0, 2), (1, 3), (2, 4), (3, 5)]


def test_ramps_fade_only_inner_edges():
    assert ramp(6, 2, fade_in=False, fade_out=True).tolist() == [1, 1, 1, 1, 1.0, 0.5]
    assert ramp(6, 2, fade_in=True, fade_out=False).tolist() == [0.5, 1, 1, 1, 1, 1]
    assert ramp(3, 0, fade_in=True, fade_out=True).tolist() == [1, 1, 1]


def test_one_tile_covering_the_latent_is_the_clamped_raw_decode():
    model = _tiny_vae()
    z = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(tiled_decode(model, z, (2, 3), (1, 1)), model.decode(z).clamp(-1, 1))


class _PointwiseDecoder(WanVAEDecoder):
    """A decoder without spatial context (each latent pixel alone makes its 8x8 block): tiling it
    must give exactly the untiled picture, which checks the tile layout, where each tile lands and
    that every pixel gets weight (the ramp shapes are pinned by the fixture and the test above)."""

    def decode(self, z, cache=None):
        frames = torch.cat([z[:, :3, :1], z[:, :3, 1:].repeat_interleave(4, dim=2)], dim=2)
        return torch.tanh(frames).repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)


def test_tiled_decode_of_a_pointwise_decoder_is_the_untiled_one():
    model = _PointwiseDecoder(wan_vae.VARIANTS["tiny-wan2.1-vae"])
    z = torch.randn(1, 16, 3, 7, 9, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(tiled_decode(model, z, (4, 4), (2, 3)), model.decode(z), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- decoder files


def _script():
    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO_ROOT / "scripts" / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_size_layouts_match_the_published_counts():
    # Parameter and tensor counts from shared/reference/flashvsr/WEIGHTS.md.
    tc = tc_decoder_file_shapes(tc_decoder.VARIANTS["tcdecoder"])
    assert len(tc) == 66 and sum(math.prod(s) for s in tc.values()) == 45_338_371
    assert tc["decoder.1.weight"] == (512, 784, 3, 3) and tc["decoder.21.conv.weight"] == (256, 128, 1, 1)
    vae = wan_vae_file_shapes(wan_vae.VARIANTS["wan2.1-vae"])
    assert len(vae) == 194 and sum(math.prod(s) for s in vae.values()) == 126_892_531
    decoder_part = {k: s for k, s in vae.items() if k.startswith(("conv2.", "decoder."))}
    assert sum(math.prod(s) for s in decoder_part.values()) == 73_295_603
    assert vae["decoder.conv1.weight"] == (384, 16, 3, 3, 3)
    assert vae["decoder.middle.1.to_qkv.weight"] == (1152, 384, 1, 1)
    assert vae["decoder.upsamples.3.time_conv.weight"] == (768, 384, 3, 1, 1)
    assert vae["decoder.head.0.gamma"] == (96, 1, 1, 1) and vae["conv1.weight"] == (32, 32, 1, 1, 1)


def test_fixture_weights_have_the_layout_we_write():
    from safetensors import safe_open

    fixture_dir = shared_path("fixtures", "flashvsr")
    with safe_open(str(fixture_dir / parity.TC_WEIGHTS), "pt") as f:
        tc = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert tc == tc_decoder_file_shapes(tc_decoder.VARIANTS["tiny-tcdecoder"])
    with safe_open(str(fixture_dir / parity.VAE_WEIGHTS), "pt") as f:
        vae = {k.removeprefix("model."): tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    # The fixture's VAE had its encoder removed.
    ours = wan_vae_file_shapes(wan_vae.VARIANTS["tiny-wan2.1-vae"])
    assert vae == {k: s for k, s in ours.items() if k.startswith(("conv2.", "decoder."))}


@pytest.mark.parametrize("variant, name", [("tiny-tcdecoder", "TCDecoder.ckpt"), ("tiny-wan2.1-vae", "Wan2.1_VAE.pth")])
def test_script_writes_a_weights_only_state_dict_that_loads_back(tmp_path, capsys, variant, name):
    out = tmp_path / name
    assert _script().main(["--variant", variant, "--format", "fp32-pth", "--out", str(out), "--seed", "3"]) == 0
    assert f"{variant} fp32-pth" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    if variant == "tiny-tcdecoder":
        assert set(state) == set(tc_decoder_file_shapes(tc_decoder.VARIANTS[variant]))
        loaded = load_tc_decoder(out)
        assert loaded.note is None
        model = loaded.model
    else:
        assert set(state) == set(wan_vae_file_shapes(wan_vae.VARIANTS[variant]))
        assert any(k.startswith("encoder.") for k in state)
        model = load_wan_vae_decoder(out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.isfinite(v).all() for v in state.values())


def test_script_writes_decoders_only_in_their_published_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _script().main(["--variant", "tiny-tcdecoder", "--format", "fp16", "--out", str(tmp_path / "x.ckpt")])
    assert exit_.value.code == 2 and "fp32-pth only" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_random_files_depend_only_on_the_seed(tmp_path):
    a = write_decoder_checkpoint("tiny-tcdecoder", tmp_path / "a.ckpt", seed=1)
    b = write_decoder_checkpoint("tiny-tcdecoder", tmp_path / "b.ckpt", seed=1)
    c = write_decoder_checkpoint("tiny-tcdecoder", tmp_path / "c.ckpt", seed=2)
    sa, sb, sc = (torch.load(p, weights_only=True) for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["decoder.1.weight"], sc["decoder.1.weight"])


@pytest.fixture
def tc_state(tmp_path):
    path = write_decoder_checkpoint("tiny-tcdecoder", tmp_path / "TCDecoder.ckpt", seed=0)
    return path, torch.load(path, weights_only=True)


def test_tc_file_missing_a_layer_is_refused_in_one_line(tmp_path, tc_state):
    _, state = tc_state
    del state["decoder.12.conv.2.weight"]
    state["decoder.30.weight"] = torch.zeros(3)
    path = tmp_path / "broken.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_tc_decoder(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "1 missing keys (decoder.12.conv.2.weight)" in message and "1 unexpected keys (decoder.30.weight)" in message
    assert "download it again" in message


def test_tc_file_with_a_wrong_shape_is_refused(tmp_path, tc_state):
    _, state = tc_state
    state["decoder.15.conv.weight"] = torch.zeros(32, 8, 1, 1)
    path = tmp_path / "wide.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 keys of the wrong shape \(decoder.15.conv.weight"):
        load_tc_decoder(path)


def test_tc_file_without_the_identity_convs_loads_with_a_note(tmp_path, tc_state):
    _, state = tc_state
    for key in TC_OPTIONAL_KEYS:
        del state[key]
    path = tmp_path / "older.ckpt"
    torch.save(state, path)
    model, note = load_tc_decoder(path)
    assert note is not None and "decoder.24.weight" in note and "\n" not in note
    # Left at their start, they are the identity on what reaches them (a ReLU's output).
    x = torch.rand(1, 16, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.decoder[3](x), x)


def test_vae_file_without_a_decoder_key_is_refused_but_encoder_keys_are_optional(tmp_path):
    path = write_decoder_checkpoint("tiny-wan2.1-vae", tmp_path / "Wan2.1_VAE.pth", seed=0)
    state = torch.load(path, weights_only=True)
    decoder_only = {f"model.{k}": v for k, v in state.items() if not k.startswith(("encoder.", "conv1."))}
    torch.save(decoder_only, tmp_path / "prefixed.pth")
    assert load_wan_vae_decoder(tmp_path / "prefixed.pth").config.dim == 4
    del state["decoder.upsamples.7.time_conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys \(decoder.upsamples.7.time_conv.weight\)"):
        load_wan_vae_decoder(tmp_path / "broken.pth")


def test_not_a_decoder_file_is_named(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a FlashVSR TCDecoder file"):
        load_tc_decoder(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a Wan2.1 VAE file"):
        load_wan_vae_decoder(tmp_path / "other.ckpt")


def test_both_decoders_run_in_bfloat16_as_the_pipelines_do():
    # Only that the bf16 paths (float32 upsampling, de-normalisation in the latent dtype) run and
    # stay near float32; bf16 rounding itself has no fixture.
    vae, tc = _tiny_vae(), _tiny_tc()
    z = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(6))
    latents, cond = _tc_inputs(2)
    with torch.no_grad():
        pairs = [(vae.decode(z), vae.to(torch.bfloat16).decode(z.bfloat16())),
                 (tc.decode(latents, cond), tc.to(torch.bfloat16).decode(latents.bfloat16(), cond))]  # fmt: skip
    for full, half in pairs:
        assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
        assert (half.float() - full).abs().max() < 0.05 * full.abs().max()
