"""Parity of FlashVSR's decoders against the fixtures in ``shared/fixtures/flashvsr``.

TCDecoder (``tc_tiny_{weights,io}.safetensors``): the network input (condition pixel-shuffle and
concatenation), the one-shot decode (mode tiny), two streaming calls through one state (mode
tiny-long), the memory of MemBlock 19 after the first call, and the two calls joined against the
one-shot output. Wan2.1 VAE decoder (``vae_tiny_{weights,io}.safetensors``): the raw decode and the
tiled decode. Widths, layouts and tile sizes are read from the files' metadata and shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..memory.wan_vae_tiling import tiled_decode
from ..models.flashvsr.tc_decoder import COND_CHANNELS, FRAMES_PER_LATENT, TCDecoder, TCDecoderConfig, TCDecoderState
from ..models.flashvsr.wan_vae import WanVAEConfig, WanVAEDecoder
from . import CaseResult, compare

TC_WEIGHTS = "tc_tiny_weights.safetensors"
TC_IO = "tc_tiny_io.safetensors"
VAE_WEIGHTS = "vae_tiny_weights.safetensors"
VAE_IO = "vae_tiny_io.safetensors"

# The fixture README's bound for a faithful float32 implementation of either decoder.
TOLERANCE = 1e-5
# The MemBlock whose state the fixture stores (the reference's trim check looks at the same one).
STORED_MEMORY_LAYER = 19


def detect(fixture_dir: Path) -> bool:
    return (Path(fixture_dir) / TC_IO).is_file() or (Path(fixture_dir) / VAE_IO).is_file()


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def load_fixture_tc_decoder(fixture_dir: Path) -> TCDecoder:
    from safetensors.torch import load_file

    meta = _metadata(fixture_dir / TC_IO)
    if "channels" not in meta or "latent_channels" not in meta:
        raise ValueError(f"{fixture_dir / TC_IO}: metadata lacks 'channels' / 'latent_channels'")
    # The fixture's "latent_channels" is the reference's: the network input, condition included.
    config = TCDecoderConfig(channels=tuple(json.loads(meta["channels"])),
                             latent_channels=int(meta["latent_channels"]) - COND_CHANNELS)  # fmt: skip
    model = TCDecoder(config)
    model.load_state_dict({k: v.float() for k, v in load_file(fixture_dir / TC_WEIGHTS).items()}, strict=True)
    return model.eval()


def load_fixture_wan_vae(fixture_dir: Path) -> WanVAEDecoder:
    from safetensors.torch import load_file

    meta = _metadata(fixture_dir / VAE_IO)
    found = re.search(r"z_dim=(\d+),\s*dim=(\d+)", meta.get("config", ""))
    if found is None:
        raise ValueError(f"{fixture_dir / VAE_IO}: metadata 'config' does not name z_dim and dim: "
                         f"{meta.get('config')!r}")
    model = WanVAEDecoder(WanVAEConfig(z_dim=int(found.group(1)), dim=int(found.group(2))))
    state = {k.removeprefix("model."): v.float() for k, v in load_file(fixture_dir / VAE_WEIGHTS).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def fixture_tiles(fixture_dir: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(tile size, tile stride) in latents, from the metadata text ``tile_size=(a,b) tile_stride=(c,d)``."""
    text = _metadata(fixture_dir / VAE_IO).get("tiled", "")
    pairs = {name: (int(a), int(b)) for name, a, b in re.findall(r"(tile_size|tile_stride)=\((\d+),\s*(\d+)\)", text)}
    if set(pairs) != {"tile_size", "tile_stride"}:
        raise ValueError(f"{fixture_dir / VAE_IO}: metadata 'tiled' does not give tile_size and tile_stride: {text!r}")
    return pairs["tile_size"], pairs["tile_stride"]


def _run_tc(fixture_dir: Path) -> list[CaseResult]:
    from safetensors.torch import load_file

    model = load_fixture_tc_decoder(fixture_dir)
    io = load_file(fixture_dir / TC_IO)
    latents, cond = io["latents"].float(), io["cond"].float()
    net_in = torch.stack([model.network_input(latents, cond, t) for t in range(latents.shape[1])], dim=1)
    results = [compare("tcdecoder", "net_in", net_in, io["net_in"], TOLERANCE)]
    one_shot = model.decode(latents, cond)
    results.append(compare("tcdecoder", "one-shot (tiny)", one_shot, io["out_seq"], TOLERANCE))
    if "out_chunk0" in io:
        # The first call's condition frames are its output frames; its latents cover them in 4s.
        first_frames = io["out_chunk0"].shape[1]
        first_latents = -(-first_frames // FRAMES_PER_LATENT)
        state = TCDecoderState()
        chunk0 = model.decode(latents[:, :first_latents], cond[:, :, :first_frames], state)
        results.append(compare("tcdecoder", "stream chunk 0", chunk0, io["out_chunk0"], TOLERANCE))
        if "mem19_after_chunk0" in io:
            memory = state.memory[STORED_MEMORY_LAYER]
            results.append(compare("tcdecoder", "memory 19 after chunk 0", memory, io["mem19_after_chunk0"], TOLERANCE))
        chunk1 = model.decode(latents[:, first_latents:], cond[:, :, first_frames:], state)
        results.append(compare("tcdecoder", "stream chunk 1", chunk1, io["out_chunk1"], TOLERANCE))
        joined = torch.cat([chunk0, chunk1], dim=1)
        results.append(compare("tcdecoder", "stream joined vs one-shot", joined, io["out_seq"], TOLERANCE))
    return results


def _run_vae(fixture_dir: Path) -> list[CaseResult]:
    from safetensors.torch import load_file

    model = load_fixture_wan_vae(fixture_dir)
    io = load_file(fixture_dir / VAE_IO)
    z = io["z"].float()
    results = [compare("wan-vae", "raw decode", model.decode(z), io["raw"], TOLERANCE)]
    if "tiled" in io:
        size, stride = fixture_tiles(fixture_dir)
        note = f"tile {size} stride {stride} latents"
        tiled = tiled_decode(model, z, size, stride)
        results.append(compare("wan-vae", "tiled decode", tiled, io["tiled"], TOLERANCE, note))
    return results


def run(fixture_dir: Path) -> list[CaseResult]:
    fixture_dir = Path(fixture_dir)
    results: list[CaseResult] = []
    with torch.inference_mode():
        if (fixture_dir / TC_IO).is_file():
            results += _run_tc(fixture_dir)
        if (fixture_dir / VAE_IO).is_file():
            results += _run_vae(fixture_dir)
    return results
