"""The published-weights file format: one ``.safetensors`` file that carries its own config.

A published model is the model's ``state_dict`` and, in the file's metadata, the JSON
``{"name", "task", "model": model.config(), "extras": {...}}`` that rebuilds it (the extras are
what a task needs beside the weights: a vocabulary, a tokeniser, decoding settings). Reading it
parses JSON and copies tensors, so unlike a pickled checkpoint it can never run code. Byte strings
(a SentencePiece model) are stored in the JSON as base64. Which class rebuilds which task is not
known here: :mod:`zoo.predict` builds predictors from what :func:`read_file` returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from zoo.errors import CheckpointError, PretrainedError
from zoo.files import atomic_path, few, one_line, sha256_of

#: ``<task>-<core>-<dataset>-v<N>``; ``_`` joins words inside a field (char_lm, layernorm_lstm).
NAME_PATTERN = re.compile(r"([a-z0-9_]+)-[a-z0-9_]+-[a-z0-9_]+-v\d+")
METADATA_KEY = "rnn_zoo"  # safetensors metadata key holding the JSON config
DIGEST_KEY = "rnn_zoo_sha256"  # safetensors metadata key: sha256 of the tensors, as stored
BYTES_KEY = "base64_uint8"  # marks a byte string (e.g. a SentencePiece model) in the JSON extras


@dataclass
class PublishedFile:
    """What a published file holds.

    Attributes:
        name: the published name (None for a file written without one).
        task: ``"char_lm"``, ``"translation"`` or ``"captioning"``.
        config: the model's ``config()``.
        extras: the task's extras, byte strings back as uint8 tensors.
        state: the weights, float16 storage loaded back as float32.
    """

    name: str | None
    task: str
    config: dict[str, Any]
    extras: dict[str, Any]
    state: dict[str, Tensor]


def task_of(name: str) -> str:
    """The task a published name starts with.

    Raises:
        PretrainedError: a name that is not ``<task>-<core>-<dataset>-v<N>``.
    """
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        raise PretrainedError(
            f"name {name!r} is not <task>-<core>-<dataset>-v<N> (lowercase, digits, _), "
            "e.g. char_lm-lstm-shakespeare-v1"
        )
    return match[1]


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
        problems.append(f"missing {few(missing)}")
    if unexpected := sorted(state.keys() - wanted.keys()):
        problems.append(f"unexpected {few(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatch (file vs model) {few(shapes)}")
    if problems:
        raise ValueError("; ".join(problems))
    model.load_state_dict(state, strict=False)


def to_json(value: Any) -> Any:
    """Checkpoint extras as JSON: uint8 tensors (serialised tokenizer models) become
    ``{BYTES_KEY: base64}``; anything else must already be JSON-able."""
    if isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 1:
        return {BYTES_KEY: base64.b64encode(value.numpy().tobytes()).decode("ascii")}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json`."""
    if isinstance(value, dict):
        if set(value) == {BYTES_KEY}:
            raw = base64.b64decode(value[BYTES_KEY], validate=True)  # binascii.Error: ValueError
            return torch.tensor(list(raw), dtype=torch.uint8)
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def write_file(
    path: Path,
    model: nn.Module,
    *,
    name: str | None,
    task: str,
    config: dict[str, Any],
    extras: dict[str, Any],
    fp16: bool = False,
) -> None:
    """Write ``model``'s weights and the JSON that rebuilds it to ``path``, atomically.

    Args:
        extras: JSON-able, or uint8 tensors (stored as base64).
        fp16: store floating tensors as float16 (half the size; read back as float32).

    Raises:
        ValueError: config or extras that are not JSON-able.
    """
    header = json.dumps({"name": name, "task": task, "model": config, "extras": to_json(extras)})
    state = model.state_dict()
    aliases = tied_aliases(state)
    tensors = {k: _stored(v, fp16) for k, v in state.items() if k not in aliases}
    metadata = {"format": "pt", METADATA_KEY: header, DIGEST_KEY: tensors_digest(tensors)}
    with atomic_path(path) as tmp:  # published files are readable by all, like any other data
        save_file(tensors, str(tmp), metadata=metadata)


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: what a file's
    content must hash to, whatever its header says."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _stored(tensor: Tensor, fp16: bool) -> Tensor:
    tensor = tensor.detach().cpu()
    return (tensor.half() if fp16 and tensor.is_floating_point() else tensor).contiguous()


def read_file(path: str | Path) -> PublishedFile:
    """Read a published file.

    Raises:
        CheckpointError: the file is missing, corrupt or truncated, or has no rnn-zoo metadata.
    """
    path = Path(path)
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
        extras = from_json(header.get("extras")) if isinstance(header, dict) else None
    except (json.JSONDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: rnn-zoo metadata is not JSON ({err})") from None
    if not (isinstance(header, dict) and isinstance(header.get("task"), str)) or not all(
        isinstance(header.get(key), dict) for key in ("model", "extras")
    ):
        raise CheckpointError(f"{path}: rnn-zoo metadata needs a task, a model and extras")
    stored = metadata.get(DIGEST_KEY)
    if stored is not None and tensors_digest(state) != stored:
        raise CheckpointError(
            f"{path}: damaged file: its tensors do not hash to the digest it was written with"
        )
    half = (torch.float16, torch.bfloat16)  # fp16 storage is loaded back to fp32
    state = {k: v.float() if v.dtype in half else v for k, v in state.items()}
    return PublishedFile(header.get("name"), header["task"], header["model"], extras, state)


def file_meta(name: str | None, task: str, path: Path, model: nn.Module) -> dict[str, Any]:
    """The manifest fields a file and its model determine: size, sha256, parameter count."""
    return {
        "name": name,
        "task": task,
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
