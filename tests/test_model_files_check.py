"""The parent checks the model files from their headers before any worker starts: a DiT or VAE
with a missing tensor or one of the wrong shape, and a text embedding that does not fit the DiT,
fail once, in one line naming the file and the tensors, instead of in every worker and its retry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from media_factory import make_video
from safetensors.torch import load_file, save_file

from seedvr_cli.cli import main
from seedvr_cli.config import ModelSettings
from seedvr_cli.errors import CheckpointError
from seedvr_cli.run.models import resolve_models
from seedvr_cli.weights.loader import check_checkpoint
from seedvr_cli.weights.synthesize import FORMATS, write_checkpoint, write_text_embedding


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("good")
    return {"dit": Path(write_checkpoint("tiny-3b", "fp16", folder / "dit.safetensors", seed=0)),
            "vae": Path(write_checkpoint("tiny-vae", "fp16", folder / "vae.safetensors", seed=0))}


def _rewritten(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` with ``change(tensors)`` applied, beside a fitting text embedding."""
    tensors = load_file(str(source))
    change(tensors)
    save_file(tensors, str(target))
    if (source.parent / "pos_emb.safetensors").exists():
        (target.parent / "pos_emb.safetensors").write_bytes((source.parent / "pos_emb.safetensors").read_bytes())
    return target


def _settings(dit: Path, vae: Path, text: Path | None = None) -> ModelSettings:
    return ModelSettings(model=str(dit), vae=str(vae), text_embedding=None if text is None else str(text),
                         download=False)


def test_a_missing_dit_tensor_is_named_in_the_parent(good, tmp_path):
    broken = _rewritten(good["dit"], tmp_path / "dit.safetensors",
                        lambda t: t.pop("blocks.1.attn.proj_out.vid.bias"))
    with pytest.raises(CheckpointError) as error:
        resolve_models(_settings(broken, good["vae"]))
    message = str(error.value)
    assert str(broken) in message and "1 missing tensors (blocks.1.attn.proj_out.vid.bias)" in message
    assert "\n" not in message


def test_a_dit_tensor_of_the_wrong_shape_is_named_in_the_parent(good, tmp_path):
    def narrow(tensors):
        tensors["blocks.0.mlp.vid.proj_out.weight"] = tensors["blocks.0.mlp.vid.proj_out.weight"][:, :-2].contiguous()

    broken = _rewritten(good["dit"], tmp_path / "dit.safetensors", narrow)
    with pytest.raises(CheckpointError, match=r"1 tensors of the wrong shape \(blocks.0.mlp.vid.proj_out.weight"):
        resolve_models(_settings(broken, good["vae"]))


def test_a_missing_vae_tensor_is_named_in_the_parent(good, tmp_path):
    broken = _rewritten(good["vae"], tmp_path / "vae.safetensors", lambda t: t.pop("decoder.conv_out.bias"))
    with pytest.raises(CheckpointError, match=r"vae.safetensors: does not fit the SeedVR2 VAE tiny-vae: "
                                              r"1 missing tensors \(decoder.conv_out.bias\)"):
        resolve_models(_settings(good["dit"], broken))


def test_a_text_embedding_of_the_wrong_width_fails_in_the_parent(good, tmp_path):
    text = write_text_embedding(tmp_path / "emb.safetensors", dim=32)
    with pytest.raises(CheckpointError, match=r"emb.safetensors: text embedding has shape \(58, 32\), expected "
                                              r"\[tokens, 64\]"):
        resolve_models(_settings(good["dit"], good["vae"], text))


def test_a_foreign_text_embedding_lists_a_few_of_its_tensors_only(good, tmp_path):
    with pytest.raises(CheckpointError) as error:
        resolve_models(_settings(good["dit"], good["vae"], good["vae"]))
    message = str(error.value)
    assert "no tensor named 'emb'" in message and ", ...)" in message and len(message) < 300


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "fp16"])
def test_every_published_format_passes_the_check(tmp_path, fmt):
    suffix = ".pth" if fmt.endswith("pth") else ".gguf" if fmt.startswith("gguf") else ".safetensors"
    for variant in ("tiny-3b", "tiny-7b"):
        info = check_checkpoint(write_checkpoint(variant, fmt, tmp_path / f"{variant}{suffix}", seed=0), "dit")
        assert info.variant == variant


def test_dit_without_rope_buffers_passes_the_check(good, tmp_path):
    """Some conversions drop the rope frequency buffers; the model recomputes them, so the loader
    accepts such files, and the check must too."""
    stripped = _rewritten(good["dit"], tmp_path / "dit.safetensors",
                          lambda t: [t.pop(name) for name in [n for n in t if n.endswith("rope.rope.freqs")]])
    assert check_checkpoint(stripped, "dit").variant == "tiny-3b"


def test_cli_stops_before_the_workers_with_one_line(good, tmp_path, capsys):
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    broken = _rewritten(good["dit"], tmp_path / "dit.safetensors",
                        lambda t: t.update({"txt_in.weight": torch.zeros(128, 32, dtype=torch.float16)}))
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(broken), "--vae",
              str(good["vae"]), "--device", "cpu", "--resolution", "64", "--batch-size", "5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "txt_in.weight (128, 32) (expected (128, 64))" in err
    assert "chunk" not in err and "Traceback" not in err  # no worker ever tried
    assert not (tmp_path / "out.mp4").exists()
