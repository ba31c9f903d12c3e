"""Downloads against a fake Hugging Face hub on 127.0.0.1 (HF_ENDPOINT), plus local lookup rules."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading

import pytest

from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights import download as dl
from seedvr_cli.weights.registry import ModelFile

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves ``/{repo}/resolve/{revision}/{path}`` with the headers huggingface_hub reads."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_first_get: set[str] = set()  # paths whose first GET stops half way
        self.ranges: list[str | None] = []
        self.authorizations: list[str | None] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _lookup(self):
                hub.authorizations.append(self.headers.get("Authorization"))
                match = re.match(r"^/(.+?/.+?)/resolve/([^/]+)/(.+)$", self.path)
                key = f"{match.group(1)}/{match.group(3)}" if match else None
                return key, hub.files.get(key) if key else None

            def _headers(self, data: bytes, status: int, length: int, extra: dict | None = None):
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _not_found(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                key, data = self._lookup()
                if data is None:
                    return self._not_found()
                self._headers(data, 200, len(data))

            def do_GET(self):
                key, data = self._lookup()
                if data is None:
                    return self._not_found()
                wanted = self.headers.get("Range")
                hub.ranges.append(wanted)
                start = int(re.match(r"bytes=(\d+)-", wanted).group(1)) if wanted else 0
                body = data[start:]
                if wanted:
                    extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                    self._headers(data, 206, len(body), extra)
                else:
                    self._headers(data, 200, len(body))
                if key in hub.cut_first_get:
                    hub.cut_first_get.discard(key)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("SEEDVR_MODEL_DIR", raising=False)
        monkeypatch.setenv("SEEDVR_CACHE_DIR", str(tmp_path / "seedvr_cache"))
        yield fake


def _entry(data: bytes, name: str = "tiny_dit.safetensors", sha: str | None = None) -> ModelFile:
    return ModelFile(name, "test-org/test-repo", name, "dit", "3b", "fp16",
                     sha256=sha or hashlib.sha256(data).hexdigest(), size=len(data))  # fmt: skip


def test_download_lands_in_hf_home_and_is_found_again(hub, tmp_path):
    data = os.urandom(300_000)
    hub.files["test-org/test-repo/tiny_dit.safetensors"] = data
    entry = _entry(data)
    path = dl.download(entry, progress=False)
    assert path.read_bytes() == data
    assert str(path).startswith(str(tmp_path / "hf_home" / "hub"))
    # Found again in the cache without touching the network, and its hash is remembered.
    assert dl.find_local(entry) == path
    assert dl.remembered_sha256(path) == entry.sha256


def test_hf_token_is_sent(hub, monkeypatch):
    data = b"t" * 100
    hub.files["test-org/test-repo/tiny_dit.safetensors"] = data
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_123")
    dl.download(_entry(data), progress=False)
    assert hub.authorizations and all(a == "Bearer hf_test_token_123" for a in hub.authorizations)


def test_hf_hub_cache_takes_precedence_over_hf_home(hub, tmp_path, monkeypatch):
    data = b"x" * 1000
    hub.files["test-org/test-repo/tiny_dit.safetensors"] = data
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    path = dl.download(_entry(data), progress=False)
    assert str(path).startswith(str(tmp_path / "elsewhere"))


def test_interrupted_download_resumes_with_a_range_request(hub, monkeypatch):
    from huggingface_hub import constants

    # Small read chunks, so the bytes received before the cut reach the .incomplete file.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    data = os.urandom(2_000_000)
    hub.files["test-org/test-repo/tiny_dit.safetensors"] = data
    hub.cut_first_get.add("test-org/test-repo/tiny_dit.safetensors")
    entry = _entry(data)
    try:
        path = dl.download(entry, progress=False)
    except CheckpointError:
        # Whether huggingface_hub retries inside the call or leaves an .incomplete file for the
        # next one depends on its version; either way the second attempt must resume.
        path = dl.download(entry, progress=False)
    assert path.read_bytes() == data
    assert hub.ranges[0] is None
    resumed = [r for r in hub.ranges[1:] if r]
    assert resumed, hub.ranges
    assert int(re.match(r"bytes=(\d+)-", resumed[0]).group(1)) > 0


def test_sha256_mismatch_is_a_clear_error(hub):
    data = os.urandom(10_000)
    hub.files["test-org/test-repo/tiny_dit.safetensors"] = data
    entry = _entry(data, sha="f" * 64)
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match the published tiny_dit.safetensors"):
        dl.download(entry, progress=False)


def test_offline_error_names_file_places_and_command(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tmp_path / "SEEDVR2"
    model_dir.mkdir()
    with pytest.raises(CheckpointError) as err:
        dl.resolve_model_file("seedvr2_ema_3b_fp8_e4m3fn.safetensors", model_dir=model_dir)
    message = str(err.value)
    assert "seedvr2_ema_3b_fp8_e4m3fn.safetensors not found" in message
    assert str(model_dir / "seedvr2_ema_3b_fp8_e4m3fn.safetensors") in message
    assert "seedvr models download seedvr2_ema_3b_fp8_e4m3fn.safetensors" in message
    assert "HF_HUB_OFFLINE" in message


def test_unreachable_hub_is_a_clear_error(hub, monkeypatch):
    from huggingface_hub.utils import _http

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # skip the hub client's retry back-off
    with pytest.raises(CheckpointError, match="not found .*download from http://127.0.0.1:9 failed"):
        dl.resolve_model_file("ema_vae_fp16.safetensors")


def test_read_only_model_dir_is_used_as_is(hub, tmp_path, monkeypatch):
    data = os.urandom(5000)
    folder = tmp_path / "models" / "SEEDVR2"
    folder.mkdir(parents=True)
    (folder / "tiny_dit.safetensors").write_bytes(data)
    folder.chmod(0o555)
    try:
        entry = _entry(data)
        monkeypatch.setenv("SEEDVR_MODEL_DIR", str(folder))
        assert dl.find_local(entry) == folder / "tiny_dit.safetensors"
        assert dl.verify_file(folder / "tiny_dit.safetensors", entry) is True
        # The registry resolves names through the same folder; no download is attempted.
        monkeypatch.setattr(dl, "find_model", lambda name: entry if name == entry.name else None)
        assert dl.resolve_model_file(entry.name, download=False) == folder / "tiny_dit.safetensors"
        assert hub.ranges == []
    finally:
        folder.chmod(0o755)


def test_sha256_is_computed_once_and_remembered(hub, tmp_path, monkeypatch):
    data = os.urandom(5000)
    path = tmp_path / "f.safetensors"
    path.write_bytes(data)
    entry = _entry(data, name="f.safetensors")
    calls = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p, progress=None: calls.append(p) or real(p))
    dl.verify_file(path, entry)
    dl.verify_file(path, entry)
    assert len(calls) == 1
    # A changed file is hashed again (size/mtime key) and caught.
    path.write_bytes(data + b"!")
    with pytest.raises(CheckpointError, match="does not match"):
        dl.verify_file(path, entry)
    assert len(calls) == 2


def test_existing_paths_pass_through_and_missing_paths_fail(tmp_path):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"0")
    assert dl.resolve_model_file(path) == path
    with pytest.raises(CheckpointError, match="no such file"):
        dl.resolve_model_file(tmp_path / "absent.safetensors")
    # A mistyped folder in front of a registered name is that missing file, not a reason to download.
    with pytest.raises(CheckpointError, match="no such file"):
        dl.resolve_model_file(tmp_path / "typo" / "seedvr2_ema_3b_fp16.safetensors", download=False)


# ---------------------------------------------------------------- files with their own address (not on the hub)


def _url_entry(hub, data: bytes | None, sha: str | None = None) -> ModelFile:
    """Like FlashVSR's prompt embedding: published on a plain web address, fetched from it."""
    if data is not None:
        hub.files["gh-org/gh-repo/prompt.pth"] = data
    return ModelFile("prompt.pth", "gh-org/gh-repo", "prompt.pth", "flashvsr-prompt", "flashvsr", "pth",
                     sha256=sha, url=f"{hub.url}/gh-org/gh-repo/resolve/main/prompt.pth")


