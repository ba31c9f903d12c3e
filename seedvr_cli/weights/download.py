"""Find a published file locally or fetch it from Hugging Face, and check its sha256 once.

Where a registered file is looked for, in order: the model folder (``--model-dir`` or
``SEEDVR_MODEL_DIR``; a ComfyUI ``models/SEEDVR2`` folder works as it is, and it may be read-only),
then the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``). Missing files are downloaded
into that cache with ``huggingface_hub`` (progress bar, resumable ``.incomplete`` files, ``HF_ENDPOINT``,
``HF_TOKEN`` and ``HF_HUB_OFFLINE`` honoured; the environment is read at call time, not import time).

A file's sha256 is computed the first time it is used and remembered (keyed by path, size and
mtime) in ``SEEDVR_CACHE_DIR`` (default ``~/.cache/seedvr-cli``), so later runs start at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from seedvr_cli.errors import CheckpointError
from seedvr_cli.weights.registry import ModelFile, find_model, get_model

MODEL_DIR_ENV = "SEEDVR_MODEL_DIR"
_HASH_CHUNK = 16 << 20


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def model_dir_or_env(model_dir: str | Path | None) -> Path | None:
    value = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV)
    return Path(value).expanduser() if value else None


def seedvr_cache_dir() -> Path:
    if os.environ.get("SEEDVR_CACHE_DIR"):
        return Path(os.environ["SEEDVR_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "seedvr-cli"


# --------------------------------------------------------------------------------------------- lookup


def search_places(entry: ModelFile, model_dir: str | Path | None = None) -> list[Path]:
    """Every place a registered file may already be, in lookup order (for messages and listing)."""
    places = []
    folder = model_dir_or_env(model_dir)
    if folder is not None:
        places.append(folder / entry.name)
        if entry.path != entry.name:
            places.append(folder / entry.path)
    places.append(url_cache_path(entry) if entry.url else hub_cache_dir() / _repo_folder(entry.repo))
    return places


def url_cache_path(entry: ModelFile) -> Path:
    """Where a file fetched from its own address (not Hugging Face) is kept."""
    return seedvr_cache_dir() / "downloads" / entry.variant / entry.name


def _repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def find_local(entry: ModelFile, model_dir: str | Path | None = None) -> Path | None:
    """The local copy of ``entry`` (model folder first, then the HF cache), or None."""
    folder = model_dir_or_env(model_dir)
    if folder is not None:
        for candidate in (folder / entry.name, folder / entry.path):
            if candidate.is_file():
                return candidate
    if entry.url:
        cached_file = url_cache_path(entry)
        return cached_file if cached_file.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(entry.repo, entry.path, cache_dir=hub_cache_dir())
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    return None


# --------------------------------------------------------------------------------------------- sha256


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def _memo_path() -> Path:
    return seedvr_cache_dir() / "verified.json"


def _memo_key(path: Path) -> tuple[str, dict]:
    real = path.resolve()
    stat = real.stat()
    return str(real), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_memo() -> dict:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def remembered_sha256(path: Path) -> str | None:
    key, stamp = _memo_key(path)
    record = _read_memo().get(key)
    if record and all(record.get(k) == v for k, v in stamp.items()):
        return record.get("sha256")
    return None


def _remember(path: Path, digest: str) -> None:
    key, stamp = _memo_key(path)
    memo = _read_memo()
    memo[key] = {**stamp, "sha256": digest}
    target = _memo_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        tmp.replace(target)
    except OSError:
        pass  # an unwritable cache only costs a re-hash next time


def verify_file(path: Path, entry: ModelFile, *, force: bool = False,
                progress: Callable[[int], None] | None = None) -> bool | None:
    """Check ``path`` against the registry's sha256 (once; remembered). True when it matches, None
    when the registry has no hash; raises CheckpointError on a mismatch."""
    if entry.sha256 is None:
        return None
    digest = None if force else remembered_sha256(path)
    if digest is None:
        digest = sha256_file(path, progress)
        _remember(path, digest)
    if digest != entry.sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:16]}... does not match the published {entry.name} "
            f"({entry.sha256[:16]}...): the file is damaged or a different upload; delete it and run "
            f"`seedvr models download {entry.name} --force`"
        )
    return True


# --------------------------------------------------------------------------------------------- download


class MissingModelFile(CheckpointError):
    """A registered file that is not here and could not be fetched now (``reason`` says why).

    Kept apart from other checkpoint errors so that a caller resolving several files can name
    every missing one in a single message (``missing_message``) instead of one per attempt.
    """

    def __init__(self, entry: ModelFile, model_dir: str | Path | None, reason: str) -> None:
        super().__init__(missing_message([entry], model_dir, reason))
        self.entry, self.model_dir, self.reason = entry, model_dir, reason


def missing_message(entries: Sequence[ModelFile], model_dir: str | Path | None, reason: str, *,
                    suggest_download: bool = True) -> str:
    """One line naming every missing file, where it was looked for, and how to get it.

    ``suggest_download=False`` is for ``seedvr models download`` itself, where suggesting the
    command that has just failed would send the user in a circle.
    """
    names = [entry.name for entry in entries]
    places = ", ".join(dict.fromkeys(str(p) for entry in entries for p in search_places(entry, model_dir)))
    target = model_dir_or_env(model_dir)
    where = f"into {target}" if target else f"into a folder named by --model-dir or {MODEL_DIR_ENV}"
    files = "the file" if len(entries) == 1 else "the files"
    what = f"{names[0]} not found" if len(entries) == 1 else f"{len(entries)} model files not found: {', '.join(names)}"
    hf = " ".join(e.url if e.url else f"`hf download {e.repo} {e.path}`" for e in entries)
    if suggest_download:
        fix = (f"On a machine with network run `seedvr models download {' '.join(names)}` (or {hf}) "
               f"and copy {files} {where}")
    elif hub_offline():
        fix = f"unset HF_HUB_OFFLINE to download, or fetch {files} elsewhere ({hf}) and copy {files} {where}"
    elif all(e.url for e in entries):
        fix = f"check the network, or fetch {files} on another machine ({hf}) and copy {files} {where}"
    else:
        fix = (f"check the network, HF_ENDPOINT ({hub_endpoint()}) and HF_TOKEN, or fetch {files} on another "
               f"machine ({hf}) and copy {files} {where}")
    return f"{what} ({reason}); looked in: {places}. {fix}"


def download(entry: ModelFile, *, model_dir: str | Path | None = None, local_dir: str | Path | None = None,
             force: bool = False, progress: bool = True) -> Path:
    """Fetch ``entry`` into the HF cache (or ``local_dir``) and verify it. Resumes partial downloads
    (files with their own address: fetched whole into the seedvr cache, written atomically)."""
    if hub_offline():
        raise MissingModelFile(entry, model_dir, "HF_HUB_OFFLINE is set")
    if entry.url:
        target = Path(local_dir).expanduser() / entry.name if local_dir else url_cache_path(entry)
        if not force and target.is_file():
            verify_file(target, entry)
            return target
        _fetch_url(entry, target, model_dir, progress)
        try:
            verify_file(target, entry, force=True)
        except CheckpointError:
            target.unlink(missing_ok=True)
            raise CheckpointError(f"{entry.url}: the downloaded file does not match the published {entry.name}'s "
                                  "sha256 and was not kept; the address may now serve another version") from None
        return target
    from huggingface_hub import hf_hub_download

    kwargs = {}
    if not progress:
        from tqdm.auto import tqdm

        class _Silent(tqdm):
            def __init__(self, *args, **kw):
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    try:
        fetched = hf_hub_download(
            entry.repo, entry.path, cache_dir=None if local_dir else hub_cache_dir(),
            local_dir=local_dir, endpoint=hub_endpoint(), token=os.environ.get("HF_TOKEN") or None,
            force_download=force, **kwargs,
        )  # fmt: skip
    except Exception as err:  # network errors, 404, auth: all end as one readable line
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingModelFile(entry, model_dir, f"download from {hub_endpoint()} failed: {detail}") from None
    path = Path(fetched)
    verify_file(path, entry, force=force)
    return path


def _fetch_url(entry: ModelFile, target: Path, model_dir: str | Path | None, progress: bool) -> None:
    """``entry.url`` into ``target`` through a partial file renamed at the end (an interrupted
    download never leaves a file that looks complete)."""
    import urllib.request

    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(entry.url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(partial, target)
    except Exception as err:  # network errors, 404: one readable line
        partial.unlink(missing_ok=True)
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingModelFile(entry, model_dir, f"download from {entry.url} failed: {detail}") from None


def resolve_model_file(name_or_path: str | Path, *, model_dir: str | Path | None = None, download: bool = True) -> Path:
    """A usable local path for a file path, a registered file name or an alias.

    Existing paths are returned as they are (their content is checked when loaded). Registered
    names are looked up locally, verified against their sha256 once, and downloaded when missing
    and ``download`` is allowed.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    # A path with a folder in it means that file: a typo there must not silently fetch the registry's copy.
    has_folder = os.sep in text or (os.altsep is not None and os.altsep in text)
    entry = find_model(path.name) if path.name and not has_folder else None
    if entry is None:
        if os.sep in text or path.suffix:
            folder = model_dir_or_env(model_dir)
            if folder is not None and (folder / text).is_file():
                return folder / text
            raise CheckpointError(f"{text}: no such file; give an existing path or a name from `seedvr models list`")
        entry = get_model(text)
    local = find_local(entry, model_dir)
    if local is not None:
        verify_file(local, entry)
        return local
    if not download:
        raise MissingModelFile(entry, model_dir, "automatic download is off")
    return _download_fn(entry, model_dir=model_dir)


_download_fn = download
