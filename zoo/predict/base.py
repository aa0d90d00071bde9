"""What every predictor shares: built from a training checkpoint or a published file, the same
way, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from zoo.checkpoint import read_checkpoint, submodule_state
from zoo.errors import CheckpointError, UserError
from zoo.files import one_line
from zoo.published import PublishedFile, file_meta

P = TypeVar("P", bound="Predictor")

#: What a config that does not fit its weights raises while a model is being rebuilt.
BUILD_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError)


class Predictor:
    """A model in eval mode and what using it needs (a vocabulary, a tokeniser, settings).

    Subclasses set :attr:`task` and :attr:`extras` and implement :meth:`build`.

    Attributes:
        model: the ``nn.Module``, in eval mode.
        meta: where it came from: the manifest entry of a published model, or what the file says.
    """

    #: The rnn-zoo task, as checkpoints and published files name it.
    task: ClassVar[str]
    #: Keys of a training checkpoint (beside the weights) that rebuilding needs; a published file
    #: carries them as its extras.
    extras: ClassVar[tuple[str, ...]] = ()
    #: Those of :attr:`extras` that must be there (others default to empty).
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.meta = dict(meta or {})

    @classmethod
    def build(cls: type[P], config: Any, state: dict[str, Tensor], extras: dict[str, Any]) -> P:
        """The predictor of a model ``config`` with weights ``state`` and the task's ``extras``.

        Raises:
            KeyError, TypeError, ValueError, RuntimeError, AttributeError: parts that do not fit.
        """
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self: P, device: str | torch.device) -> P:
        """Move the model to ``device`` (checked to exist, see :func:`resolve_device`)."""
        self.model.to(resolve_device(device))
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls: type[P], path: str | Path, device: str | torch.device = "cpu") -> P:
        """The predictor of a training checkpoint (read with ``weights_only=True``).

        Raises:
            CheckpointError: not a checkpoint of this task, or one saved before training began.
        """
        return cls.from_checkpoint_dict(read_checkpoint(path, cls.task), path).to(device)

    @classmethod
    def from_checkpoint_dict(cls: type[P], checkpoint: dict[str, Any], path: str | Path) -> P:
        """As :meth:`from_checkpoint`, for a checkpoint already read (on the CPU)."""
        missing = [key for key in cls.required if not checkpoint.get(key)]
        if missing:
            raise CheckpointError(
                f"{path}: has no {', '.join(missing)}; was it saved before training began?"
            )
        extras = {key: checkpoint.get(key) or {} for key in cls.extras}
        config = (checkpoint.get("hyper_parameters") or {}).get("model")
        predictor = _build(cls, path, config, submodule_state(checkpoint), extras)
        predictor.meta = {"task": cls.task, "file": str(path)}
        return predictor

    @classmethod
    def from_published(
        cls: type[P], file: PublishedFile, path: Path, meta: dict[str, Any] | None = None
    ) -> P:
        """The predictor of a published file (see :mod:`zoo.published`)."""
        predictor = _build(cls, path, file.config, file.state, file.extras)
        predictor.meta = (
            meta if meta is not None else file_meta(file.name, file.task, path, predictor.model)
        )
        return predictor


def _build(cls: type[P], path: Any, config: Any, state: dict, extras: dict) -> P:
    try:
        return cls.build(config, state, extras)
    except BUILD_ERRORS as err:
        message = f"{type(err).__name__}: {one_line(err)}"
        raise CheckpointError(f"{path}: config does not match the weights ({message})") from None


def resolve_device(name: str | torch.device | None) -> torch.device:
    """A device that exists here: ``None`` or ``"auto"`` is CUDA when there is a GPU, else CPU.

    Raises:
        UserError: not a device name, or CUDA asked for where there is none.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {name!r} is not a device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available; use --device cpu")
    return device
