"""The real FlashVSR models behind the segment seam, on the CPU with tiny random weights: the
streamer's latents equal the shared fixture's, the decoders of the three modes, and whole
``seedvr upscale --model flashvsr-...`` runs with the tiny files in ``--model-dir``."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from conftest import run_cli, shared_path
from media_factory import make_video
from safetensors.torch import load_file

from seedvr_cli.errors import CheckpointError
from seedvr_cli.models.flashvsr.dit import FlashDiT
from seedvr_cli.models.flashvsr.dit_config import SparseAttentionSettings, flash_dit_config
from seedvr_cli.models.flashvsr.lq_proj import LQProjector, LQProjState, lq_proj_config
from seedvr_cli.models.flashvsr.tc_decoder import VARIANTS as TC_VARIANTS
from seedvr_cli.models.flashvsr.tc_decoder import TCDecoder
from seedvr_cli.models.flashvsr.wan_vae import VARIANTS as VAE_VARIANTS
from seedvr_cli.models.flashvsr.wan_vae import WanVAEDecoder
from seedvr_cli.pipeline.flashvsr.models_streamer import ModelsStreamer, chunk_clips, chunk_latents
from seedvr_cli.pipeline.flashvsr.stream import StreamOptions
from seedvr_cli.weights.flashvsr import load_prompt_embedding

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]


def _random(module: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module.eval()


def _streamer(mode: str, seed: int = 0, **kwargs) -> ModelsStreamer:
    dit = _random(FlashDiT(flash_dit_config("tiny")), seed)
    projector = _random(LQProjector(lq_proj_config("tiny"), "v1.1"), seed + 1)
    decoder = WanVAEDecoder(VAE_VARIANTS["tiny-wan2.1-vae"]) if mode == "full" else TCDecoder(
        TC_VARIANTS["tiny-tcdecoder"])
    prompt = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(seed + 2))
    return ModelsStreamer(dit, projector, _random(decoder, seed + 3, 0.1), mode, prompt, **kwargs)


def _segment(frames: int, seed: int = 0, size: tuple[int, int] = (128, 128)):
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(1, 3, frames, *size, generator=generator) * 2 - 1
    noise = torch.randn(1, 16, (frames - 1) // 4, size[0] // 8, size[1] // 8, generator=generator)
    return lq, noise, StreamOptions(topk_ratio=2.0, kv_ratio=3.0, local_range=3)


# ------------------------------------------------------------------------------- schedule


def test_schedule_covers_every_frame_once_in_order():
    frames = 8 * 6 + 1  # n = 6: 4 chunks, 12 latent frames
    clips = [clip for chunk in range(4) for clip in chunk_clips(chunk)]
    assert clips[0] == (0, 1) and all(a == b for (_, b), (a, _) in zip(clips, clips[1:])) and clips[-1][1] == frames
    latents = [chunk_latents(chunk) for chunk in range(4)]
    assert latents == [(0, 6), (6, 8), (8, 10), (10, 12)]
    # One token frame per 4-frame clip: every chunk has as many clips with tokens as latent frames.
    assert [len(chunk_clips(c)) - (c == 0) for c in range(4)] == [b - a for a, b in latents]


# ------------------------------------------------------------------------------- the loop


def test_latents_are_forward_chunk_called_by_hand():
    streamer = _streamer("tiny")
    lq, noise, options = _segment(33)  # 2 chunks: the second attends to the first's KV cache
    with torch.inference_mode():
        ours = torch.cat(list(streamer.latent_chunks(lq, noise, options)), dim=2)
        settings = SparseAttentionSettings(topk_ratio=2.0, kv_ratio=3.0, local_range=3)
        state, projector_state = streamer.dit.start_stream(streamer.prompt), LQProjState()
        by_hand = []
        for a, b, clips in ((0, 6, [(0, 1)] + [(i, i + 4) for i in range(1, 25, 4)]), (6, 8, [(25, 29), (29, 33)])):
            tokens = [streamer.projector.stream(lq[:, :, c:d], projector_state) for c, d in clips]
            tokens = torch.cat([t for t in tokens if t is not None], dim=1)
            by_hand.append(noise[:, :, a:b] - streamer.dit.forward_chunk(noise[:, :, a:b], tokens, state, settings))
    assert ours.shape == noise.shape
    torch.testing.assert_close(ours, torch.cat(by_hand, dim=2), rtol=0, atol=0)


def test_latents_match_the_shared_fixture():
    from seedvr_cli.parity.flashvsr_dit import (
        DIT_FILE,
        IO_FILE,
        dit_config_from_metadata,
        fixture_metadata,
        load_projector,
        lq_video,
        native_cpu_kernels,
    )

    fixture_dir = shared_path("fixtures", "flashvsr")
    meta = fixture_metadata(fixture_dir)
    io = load_file(fixture_dir / IO_FILE)
    dit = FlashDiT(dit_config_from_metadata(meta["dit"]))
    dit.load_state_dict({k: t.float() for k, t in load_file(fixture_dir / DIT_FILE).items()}, strict=True)
    lq, _ = lq_video(int(meta["F"]), int(meta["H"]), int(meta["W"]))
    options = StreamOptions(topk_ratio=float(meta["topk_ratio"]), kv_ratio=float(meta["kv_ratio"]),
                            local_range=int(meta["local_range"]))
    for prefix in ("v10", "v11"):
        decoder = TCDecoder(TC_VARIANTS["tiny-tcdecoder"])
        streamer = ModelsStreamer(dit.eval(), load_projector(fixture_dir, prefix), decoder, "tiny", io["context"])
        with torch.inference_mode(), native_cpu_kernels():
            latents = torch.cat(list(streamer.latent_chunks(lq, io["noise"], options)), dim=2)
        assert (latents - io[f"{prefix}_latents"]).abs().max() <= 1e-5, prefix


def test_every_stream_starts_fresh():
    streamer = _streamer("tiny-long")
    first, second = _segment(25, seed=1), _segment(25, seed=2)
    with torch.inference_mode():
        alone = torch.cat(list(streamer.stream(*second)), dim=2)
        torch.cat(list(streamer.stream(*first)), dim=2)
        after = torch.cat(list(streamer.stream(*second)), dim=2)
    torch.testing.assert_close(alone, after, rtol=0, atol=0)


# ------------------------------------------------------------------------------- decoders


def test_tiny_long_gives_the_tiny_frames_chunk_by_chunk():
    lq, noise, options = _segment(41)  # 3 chunks
    with torch.inference_mode():
        one_pass = list(_streamer("tiny").stream(lq, noise, options))
        streamed = list(_streamer("tiny-long").stream(lq, noise, options))
    # tiny-long hands on each DiT chunk's frames as soon as they are decoded: 21, then 8 per chunk.
    assert [c.shape[2] for c in streamed] == [21, 8, 8]
    assert sum(c.shape[2] for c in one_pass) == 37
    torch.testing.assert_close(torch.cat(streamed, dim=2), torch.cat(one_pass, dim=2), rtol=0, atol=1e-6)


def test_tc_frames_are_the_decoder_output_mapped_to_minus_one_one():
    streamer = _streamer("tiny")
    lq, noise, options = _segment(25)
    with torch.inference_mode():
        frames = torch.cat(list(streamer.stream(lq, noise, options)), dim=2)
        latents = torch.cat(list(streamer.latent_chunks(lq, noise, options)), dim=2)
        decoded = streamer.decoder.decode(latents.transpose(1, 2), lq[:, :, :21]).transpose(1, 2)
    torch.testing.assert_close(frames, decoded * 2 - 1, rtol=0, atol=1e-6)


def test_full_mode_decodes_whole_or_through_the_tiled_decode():
    lq, noise, options = _segment(25)
    seen = []

    def tiled(latents):
        seen.append(tuple(latents.shape))
        return torch.zeros(1, 3, 21, 128, 128)

    with torch.inference_mode():
        whole = list(_streamer("full").stream(lq, noise, options))
        through_tiles = list(_streamer("full", tiled_vae_decode=tiled).stream(lq, noise, options))
        streamer = _streamer("full")
        latents = torch.cat(list(streamer.latent_chunks(lq, noise, options)), dim=2)
        expected = streamer.decoder.decode(latents).clamp(-1, 1)
    assert [c.shape[2] for c in whole] == [1] + [4] * 5  # one frame for the first latent, then 4 each
    torch.testing.assert_close(torch.cat(whole, dim=2), expected, rtol=0, atol=1e-6)
    assert seen == [(1, 16, 6, 16, 16)] and len(through_tiles) == 1


def test_a_decoder_of_the_wrong_mode_is_refused():
    full = _streamer("full")
    with pytest.raises(ValueError, match="mode tiny needs the TCDecoder"):
        ModelsStreamer(full.dit, full.projector, full.decoder, "tiny", full.prompt)


# ------------------------------------------------------------------------------- files


def test_prompt_embedding_of_another_width_is_named(tmp_path):
    path = tmp_path / "posi_prompt.pth"
    torch.save(torch.zeros(1, 4, 16), path)
    with pytest.raises(CheckpointError, match=r"posi_prompt.pth: holds \(1, 4, 16\), not a prompt embedding \[1, S"):
        load_prompt_embedding(path, 32)
    torch.save(torch.ones(4, 32), path)
    assert load_prompt_embedding(path, 32, dtype=torch.float32).shape == (1, 4, 32)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The tiny random files of every FlashVSR role in one folder, as ``--model-dir`` expects them,
    written by scripts/make_checkpoint.py; a random prompt embedding of the tiny DiT's width."""
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO_ROOT / "scripts/make_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path_factory.mktemp("fv_models")
    for variant, out in (("tiny-flashvsr-v1.1", folder), ("tiny-tcdecoder", folder / "TCDecoder.ckpt"),
                         ("tiny-wan2.1-vae", folder / "Wan2.1_VAE.pth")):
        fmt = ["--format", "fp32"] if out == folder else []
        assert script.main(["--variant", variant, "--out", str(out), *fmt]) == 0
    torch.save(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(0)), folder / "posi_prompt.pth")
    return folder


