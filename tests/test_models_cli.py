"""``seedvr models list|download|verify|inspect`` driven through the real entry point, against the
fake hub of test_download.py serving the real published ``pos_emb.pt`` (so its real sha256 applies)."""

from __future__ import annotations

import json

import pytest

from conftest import shared_path
from seedvr_cli.cli import main
from test_download import FakeHub


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SEEDVR_MODEL_DIR", raising=False)
    monkeypatch.setenv("SEEDVR_CACHE_DIR", str(tmp_path / "seedvr_cache"))
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


@pytest.fixture
def hub(env, monkeypatch):
    with FakeHub() as fake:
        fake.files["ByteDance-Seed/SeedVR2-3B/pos_emb.pt"] = shared_path(
            "reference", "text_embeddings", "pos_emb.pt").read_bytes()  # fmt: skip
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_list_covers_every_published_checkpoint(env, capsys):
    code, out, _ = run(["models", "list", "--json"], capsys)
    assert code == 0
    names = {row["name"] for row in json.loads(out)}
    for manifest in ("seedvr2_3b_dit.json", "seedvr2_7b_dit.json"):
        published = json.loads(shared_path("reference", "manifests", manifest).read_text())["header"]
        for item in published["published_checkpoints"]:
            for part in item["file"].replace(" / ", ", ").split(", "):
                if "*" not in part:  # "seedvr2_7b_*.safetensors" names a family, not a file
                    assert part in names, part
    vae = json.loads(shared_path("reference", "manifests", "ema_vae.json").read_text())
    assert set(vae["published_files"]) <= names
    assert "pos_emb.pt" in names


def test_list_shows_local_copies_in_a_comfyui_folder(env, capsys, tmp_path):
    folder = tmp_path / "ComfyUI" / "models" / "SEEDVR2"
    folder.mkdir(parents=True)
    (folder / "ema_vae_fp16.safetensors").write_bytes(b"stand-in")
    code, out, _ = run(["models", "list", "--json", "--model-dir", str(folder)], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["ema_vae_fp16.safetensors"]["local"] == str(folder / "ema_vae_fp16.safetensors")
    assert rows["seedvr2_ema_3b_fp16.safetensors"]["local"] is None
    code, out, _ = run(["models", "list", "--model-dir", str(folder)], capsys)
    assert code == 0 and "SeedVR2 checkpoints" in out and "ema_vae_fp16.safetensors" in out


def test_download_then_verify_the_text_embedding(hub, capsys, env):
    code, out, err = run(["models", "download", "pos-emb"], capsys)
    assert code == 0, err
    path = out.strip().splitlines()[-1]
    assert path.startswith(str(env / "hf_home" / "hub"))
    # A second download finds it and does not touch the network.
    requests_before = len(hub.ranges)
    code, out, err = run(["models", "download", "pos_emb.pt"], capsys)
    assert code == 0 and "already present" in err and len(hub.ranges) == requests_before
    code, out, err = run(["models", "verify"], capsys)
    assert code == 0, err
    assert "OK pos_emb.pt (sha256 ok)" in out


def test_verify_reports_a_damaged_file(env, capsys, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "pos_emb.pt").write_bytes(b"not the published embedding")
    code, out, err = run(["models", "verify", "--model-dir", str(folder)], capsys)
    assert code == 1
    assert "FAILED" in err and "does not match the published pos_emb.pt" in err


def test_download_unknown_name_and_offline_are_one_line_errors(env, capsys, monkeypatch):
    code, _, err = run(["models", "download", "seedvr9_100b"], capsys)
    assert code == 2 and "unknown model 'seedvr9_100b'" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["models", "download", "3b-fp8", "--no-text-embedding"], capsys)
    assert code == 1
    assert "seedvr2_ema_3b_fp8_e4m3fn.safetensors not found (HF_HUB_OFFLINE is set)" in err.replace("\n", " ")
    assert "Traceback" not in err


def test_inspect_describes_a_synthetic_checkpoint(env, capsys, tmp_path):
    import torch

    from seedvr_cli.weights.synthesize import write_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = write_checkpoint("tiny-7b", "gguf-q8_0", tmp_path / "dit.gguf", text_embedding=False)
    finally:
        torch.set_num_threads(threads)
    code, out, _ = run(["models", "inspect", str(path)], capsys)
    assert code == 0 and "SeedVR2 DiT tiny-7b gguf-Q8_0 (GGUF" in out.replace("\n", " ")


