"""Where published weights come from: a manifest, a cache, a mirror, and a verified download.

The manifest (``checkpoints/manifest.yaml``, shipped with the package) lists each published file
with its checksum, parameter count, recipe, data and metrics, the way torchvision's
``Weights(url, transforms, meta)`` do. A file is looked for in the cache (``$RNN_ZOO_HOME``), then
next to the manifest (shipped), then downloaded from the mirror (``$RNN_ZOO_MIRROR``; never with
``RNN_ZOO_OFFLINE=1``); its size and sha256 are checked against the manifest before use, and a
download stops at the manifest's size. What the file holds is :mod:`zoo.published`; turning it
into a model is :mod:`zoo.predict`.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import CheckpointError, PretrainedError
from zoo.files import mismatch, offline, one_line, shipped, verified_download

__all__ = [
    "DEFAULT_MANIFEST",
    "PretrainedError",
    "cache_dir",
    "download",
    "list_pretrained",
    "manifest_path",
    "offline",
    "pretrained_info",
    "read_manifest",
]

#: The shipped manifest; ``$RNN_ZOO_MANIFEST`` or a ``manifest`` argument replace it.
DEFAULT_MANIFEST = shipped("checkpoints") / "manifest.yaml"


def manifest_path(manifest: str | Path | None = None) -> Path:
    """``manifest`` if given, else ``$RNN_ZOO_MANIFEST``, else :data:`DEFAULT_MANIFEST`."""
    return Path(manifest or os.environ.get("RNN_ZOO_MANIFEST") or DEFAULT_MANIFEST)


def cache_dir() -> Path:
    """``$RNN_ZOO_HOME``, else the user cache directory (``~/.cache/rnn-zoo`` on Linux)."""
    if os.environ.get("RNN_ZOO_HOME"):
        return Path(os.environ["RNN_ZOO_HOME"]).expanduser()
    try:  # platformdirs comes with wandb; it is not a dependency of its own
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "rnn-zoo"
    return Path(platformdirs.user_cache_dir("rnn-zoo"))


def read_manifest(manifest: str | Path | None = None) -> dict[str, Any]:
    """The manifest as a mapping: ``checkpoints`` (list of entries) and optional ``mirror``."""
    path = manifest_path(manifest)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(
            f"{path}: no such manifest file; set RNN_ZOO_MANIFEST to one"
        ) from None
    except IsADirectoryError:
        raise PretrainedError(f"{path}: a folder, not a manifest file") from None
    except UnicodeDecodeError:
        raise PretrainedError(f"{path}: not UTF-8 text; not a manifest") from None
    except yaml.YAMLError as err:
        raise PretrainedError(f"{path}: not valid YAML ({one_line(err)})") from None
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "name" in e for e in entries
    ):
        raise PretrainedError(f"{path}: needs 'checkpoints:', a list of entries with a name")
    return data


def list_pretrained(manifest: str | Path | None = None) -> list[str]:
    """Names of the published models, sorted."""
    return sorted(entry["name"] for entry in read_manifest(manifest)["checkpoints"])


def pretrained_info(name: str, manifest: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``name``'s manifest entry."""
    return copy.deepcopy(_entry(name, manifest_path(manifest)))


def download(name: str, manifest: str | Path | None = None, progress: bool = True) -> Path:
    """A verified local copy of ``name``'s file: cached, shipped, or fetched into the cache.

    Raises:
        PretrainedError: unknown name; a shipped copy that fails its checksum; offline or no
            mirror with no local copy; a failed or rejected download (which leaves no file).
    """
    path = manifest_path(manifest)
    entry = _entry(name, path)
    size, digests = entry.get("size"), {"sha256": entry["sha256"]}
    size = size if isinstance(size, int) else None
    cached = cache_dir() / entry["file"]
    if cached.is_file() and mismatch(cached, size, digests) is None:
        return cached  # a cached file that fails is fetched again
    local = path.parent / entry["file"]
    if local.is_file():
        if problem := mismatch(local, size, digests):
            raise PretrainedError(f"{local}: shipped file does not match the manifest ({problem})")
        return local
    if offline():
        raise PretrainedError(
            f"{name}: no verified copy in {cache_dir()} or {path.parent} and RNN_ZOO_OFFLINE is "
            "set; unset it to download"
        )
    mirror = os.environ.get("RNN_ZOO_MIRROR") or read_manifest(path).get("mirror")
    if not mirror:
        raise PretrainedError(f"{name}: not available locally; set RNN_ZOO_MIRROR to download it")
    url = f"{mirror.rstrip('/')}/{entry['file']}"
    with verified_download(
        url, cached, size=size, digests=digests, progress=progress, error=PretrainedError
    ):
        pass
    return cached


def check_published_copy(path: Path, name: str | None) -> None:
    """A local file that names itself as a published model (and carries its file name) is
    checked against that model's manifest entry, so a damaged copy is refused.

    Raises:
        CheckpointError: the sizes or sha256 differ.
    """
    try:
        entry = _entry(name, manifest_path()) if name else None
    except PretrainedError:
        return  # not a published name: nothing to check against
    if entry is None or entry["file"] != path.name:
        return
    size = entry.get("size") if isinstance(entry.get("size"), int) else None
    if problem := mismatch(path, size, {"sha256": entry["sha256"]}):
        raise CheckpointError(f"{path}: damaged copy of {name} ({problem}); fetch it again")


def _entry(name: str, path: Path) -> dict[str, Any]:
    entries = {entry["name"]: entry for entry in read_manifest(path)["checkpoints"]}
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none yet"
        raise PretrainedError(f"unknown pretrained model {name!r}; known: {known} ({path})")
    entry, file = entries[name], entries[name].get("file")
    if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
        raise PretrainedError(f"{path}: {name}: 'file' must be a bare file name, got {file!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256"))):
        raise PretrainedError(f"{path}: {name}: 'sha256' must be 64 lowercase hex digits")
    return entry
