"""Published weights: safetensors files that carry their own config, a manifest, a cache, a mirror.

A published model is one ``.safetensors`` file: the model's ``state_dict`` and, in the file's
metadata, the JSON ``{"name", "task", "model": model.config(), "extras": {...}}`` that rebuilds it.
Loading parses JSON and copies tensors, so unlike a pickled checkpoint it can never run code. The
manifest (``checkpoints/manifest.yaml``) lists each file with its checksum, parameter count,
recipe, data and metrics, the way torchvision's ``Weights(url, transforms, meta)`` do.

A file is looked for in the cache (``$RNN_ZOO_HOME``), then next to the manifest (shipped), then
downloaded from the mirror (``$RNN_ZOO_MIRROR``; never with ``RNN_ZOO_OFFLINE=1``); its sha256 is
checked against the manifest before use.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import hashlib
import http.client
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

import zoo
from zoo.checkpoint import read_checkpoint, submodule_state
from zoo.errors import CheckpointError, UserError
from zoo.files import one_line, temp_beside

#: The repository's manifest; ``$RNN_ZOO_MANIFEST`` or a ``manifest`` argument replace it.
DEFAULT_MANIFEST = Path(zoo.__file__).resolve().parent.parent / "checkpoints" / "manifest.yaml"
#: ``<task>-<core>-<dataset>-v<N>``; ``_`` joins words inside a field (char_lm, layernorm_lstm).
NAME_PATTERN = re.compile(r"([a-z0-9_]+)-[a-z0-9_]+-[a-z0-9_]+-v\d+")
METADATA_KEY = "rnn_zoo"  # safetensors metadata key holding the JSON config
BYTES_KEY = "base64_uint8"  # marks a byte string (e.g. a SentencePiece model) in the JSON extras

Builder = Callable[
    [dict[str, Any], dict[str, Tensor], dict[str, Any]], tuple[nn.Module, dict[str, Any]]
]
#: task -> builder: (model config, state dict, JSON extras) -> (model, extras objects).
BUILDERS: dict[str, Builder] = {}
#: task -> keys of a training checkpoint that the published file carries as extras.
CHECKPOINT_EXTRAS: dict[str, tuple[str, ...]] = {}


class PretrainedError(UserError):
    """A published model is unknown, not available locally offline, or failed to download."""


@dataclass
class Pretrained:
    """A loaded published model.

    Attributes:
        task: e.g. ``"char_lm"``.
        model: the ``nn.Module`` in eval mode on the requested device.
        extras: what the task needs beside the model, e.g. ``{"vocab": CharVocab}``.
        meta: the manifest entry (for :func:`load_file`, what the file itself tells).
    """

    task: str
    model: nn.Module
    extras: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def register_task(task: str, extras: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: models of ``task`` are built by it and carry checkpoint keys ``extras``."""

    def register(builder: Builder) -> Builder:
        BUILDERS[task] = builder
        CHECKPOINT_EXTRAS[task] = extras
        return builder

    return register


@register_task("char_lm", extras=("vocab",))
def _build_char_lm(
    config: dict[str, Any], state: dict[str, Tensor], extras: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    from datamodules.vocab import CharVocab
    from zoo.models import CharRNN

    model = CharRNN.from_config(config)
    vocab = CharVocab(extras["vocab"])
    if len(vocab) != model.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} characters, vocab_size is {model.vocab_size}")
    load_state(model, state)
    return model, {"vocab": vocab}


def tied_aliases(state: dict[str, Tensor]) -> dict[str, str]:
    """``{alias: first name}`` for entries sharing memory (tied weights are stored once)."""
    first: dict[tuple, str] = {}
    aliases = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and key in first:
            aliases[name] = first[key]
        first.setdefault(key, name)
    return aliases


def load_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load ``state`` into ``model`` strictly; a tied weight may appear under either name.

    Raises:
        ValueError: one line naming missing and unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    aliases = tied_aliases(expected)
    state = {aliases.get(k, k): v for k, v in state.items()}
    wanted = {k: v for k, v in expected.items() if k not in aliases}
    problems = []
    if missing := sorted(wanted.keys() - state.keys()):
        problems.append(f"missing {_few(missing)}")
    if unexpected := sorted(state.keys() - wanted.keys()):
        problems.append(f"unexpected {_few(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatch (file vs model) {_few(shapes)}")
    if problems:
        raise ValueError("; ".join(problems))
    model.load_state_dict(state, strict=False)


# --- the file format ------------------------------------------------------------------------