def test_download_into_a_folder_then_use_it_as_model_dir(hub, capsys, tmp_path):
    folder = tmp_path / "ComfyUI" / "models" / "SEEDVR2"
    code, out, err = run(["models", "download", "pos_emb.pt", "--to", str(folder)], capsys)
    assert code == 0, err
    assert (folder / "pos_emb.pt").read_bytes() == hub.files["ByteDance-Seed/SeedVR2-3B/pos_emb.pt"]
    code, out, _ = run(["models", "list", "--json", "--model-dir", str(folder)], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["pos_emb.pt"]["local"] == str(folder / "pos_emb.pt")


def test_download_of_a_dit_brings_the_vae_and_text_embedding_it_runs_with(env, capsys, monkeypatch, tmp_path):
    fetched = []

    def fake_download(entry, **kwargs):
        fetched.append(entry.name)
        path = tmp_path / entry.name
        path.write_bytes(b"stand-in")
        return path

    monkeypatch.setattr("seedvr_cli.weights.download.download", fake_download)
    code, _, err = run(["models", "download", "3b"], capsys)
    assert code == 0, err
    assert fetched == ["seedvr2_ema_3b_fp16.safetensors", "ema_vae_fp16.safetensors", "pos_emb.pt"]
    fetched.clear()
    code, _, err = run(["models", "download", "7b-fp8-mixed", "--no-vae", "--no-text-embedding"], capsys)
    assert code == 0 and fetched == ["seedvr2_ema_7b_fp8_e4m3fn_mixed_block35_fp16.safetensors"]
    fetched.clear()
    code, _, err = run(["models", "download", "3b-fp8", "vae-fp32"], capsys)  # a VAE of one's own choice is kept
    assert code == 0 and fetched == ["seedvr2_ema_3b_fp8_e4m3fn.safetensors", "ema_vae.pth", "pos_emb.pt"]


def test_failed_download_does_not_suggest_the_command_that_failed(env, capsys, monkeypatch):
    from huggingface_hub.utils import _http

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["models", "download", "pos-emb"], capsys)
    text = " ".join(err.split())
    assert code == 1 and "pos_emb.pt not found (HF_HUB_OFFLINE is set)" in text
    assert "seedvr models download" not in text and "unset HF_HUB_OFFLINE" in text and "Traceback" not in err

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # skip the hub client's retry back-off
    code, _, err = run(["models", "download", "pos-emb"], capsys)
    text = " ".join(err.split())
    assert code == 1 and "download from http://127.0.0.1:9 failed" in text
    assert "seedvr models download" not in text and "check the network" in text
    assert "hf download ByteDance-Seed/SeedVR2-3B pos_emb.pt" in text


def test_a_run_names_every_missing_model_file_at_once(env, capsys, tmp_path):
    from media_factory import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    folder = tmp_path / "SEEDVR2"
    folder.mkdir()
    code, _, err = run(["upscale", str(clip), "--model", "3b", "--model-dir", str(folder), "--no-download",
                        "--devices", "cpu"], capsys)
    text = " ".join(err.split())
    assert code == 1 and err.count("error:") == 1, err
    assert ("3 model files not found: seedvr2_ema_3b_fp16.safetensors, ema_vae_fp16.safetensors, pos_emb.pt "
            "(automatic download is off)") in text
    assert ("`seedvr models download seedvr2_ema_3b_fp16.safetensors ema_vae_fp16.safetensors pos_emb.pt`"
            in text)
    assert str(folder / "ema_vae_fp16.safetensors") in text

    vae = tmp_path / "my_vae.safetensors"
    vae.write_bytes(b"stand-in")  # present: no longer named
    code, _, err = run(["upscale", str(clip), "--model", "3b", "--vae", str(vae), "--model-dir", str(folder),
                        "--no-download", "--devices", "cpu"], capsys)
    text = " ".join(err.split())
    assert code == 1 and "2 model files not found: seedvr2_ema_3b_fp16.safetensors, pos_emb.pt" in text


def test_list_fits_an_80_column_terminal(env, capsys, monkeypatch):
    from rich.console import Console

    from seedvr_cli.weights.registry import MODEL_FILES

    monkeypatch.setattr("seedvr_cli.cli.models.console", Console(width=80, force_terminal=False))
    code, out, _ = run(["models", "list"], capsys)
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80
    for entry in MODEL_FILES:  # whole names, one per line, ready to copy into --model
        assert entry.name in lines, entry.name
    assert "  3b, fp16, ~6.78 GB; aliases: 3b-fp16, 3b" in lines