def test_a_file_with_its_own_address_is_fetched_into_the_seedvr_cache_and_found_again(hub, tmp_path):
    data = os.urandom(50_000)
    entry = _url_entry(hub, data, sha=hashlib.sha256(data).hexdigest())
    path = dl.download(entry, progress=False)
    assert path == tmp_path / "seedvr_cache" / "downloads" / "flashvsr" / "prompt.pth"
    assert path.read_bytes() == data and not path.with_name("prompt.pth.part").exists()
    assert dl.find_local(entry) == path
    assert str(path) in [str(p) for p in dl.search_places(entry)]
    # Into a folder of the user's choice, as `models download --to` asks.
    into = dl.download(entry, local_dir=tmp_path / "mine", progress=False)
    assert into == tmp_path / "mine" / "prompt.pth" and into.read_bytes() == data


def test_a_failed_or_corrupt_fetch_from_an_address_leaves_no_file_and_says_so_in_one_line(hub, tmp_path):
    missing = _url_entry(hub, None)
    with pytest.raises(dl.MissingModelFile) as err:
        dl.download(missing, progress=False)
    message = str(err.value)
    assert "\n" not in message and missing.url in message and "404" in message and "HF_ENDPOINT" not in message
    target = dl.url_cache_path(missing)
    assert not target.exists() and not target.with_name("prompt.pth.part").exists()
    corrupt = _url_entry(hub, b"not the published bytes", sha="0" * 64)
    with pytest.raises(CheckpointError, match="sha256 and was not kept"):
        dl.download(corrupt, progress=False)
    assert not target.exists()