def export_checkpoint(
    ckpt_path: str | Path, out_path: str | Path, name: str, fp16: bool = False
) -> dict[str, Any]:
    """Write a training checkpoint as a published ``.safetensors`` file (atomically).

    Args:
        ckpt_path: a Lightning ``.ckpt``, read with ``weights_only=True``.
        out_path: the ``.safetensors`` file to write.
        name: ``<task>-<core>-<dataset>-v<N>``; the task must match the checkpoint's.
        fp16: store floating tensors as float16 (half the size; loaded back as float32).

    Returns:
        The manifest entry; ``recipe``, ``data``, ``licence`` and ``metrics`` are left for the
        caller to fill.

    Raises:
        PretrainedError: the name is malformed or its task unknown.
        CheckpointError: the checkpoint is unsafe, of another task, or inconsistent.
    """
    task, out_path = _task_of(name), Path(out_path)
    checkpoint = read_checkpoint(ckpt_path, task)
    missing = [key for key in CHECKPOINT_EXTRAS[task] if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{ckpt_path}: has no {', '.join(missing)}; saved before training?")
    extras = {key: _to_json(checkpoint[key]) for key in CHECKPOINT_EXTRAS[task]}
    config = checkpoint["hyper_parameters"].get("model")
    model, _ = _build(ckpt_path, task, config, submodule_state(checkpoint), extras)
    try:
        header = json.dumps({"name": name, "task": task, "model": config, "extras": extras})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt_path}: config or extras are not JSON-able ({err})") from None
    _write_safetensors(out_path, model, header, fp16)
    date = datetime.date.today().isoformat()
    to_fill = {"recipe": None, "data": None, "licence": None, "date": date, "metrics": {}}
    return _file_meta(name, task, out_path, model) | to_fill


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Pretrained:
    """Load a published ``.safetensors`` file; its metadata says how to build the model.

    Raises:
        CheckpointError: the file is missing, corrupt or truncated, has no rnn-zoo metadata, or
            its config does not match its weights.
    """
    return _load(Path(path), map_location)


def _load(
    path: Path, map_location: str | torch.device, task: str | None = None, meta: dict | None = None
) -> Pretrained:
    header, state = _read_safetensors(path)
    found = header["task"]
    if task is not None and found != task:
        raise CheckpointError(f"{path}: is a {found} model, not {task}")
    if found not in BUILDERS:
        raise CheckpointError(f"{path}: unknown task {found!r}; known: {', '.join(BUILDERS)}")
    model, extras = _build(path, found, header["model"], state, header["extras"])
    meta = meta if meta is not None else _file_meta(header.get("name"), found, path, model)
    return Pretrained(found, model.to(map_location).eval(), extras, meta)


def _build(
    path: str | Path, task: str, config: Any, state: dict[str, Tensor], extras: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    try:
        return BUILDERS[task](config, state, _from_json(extras))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        message = f"{type(err).__name__}: {one_line(err)}"
        raise CheckpointError(f"{path}: config does not match the weights ({message})") from None


def _to_json(value: Any) -> Any:
    """Checkpoint extras as JSON: uint8 tensors (serialised tokenizer models) become
    ``{BYTES_KEY: base64}``; anything else must already be JSON-able."""
    if isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 1:
        return {BYTES_KEY: base64.b64encode(value.numpy().tobytes()).decode("ascii")}
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    return value


def _from_json(value: Any) -> Any:
    """Inverse of :func:`_to_json`."""
    if isinstance(value, dict):
        if set(value) == {BYTES_KEY}:
            raw = base64.b64decode(value[BYTES_KEY], validate=True)  # binascii.Error: ValueError
            return torch.tensor(list(raw), dtype=torch.uint8)
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _write_safetensors(path: Path, model: nn.Module, header: str, fp16: bool) -> None:
    state = model.state_dict()
    aliases = tied_aliases(state)
    tensors = {k: _stored(v, fp16) for k, v in state.items() if k not in aliases}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: header})
        os.chmod(tmp, 0o644)  # published files are readable by all, like any other data
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stored(tensor: Tensor, fp16: bool) -> Tensor:
    tensor = tensor.detach().cpu()
    return (tensor.half() if fp16 and tensor.is_floating_point() else tensor).contiguous()


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata, state = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(err)})") from None
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: has no rnn-zoo metadata; publish with rnn-zoo export")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: rnn-zoo metadata is not JSON ({err})") from None
    if not (isinstance(header, dict) and isinstance(header.get("task"), str)) or not all(
        isinstance(header.get(key), dict) for key in ("model", "extras")
    ):
        raise CheckpointError(f"{path}: rnn-zoo metadata needs a task, a model and extras")
    half = (torch.float16, torch.bfloat16)  # fp16 storage is loaded back to fp32
    return header, {k: v.float() if v.dtype in half else v for k, v in state.items()}


def _file_meta(name: str | None, task: str, path: Path, model: nn.Module) -> dict[str, Any]:
    return {
        "name": name,
        "task": task,
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        "num_params": sum(p.numel() for p in model.parameters()),
    }


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- manifest, cache, mirror ----------------------------------------------------------------


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
        raise PretrainedError(f"{path}: no manifest; set RNN_ZOO_MANIFEST to one") from None
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


def load_pretrained(
    name: str,
    map_location: str | torch.device = "cpu",
    manifest: str | Path | None = None,
    task: str | None = None,
) -> Pretrained:
    """Load a published model by name, downloading and verifying its file if needed.

    Args:
        task: the task the caller needs; another task's model is a :class:`PretrainedError`.
    """
    entry = pretrained_info(name, manifest)
    if task is not None and entry["task"] != task:
        raise PretrainedError(f"{name} is a {entry['task']} model, not {task}")
    return _load(download(name, manifest), map_location, entry["task"], entry)


