"""Parity of our video VAE against a tiny-VAE fixture directory (format of ``shared/fixtures/vae``).

The directory holds ``tiny_vae_config.json`` (the reference constructor kwargs), the weights and
``vae_cases.safetensors`` + ``vae_cases.json``. Everything (case names, shapes, tile sizes) is read
from the files, so other seeds and shapes work unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..memory.tiling import tiled_decode, tiled_encode
from ..models.vae import VideoVAE
from ..models.vae_config import vae_config_from_reference_kwargs
from . import CaseResult, compare
from .tolerances import VAE_DECODE_MAX_ABS, VAE_ENCODE_MAX_ABS

CONFIG_FILE = "tiny_vae_config.json"
CASES_FILE = "vae_cases.safetensors"
CASES_INDEX = "vae_cases.json"
WEIGHTS_FILE = "tiny_vae_weights.safetensors"

ENCODE_TOLERANCE = VAE_ENCODE_MAX_ABS
DECODE_TOLERANCE = VAE_DECODE_MAX_ABS


def detect(fixture_dir: Path) -> bool:
    return (Path(fixture_dir) / CONFIG_FILE).is_file() and (Path(fixture_dir) / CASES_FILE).is_file()


def _weights_path(fixture_dir: Path) -> Path:
    preferred = fixture_dir / WEIGHTS_FILE
    if preferred.is_file():
        return preferred
    others = sorted(p for p in fixture_dir.glob("*.safetensors") if p.name != CASES_FILE)
    if len(others) != 1:
        raise FileNotFoundError(f"{fixture_dir}: expected {WEIGHTS_FILE} (or one other weights .safetensors)")
    return others[0]


def load_fixture_vae(fixture_dir: Path) -> VideoVAE:
    """The fixture's tiny VAE in float32 on the CPU, weights loaded strictly."""
    from safetensors.torch import load_file

    fixture_dir = Path(fixture_dir)
    meta = json.loads((fixture_dir / CONFIG_FILE).read_text())
    vae = VideoVAE(vae_config_from_reference_kwargs(meta["constructor_kwargs"]))
    state = {k: v.float() for k, v in load_file(_weights_path(fixture_dir)).items()}
    vae.load_state_dict(state, strict=True)
    if "scaling_factor" in meta and float(meta["scaling_factor"]) != vae.config.scaling_factor:
        raise ValueError(f"{fixture_dir}: scaling_factor {meta['scaling_factor']} differs from ours")
    return vae.eval()


def _case_names(index: dict, tensors: dict) -> list[str]:
    if "cases" in index:
        return list(index["cases"])
    return sorted({key.split(".")[0] for key in tensors if key.endswith(".x") and not key.startswith("tiled.")})


def run(fixture_dir: Path) -> list[CaseResult]:
    from safetensors.torch import load_file

    fixture_dir = Path(fixture_dir)
    vae = load_fixture_vae(fixture_dir)
    tensors = load_file(fixture_dir / CASES_FILE)
    index_path = fixture_dir / CASES_INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    results: list[CaseResult] = []

    def check(case: str, output: str, ours: torch.Tensor, tolerance: float, label: str | None = None) -> None:
        # Fixture sets need not record every output: compare what is there.
        key = f"{case}.{output}"
        if key in tensors:
            results.append(compare(case, label or output, ours, tensors[key], tolerance))

    with torch.inference_mode():
        for case in _case_names(index, tensors):
            if f"{case}.x" in tensors:
                x = tensors[f"{case}.x"].float()
                mean, logvar = vae.encode(x)
                check(case, "enc_mean", mean, ENCODE_TOLERANCE)
                check(case, "enc_logvar", logvar, ENCODE_TOLERANCE)
                check(case, "enc_mean", vae.encode(x, sliced=False)[0], ENCODE_TOLERANCE, label="enc_mean (unsliced)")
                check(case, "pipeline_latent_cl", vae.latent_from_mean(mean), ENCODE_TOLERANCE)
            if f"{case}.z" in tensors:
                z = tensors[f"{case}.z"].float()
                check(case, "dec", vae.decode(z), DECODE_TOLERANCE)
                check(case, "dec", vae.decode(z, sliced=False), DECODE_TOLERANCE, label="dec (unsliced)")
            if f"{case}.pipeline_z_cl" in tensors:
                latent = tensors[f"{case}.pipeline_z_cl"].float()
                check(case, "pipeline_dec", vae.decode(vae.decoder_input_from_latent(latent))[0], DECODE_TOLERANCE)

        if "tiled.x" in tensors or "tiled.z" in tensors:
            tiled = index.get("tiled", {})
            if "tile_size_px" not in tiled:
                raise ValueError(f"{index_path}: 'tiled' entry lacks tile_size_px / tile_overlap_px")
            size = tuple(int(v) for v in tiled["tile_size_px"])
            overlap = tuple(int(v) for v in tiled["tile_overlap_px"])
            note = f"tile {size[0]}x{size[1]} overlap {overlap[0]}x{overlap[1]}"
            if "tiled.x" in tensors:
                x = tensors["tiled.x"].float()
                mean, logvar = tiled_encode(vae, x, size, overlap, shared_statistics=False)
                for output, ours, tol in (
                    ("enc_mean", mean, ENCODE_TOLERANCE),
                    ("enc_logvar", logvar, ENCODE_TOLERANCE),
                    ("enc_mean_untiled", vae.encode(x)[0], ENCODE_TOLERANCE),
                ):
                    if f"tiled.{output}" in tensors:
                        results.append(compare("tiled", output, ours, tensors[f"tiled.{output}"], tol, note))
            if "tiled.z" in tensors:
                z = tensors["tiled.z"].float()
                # The reference's tiling (every tile through the whole decoder on its own statistics),
                # which the fixture recorded.
                for output, ours in (("dec", tiled_decode(vae, z, size, overlap, whole_mid=False, shared_statistics=False)),
                                     ("dec_untiled", vae.decode(z))):
                    if f"tiled.{output}" in tensors:
                        reference = tensors[f"tiled.{output}"]
                        results.append(compare("tiled", output, ours, reference, DECODE_TOLERANCE, note))
    return results
