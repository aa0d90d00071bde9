"""LightningCLI for every task (the engine of ``rnn-zoo fit|validate|test|predict``)."""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentError
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningCLI

from zoo.errors import UserError
from zoo.files import atomic_path


def config_paths(argv: list[str]) -> list[Path]:
    """The ``--config`` files of a command line."""
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            paths.append(Path(arg.split("=", 1)[1]))
    return paths


def find_task_class(argv: list[str]) -> Any:
    """The task (LightningModule) a command line asks for, from its recipes or ``--model``."""
    class_path = None
    for path in config_paths(argv):
        if not path.is_file():
            raise UserError(
                f"{path}: no such recipe file; 'rnn-zoo recipes' lists the bundled ones"
            )
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict) and "class_path" in model:
            class_path = model["class_path"]
    for i, arg in enumerate(argv):
        if arg in ("--model", "--model.class_path") and i + 1 < len(argv):
            class_path = argv[i + 1]
    if class_path is None:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"model class_path {class_path!r} cannot be imported") from None


def wandb_offline() -> bool:
    """W&B stays offline (``wandb sync`` uploads later) unless the user asked to go online."""
    mode = os.environ.get("WANDB_MODE")
    if mode is not None:
        return mode not in ("online", "run")
    return not os.environ.get("WANDB_API_KEY")


def default_logger() -> dict[str, Any]:
    return {
        "class_path": "pytorch_lightning.loggers.WandbLogger",
        "init_args": {"project": "rnn-zoo", "save_dir": "runs", "offline": wandb_offline()},
    }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is synced, then renamed: a crash never leaves
    half a file under a checkpoint's name."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class ZooCLI(LightningCLI):
    """LightningCLI in subclass mode for model and data, with the task's argument links.

    A task declares ``cli_links = [("data.vocab_size", "vocab_size"), ...]``: attributes of
    the instantiated data module fed into the model's ``__init__``, so recipes never repeat
    them.
    """

    def __init__(self, task: Any, args: list[str], run: bool = True) -> None:
        self.task = task
        # args may equal sys.argv[1:] (the console script); that is intended.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            super().__init__(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                trainer_defaults={"logger": default_logger()},
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
                args=args,
                run=run,
            )
        except ArgumentError as err:
            configs = ", ".join(str(p) for p in config_paths(args)) or "command line"
            message = " ".join(str(err).split())
            raise UserError(f"{configs}: {message}") from None

    def _parse_ckpt_path(self) -> None:
        # Lightning would re-apply the checkpoint's hyper_parameters as __init__ arguments;
        # ours are the model's JSON config (for safe loading): the recipe stays the truth.
        return

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in getattr(self.task, "cli_links", ()):
            parser.link_arguments(source, f"model.init_args.{target}", apply_on="instantiate")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> pl.Trainer:
        # A rich progress bar unless the recipe brings its own or turns bars off.
        wanted = config.get("enable_progress_bar") is not False
        listed = list(config.get("callbacks") or []) + list(callbacks)
        if wanted and not any(isinstance(cb, ProgressBar) for cb in listed):
            callbacks = [*callbacks, RichProgressBar()]
        if not config.get("plugins"):
            config["plugins"] = [AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)
