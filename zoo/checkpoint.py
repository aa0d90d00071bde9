"""Reading training checkpoints safely: ``torch.load(weights_only=True)``, never a full unpickle,
after the zip archive's CRCs are checked (torch itself does not check them, so a flipped byte in
the weights would load without complaint). Every checkpoint the CLI or the Python API reads goes
through :func:`read_checkpoint`; a remote one is first fetched by :func:`local_checkpoint`."""

from __future__ import annotations

import hashlib
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError
from zoo.files import atomic_path, fetch, offline, one_line

REMOTE = ("http://", "https://")
#: URL -> the file it was fetched into, so one command that reads a checkpoint twice (its recipe,
#: then its weights) downloads it once.
_FETCHED: dict[str, Path] = {}


def _refusal(path: Path, err: pickle.UnpicklingError) -> CheckpointError:
    """One line for a pickle that ``weights_only`` refused, naming the global it would import."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err)) or re.search(r"global[: ]+'?([\w.]+)", str(err))
    what = f"it would import {found.group(1)}" if found else one_line(err)[:120]
    return CheckpointError(
        f"{path}: refused to load: it holds objects other than tensors and plain values "
        f"({what}); only load checkpoints you trust, with torch.load directly"
    )


def check_integrity(path: Path) -> None:
    """Every member of the checkpoint's zip archive passes its CRC check.

    Raises:
        CheckpointError: a truncated or damaged archive, naming the file and the member.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({one_line(err)})") from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: {bad} fails its CRC check (a flipped or truncated "
            "byte); restore the file from where it came"
        )


def read_checkpoint(
    path: str | Path, task: str | None = None, map_location: Any = "cpu", origin: str = ""
) -> dict:
    """Load a Lightning checkpoint (of ``task``, unless None) with ``weights_only=True``;
    errors name ``origin`` (a URL it was fetched from) or else ``path``.

    Raises:
        CheckpointError: the file is missing, is not a torch checkpoint, is damaged, holds
            anything but tensors and plain values (so cannot be loaded without running code),
            or belongs to another task.
    """
    try:
        return _read(Path(path), task, map_location)
    except CheckpointError as err:
        if not origin:
            raise
        raise CheckpointError(str(err).replace(str(path), origin, 1)) from None


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: the length of its JSON header as 8
    little-endian bytes, then the header's opening brace."""
    with path.open("rb") as file:
        head = file.read(9)
    size = path.stat().st_size
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def _read(path: Path, task: str | None, map_location: Any) -> dict:
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder; give the checkpoint file in it (a .ckpt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        if _is_safetensors(path):
            raise CheckpointError(
                f"{path}: published weights (safetensors), not a training checkpoint; "
                "--pretrained and zoo.load read those"
            )
        with path.open("rb") as file:
            cut_short = file.read(4) == b"PK\x03\x04"  # a zip's first record, not its end
        if cut_short:
            raise CheckpointError(
                f"{path}: a damaged checkpoint, cut short (its zip archive has no end); copy or "
                "download it again"
            )
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a torch.save zip archive)")
    check_integrity(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({one_line(err)[:120]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning training checkpoint (no state_dict)")
    require_task(checkpoint, task, path)
    return checkpoint


def weights_mismatch(model: dict[str, Any], checkpoint: dict[str, Any]) -> str | None:
    """Why a checkpoint's ``state_dict`` cannot load into a model's (strictly): the first key
    missing on either side or of another shape, in words; None when it fits."""
    for key, value in model.items():
        if key not in checkpoint:
            return f"{key} is in the model but not in the checkpoint"
        theirs = getattr(checkpoint[key], "shape", None)
        if theirs is not None and tuple(theirs) != tuple(value.shape):
            return (
                f"{key} is {tuple(theirs)} in the checkpoint but {tuple(value.shape)} in the model"
            )
    extra = next((key for key in checkpoint if key not in model), None)
    return None if extra is None else f"{extra} is in the checkpoint but not in the model"


def require_task(checkpoint: dict[str, Any], task: str | None, name: str | Path) -> None:
    """Refuse a checkpoint (read from ``name``) of another task than ``task`` (None: any)."""
    found = checkpoint_task(checkpoint)
    if task is not None and found != task:
        raise CheckpointError(
            f"{name}: is a {found or 'non-rnn-zoo'} checkpoint, not {task}; use the command "
            f"for its task"
        )


def local_checkpoint(path_or_url: str | Path) -> Path:
    """A checkpoint as a local file: the path itself, or an ``http(s)://`` URL fetched into the
    temporary folder, once per process (never with ``RNN_ZOO_OFFLINE``; then read it like any
    file, with :func:`read_checkpoint`).

    Raises:
        CheckpointError: a remote checkpoint while offline, or a failed download.
    """
    text = str(path_or_url)
    if not text.startswith(REMOTE):
        return Path(text)
    if offline():
        raise CheckpointError(f"{text}: RNN_ZOO_OFFLINE is set, so no checkpoint is downloaded")
    local = _FETCHED.get(text)
    if local is not None and local.is_file():
        return local
    name = hashlib.sha256(text.encode()).hexdigest()[:16] + ".ckpt"
    local = Path(tempfile.gettempdir()) / "rnn-zoo-checkpoints" / name
    with atomic_path(local) as tmp:
        fetch(text, tmp, error=CheckpointError)
    _FETCHED[text] = local
    return local


def checkpoint_task(checkpoint: dict[str, Any]) -> str | None:
    """The rnn-zoo task a checkpoint was trained for (``hyper_parameters["task"]``), if any."""
    hparams = checkpoint.get("hyper_parameters")
    return hparams.get("task") if isinstance(hparams, dict) else None


def submodule_state(checkpoint: dict[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The ``state_dict`` entries under ``prefix``, with the prefix removed."""
    state = checkpoint["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