def download(name: str, manifest: str | Path | None = None, progress: bool = True) -> Path:
    """A verified local copy of ``name``'s file: cached, shipped, or fetched into the cache.

    Raises:
        PretrainedError: unknown name; a shipped copy that fails its checksum; offline or no
            mirror with no local copy; a failed or rejected download (which leaves no file).
    """
    path = manifest_path(manifest)
    entry = _entry(name, path)
    cached = cache_dir() / entry["file"]
    if cached.is_file() and _mismatch(cached, entry) is None:
        return cached  # a cached file that fails is fetched again
    shipped = path.parent / entry["file"]
    if shipped.is_file():
        if problem := _mismatch(shipped, entry):
            raise PretrainedError(
                f"{shipped}: shipped file does not match the manifest ({problem})"
            )
        return shipped
    if os.environ.get("RNN_ZOO_OFFLINE", "").lower() not in ("", "0", "false", "no"):
        raise PretrainedError(
            f"{name}: no verified copy in {cache_dir()} or {path.parent} and RNN_ZOO_OFFLINE is "
            "set; unset it to download"
        )
    mirror = os.environ.get("RNN_ZOO_MIRROR") or read_manifest(path).get("mirror")
    if not mirror:
        raise PretrainedError(f"{name}: not available locally; set RNN_ZOO_MIRROR to download it")
    return _fetch(f"{mirror.rstrip('/')}/{entry['file']}", cached, entry, progress)


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


def _mismatch(path: Path, entry: dict[str, Any]) -> str | None:
    """Why ``path`` is not the manifest's file, or None when size and sha256 match."""
    size = path.stat().st_size
    if isinstance(entry.get("size"), int) and size != entry["size"]:
        return f"{size} bytes, expected {entry['size']}"
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:16]}..., expected {entry['sha256'][:16]}..."
    return None


def _fetch(url: str, cached: Path, entry: dict[str, Any], progress: bool) -> Path:
    """Download to a temp file beside ``cached``, verify, then move into place."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(cached)
    try:
        try:
            torch.hub.download_url_to_file(url, str(tmp), progress=progress)
        except HTTPError as err:
            raise PretrainedError(
                f"{url}: download failed (HTTP {err.code} {err.reason})"
            ) from None
        except URLError as err:
            raise PretrainedError(f"{url}: download failed ({err.reason})") from None
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise PretrainedError(f"{url}: download failed ({one_line(err)})") from None
        if problem := _mismatch(tmp, entry):
            raise PretrainedError(f"{url}: download rejected, not the manifest's file ({problem})")
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def _task_of(name: str) -> str:
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        raise PretrainedError(
            f"name {name!r} is not <task>-<core>-<dataset>-v<N> (lowercase, digits, _), "
            "e.g. char_lm-lstm-shakespeare-v1"
        )
    if match[1] not in BUILDERS:
        raise PretrainedError(f"name {name!r}: unknown task {match[1]!r}; known: {list(BUILDERS)}")
    return match[1]


def _few(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# --- command line ---------------------------------------------------------------------------


def pretrained_main(argv: list[str] | None = None) -> int:
    """``rnn-zoo pretrained list | info NAME | download NAME``."""
    parser = argparse.ArgumentParser(prog="rnn-zoo pretrained", description="Published weights.")
    parser.add_argument("--manifest", type=Path, default=None, help="default: the repository's")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="names of the published models")
    commands.add_parser("info", help="print a model's manifest entry").add_argument("name")
    commands.add_parser("download", help="fetch and verify; print the path").add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(list_pretrained(args.manifest)) or "(no published models yet)")
    elif args.command == "info":
        print(_yaml(pretrained_info(args.name, args.manifest)), end="")
    else:
        print(download(args.name, args.manifest))
    return 0


def export_main(argv: list[str] | None = None) -> int:
    """``rnn-zoo export --checkpoint RUN.ckpt --name NAME [--out DIR] [--fp16]``."""
    parser = argparse.ArgumentParser(
        prog="rnn-zoo export",
        description="Publish a training checkpoint as NAME.safetensors; print its manifest entry.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt from rnn-zoo fit")
    parser.add_argument("--name", required=True, help="e.g. char_lm-lstm-shakespeare-v1")
    parser.add_argument("--out", type=Path, help="directory (default: the manifest's)")
    parser.add_argument("--fp16", action="store_true", help="store float16, load as float32")
    args = parser.parse_args(argv)
    out_dir = args.out or manifest_path().parent
    if out_dir.exists() and not out_dir.is_dir():
        raise PretrainedError(f"{out_dir}: --out must be a directory")
    out = out_dir / f"{args.name}.safetensors"
    entry = export_checkpoint(args.checkpoint, out, args.name, fp16=args.fp16)
    hint = "fill in recipe, data, licence and metrics, then add it under 'checkpoints:'"
    print(f"wrote {out}; {hint}", file=sys.stderr)
    print(_yaml([entry]), end="")
    return 0


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


import zoo.hub_captioning  # noqa: E402, F401  (registers the captioning builder)
import zoo.hub_translation  # noqa: E402, F401  (registers the translation builder)