def _decode(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _upscale(capsys, clip, output, models, mode, *extra):
    return run_cli(capsys, "upscale", str(clip), "-o", str(output), "--model", f"flashvsr-v1.1-{mode}",
                   "--model-dir", str(models), "--no-download", "--dtype", "fp32", "--codec", "ffv1", *extra)


@pytest.mark.slow
def test_whole_runs_of_every_mode(tiny_files, tmp_path, capsys):
    clip = make_video(tmp_path / "clip.mkv", frames=29, width=32, height=32, codec="ffv1")
    outputs = {}
    for mode in ("tiny", "tiny-long", "full"):
        output = tmp_path / f"{mode}.mkv"
        code, _, err = _upscale(capsys, clip, output, tiny_files, mode, "--devices", "cpu")
        assert code == 0, err
        assert f"decoder {tiny_files / ('Wan2.1_VAE.pth' if mode == 'full' else 'TCDecoder.ckpt')}" in err
        outputs[mode] = _decode(output)
        assert outputs[mode].shape == (29, 128, 128, 3)  # x4, every frame
        assert outputs[mode].std() > 1  # not a flat picture
    np.testing.assert_array_equal(outputs["tiny"], outputs["tiny-long"])
    assert np.abs(outputs["tiny"].astype(int) - outputs["full"]).mean() > 1  # another decoder


@pytest.mark.slow
def test_one_and_two_workers_give_the_same_pixels(tiny_files, tmp_path, capsys, monkeypatch):
    # One thread per worker in both runs: the CPU kernels sum in another order with another thread
    # count (a level of 1 in 0.01% of the values), which says nothing about the plan; what must not
    # depend on the workers is which segments, noise and blend each frame gets.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    clip = make_video(tmp_path / "clip.mkv", frames=38, width=32, height=32, codec="ffv1")
    frames = {}
    for devices in ("cpu", "cpu,cpu"):
        output = tmp_path / f"out_{devices.replace(',', '_')}.mkv"
        code, _, err = _upscale(capsys, clip, output, tiny_files, "tiny-long", "--devices", devices,
                                "--segment-frames", "21", "--segment-overlap", "4")
        assert code == 0, err
        assert "2 segments" in err or devices == "cpu,cpu"
        frames[devices] = _decode(output)
    assert frames["cpu"].shape == (38, 128, 128, 3)
    np.testing.assert_array_equal(frames["cpu"], frames["cpu,cpu"])


def test_tc_decoder_note_reaches_the_processor(tiny_files, tmp_path):
    from seedvr_cli.parallel.devices import parse_devices
    from seedvr_cli.pipeline.flashvsr.choices import find_flashvsr_model
    from seedvr_cli.run.flashvsr_models import FlashVSRFiles
    from seedvr_cli.run.flashvsr_processor import FlashVSRProcessorFactory

    state = torch.load(tiny_files / "TCDecoder.ckpt", weights_only=True)
    del state["decoder.3.weight"]
    torch.save(state, tmp_path / "TCDecoder.ckpt")
    files = FlashVSRFiles(tiny_files / "diffusion_pytorch_model_streaming_dmd.safetensors",
                          tiny_files / "LQ_proj_in.ckpt", tmp_path / "TCDecoder.ckpt", tiny_files / "posi_prompt.pth")
    processor = FlashVSRProcessorFactory(find_flashvsr_model("flashvsr-v1.1-tiny"), files, dtype="fp32")(
        parse_devices("cpu")[0])
    assert isinstance(processor.streamer, ModelsStreamer) and processor.streamer.backend == "reference"
    assert len(processor.notes) == 1 and "has no decoder.3.weight" in processor.notes[0]
