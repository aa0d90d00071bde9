"""Reading training checkpoints safely: ``torch.load(weights_only=True)``, never a full unpickle."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError
from zoo.files import one_line


def read_checkpoint(
    path: str | Path, task: str | None = None, map_location: str | torch.device = "cpu"
) -> dict:
    """Load a Lightning checkpoint (of ``task``, unless None) with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, is not a torch checkpoint, holds anything but
            tensors and plain values (so cannot be loaded without running code), or belongs to
            another task.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a torch.save zip archive)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain values "
            f"({one_line(err)[:160]}); only load checkpoints you trust with torch.load directly"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({one_line(err)[:120]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning training checkpoint (no state_dict)")
    found = checkpoint_task(checkpoint)
    if task is not None and found != task:
        raise CheckpointError(
            f"{path}: is a {found or 'non-rnn-zoo'} checkpoint, not {task}; use the command "
            f"for its task"
        )
    return checkpoint


def checkpoint_task(checkpoint: dict[str, Any]) -> str | None:
    """The rnn-zoo task a checkpoint was trained for (``hyper_parameters["task"]``), if any."""
    hparams = checkpoint.get("hyper_parameters")
    return hparams.get("task") if isinstance(hparams, dict) else None


def submodule_state(checkpoint: dict[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The ``state_dict`` entries under ``prefix``, with the prefix removed."""
    state = checkpoint["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
