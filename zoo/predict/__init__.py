"""Using a trained model: load it from a training checkpoint or a published name, then generate,
translate, caption or evaluate.

::

    import zoo

    lm = zoo.load("char_lm-lstm-shakespeare-v1")          # a published name
    print(lm.generate("ROMEO:", 200, temperature=0.8))
    translator = zoo.load("runs/translation/demo-bible/checkpoints/last.ckpt")  # a checkpoint
    captioner = zoo.load("captioning-showattendtell-shapes-v1.safetensors")      # a file

:func:`load` reads the file's task and returns its predictor, from :data:`PREDICTORS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo import hub
from zoo.checkpoint import checkpoint_task, read_checkpoint
from zoo.errors import CheckpointError, PretrainedError
from zoo.predict import export
from zoo.predict.base import Predictor, resolve_device
from zoo.predict.captioning import Captioner
from zoo.predict.char_lm import CharLM
from zoo.predict.translation import Translator
from zoo.published import PublishedFile, read_file

#: task -> the predictor class that builds its models.
PREDICTORS: dict[str, type[Predictor]] = {
    "char_lm": CharLM,
    "translation": Translator,
    "captioning": Captioner,
}

__all__ = [
    "PREDICTORS",
    "Captioner",
    "CharLM",
    "Predictor",
    "Translator",
    "export_checkpoint",
    "is_published",
    "list_pretrained",
    "load",
    "load_checkpoint",
    "load_file",
    "load_pretrained",
    "read_published",
    "resolve_device",
]

list_pretrained = hub.list_pretrained


def _predictor(task: Any, path: Any) -> type[Predictor]:
    if task not in PREDICTORS:
        known = ", ".join(PREDICTORS)
        raise CheckpointError(f"{path}: unknown task {task!r}; known: {known}")
    return PREDICTORS[task]


def load_file(
    path: str | Path,
    device: str | torch.device = "cpu",
    task: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Predictor:
    """The predictor of a published ``.safetensors`` file; its metadata says how to build it.

    Raises:
        CheckpointError: the file is missing, corrupt or truncated, has no rnn-zoo metadata, is of
            another ``task``, or its config does not match its weights.
    """
    path = Path(path)
    file = _read_published(path, task, check_copy=meta is None)
    return _predictor(file.task, path).from_published(file, path, meta).to(device)


def _read_published(path: Path, task: str | None, check_copy: bool) -> PublishedFile:
    file = read_file(path)
    if check_copy:  # a file named like a published one must be that file
        hub.check_published_copy(path, file.name)
    if task is not None and file.task != task:
        raise CheckpointError(f"{path}: is a {file.task} model, not {task}")
    return file


def is_published(name_or_path: str | Path) -> bool:
    """Whether :func:`load` reads ``name_or_path`` as published weights (a name, or a
    ``.safetensors`` file) rather than as a training checkpoint (a ``.ckpt``, a URL or any
    other path with a ``/``, or a file that exists)."""
    text, path = str(name_or_path), Path(name_or_path)
    if path.suffix == ".safetensors":
        return True
    return not (path.suffix == ".ckpt" or "/" in text or path.exists())  # names have no "/"


def read_published(
    name_or_path: str | Path, task: str | None = None, manifest: str | Path | None = None
) -> PublishedFile:
    """The weights, model config and extras of a published name (downloaded and verified) or
    ``.safetensors`` file, refusing another ``task``'s (what ``fit --init_from NAME`` reads)."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        return _read_published(path, task, check_copy=True)
    _entry(str(name_or_path), manifest, task)  # the name and its task, before any download
    return _read_published(hub.download(str(name_or_path), manifest), task, check_copy=False)


def _entry(name: str, manifest: str | Path | None, task: str | None) -> dict[str, Any]:
    entry = hub.pretrained_info(name, manifest)
    if task is not None and entry["task"] != task:
        raise PretrainedError(f"{name} is a {entry['task']} model, not {task}")
    return entry


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", task: str | None = None
) -> Predictor:
    """The predictor of a training checkpoint, whatever its task (or ``task``'s only)."""
    checkpoint = read_checkpoint(path, task)
    cls = _predictor(checkpoint_task(checkpoint), path)
    return cls.from_checkpoint_dict(checkpoint, path).to(device)


def load_pretrained(
    name: str,
    device: str | torch.device = "cpu",
    manifest: str | Path | None = None,
    task: str | None = None,
) -> Predictor:
    """The predictor of a published model, downloading and verifying its file if needed.

    Raises:
        PretrainedError: unknown name, another ``task``'s model, or a failed download.
    """
    entry = _entry(name, manifest, task)
    return load_file(hub.download(name, manifest), device, entry["task"], entry)


def load(
    name_or_path: str | Path, device: str | torch.device = "cpu", task: str | None = None
) -> Predictor:
    """A predictor from a published name (see :func:`list_pretrained`), a published
    ``.safetensors`` file, or a training checkpoint (``.ckpt``), for whatever task the file is.

    Args:
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (a GPU when there is one).
        task: refuse any other task's model (``"char_lm"``, ``"translation"``, ``"captioning"``).
    """
    device = resolve_device(device)
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        return load_file(path, device, task)
    if not is_published(name_or_path):  # the string: a Path would fold a URL's "//"
        return load_checkpoint(path, device, task)
    return load_pretrained(str(name_or_path), device, task=task)


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, name: str, fp16: bool = False):
    """:func:`zoo.predict.export.export_checkpoint` with this package's predictors."""
    return export.export_checkpoint(PREDICTORS, ckpt_path, out_path, name, fp16)
