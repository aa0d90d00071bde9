"""Publishing: a training checkpoint becomes a ``.safetensors`` file of :mod:`zoo.published`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from torch import nn

from zoo.checkpoint import read_checkpoint
from zoo.errors import CheckpointError, PretrainedError
from zoo.predict.base import Predictor
from zoo.published import file_meta, task_of, write_file


def architecture(model: nn.Module) -> str:
    """The second part of a published name: a char-LM's core (``lstm``, ``mingru``), else the
    model's class (``rnnsearch``, ``showattendtell``), in lowercase; a name may join its words
    with ``_`` (``layernorm_lstm``)."""
    core = getattr(model, "core", None)
    return type(core if isinstance(core, nn.Module) else model).__name__.lower()


def export_checkpoint(
    predictors: dict[str, type[Predictor]],
    ckpt_path: str | Path,
    out_path: str | Path,
    name: str,
    fp16: bool = False,
) -> dict[str, Any]:
    """Write a training checkpoint as a published ``.safetensors`` file (atomically).

    Args:
        predictors: task -> predictor class (:data:`zoo.predict.PREDICTORS`).
        ckpt_path: a Lightning ``.ckpt``, read with ``weights_only=True``.
        out_path: the ``.safetensors`` file to write.
        name: ``<task>-<core>-<dataset>-v<N>``; the task must match the checkpoint's.
        fp16: store floating tensors as float16 (half the size; loaded back as float32).

    Returns:
        The manifest entry; ``recipe``, ``data``, ``licence`` and ``metrics`` are left for the
        caller to fill.

    Raises:
        PretrainedError: the name is malformed, its task unknown, or its second part not the
            checkpoint's core (char_lm) or model (:func:`architecture`).
        CheckpointError: the checkpoint is unsafe, of another task, or inconsistent.
    """
    task, out_path = task_of(name), Path(out_path)
    if task not in predictors:
        raise PretrainedError(f"name {name!r}: unknown task {task!r}; known: {list(predictors)}")
    cls = predictors[task]
    checkpoint = read_checkpoint(ckpt_path, task)
    missing = [key for key in cls.required if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{ckpt_path}: has no {', '.join(missing)}; was it saved before training began?"
        )
    predictor = cls.from_checkpoint_dict(checkpoint, ckpt_path)  # the model, checked
    kind, given = architecture(predictor.model), name.split("-")[1]
    if given.replace("_", "") != kind:  # what users of the manifest and zoo.load go by
        rest = name.split("-", 2)[2]
        raise PretrainedError(
            f"name {name!r}: the checkpoint's model is {kind}, not {given}; name it "
            f"{task}-{kind}-{rest}"
        )
    config = checkpoint["hyper_parameters"].get("model")
    extras = {key: checkpoint[key] for key in cls.extras if key in checkpoint}
    try:
        write_file(
            out_path, predictor.model, name=name, task=task, config=config, extras=extras,
            fp16=fp16,
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt_path}: config or extras are not JSON-able ({err})") from None
    date = datetime.date.today().isoformat()
    to_fill = {"recipe": None, "data": None, "licence": None, "date": date, "metrics": {}}
    return file_meta(name, task, out_path, predictor.model) | to_fill
