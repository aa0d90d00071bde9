"""LightningCLI for every task (the engine of ``rnn-zoo fit|validate|test|predict``)."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentError
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from zoo.callbacks import FollowFreeCores, LastCheckpoint, PredictionWriter, RunRecipe
from zoo.checkpoint import local_checkpoint, read_checkpoint, require_task, weights_mismatch
from zoo.cli.common import (
    config_paths,
    emulated_bfloat16,
    fused_with_clipping,
    nothing_to_train,
    read_recipe,
)
from zoo.cli.messages import (
    misspelt_key,
    own_checks,
    unrecognized,
    user_error_in,
    wrong_value,
)
from zoo.errors import CheckpointError, UserError
from zoo.files import atomic_path, shipped
from zoo.tasks.runs import Run, RunConfig, describe_run, monitors, recipe_name, run_loggers


def find_task_class(argv: list[str]) -> Any:
    """The task (LightningModule) a command line asks for, from its recipes or ``--model``."""
    class_path = None
    for path in config_paths(argv):
        model = read_recipe(path).get("model")
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


def wandb_mode() -> str:
    """``offline`` (``wandb sync`` uploads later) unless the user asked for ``online`` (an API
    key, or ``WANDB_MODE=online``) or ``disabled`` (``WANDB_MODE=disabled``: CSV only)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is not None:
        return {"run": "online", "dryrun": "offline"}.get(mode, mode)
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def fitting_now(subcommand: str | None) -> bool:
    """``fit``, or a CLI built to fit later (``--init_from``, ``rnn-zoo compare``)."""
    return subcommand in ("fit", None)


LIGHTNING_NAMES = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is synced, then renamed: a crash never leaves
    half a file under a checkpoint's name. They are read back only through
    :func:`zoo.checkpoint.read_checkpoint` (CRCs checked, ``weights_only=True``), local or
    remote: Lightning's own loader unpickles ``http(s)://`` checkpoints in full."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def __init__(self, read: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.read = read if read is not None else {}  # the CLI's checkpoints by local path

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if weights_only is False:
            raise UserError(f"{path}: weights_only=False would unpickle it (it could run code)")
        if map_location in (None, "cpu") and str(path) in self.read:
            return self.read.pop(str(path))  # already checked and loaded; handed over once
        local = local_checkpoint(path)
        return read_checkpoint(local, map_location=map_location or "cpu")


def unlogged(callbacks: list | None) -> list:
    """A recipe's callbacks for a run without a logger: a ``LearningRateMonitor`` (which Lightning
    refuses to start without one, after the data is prepared) is left out, with a note."""
    kept = [cb for cb in callbacks or [] if not isinstance(cb, LearningRateMonitor)]
    if len(kept) < len(callbacks or []):
        print(
            "rnn-zoo: no logger, so the recipe's LearningRateMonitor is left out", file=sys.stderr
        )
    return kept


class ZooCLI(LightningCLI):
    """LightningCLI in subclass mode for model and data, with the task's argument links.

    A task declares ``cli_links = [("data.vocab_size", "vocab_size"), ...]``: attributes of
    the instantiated data module fed into the model's ``__init__``, so recipes never repeat
    them.
    """

    def __init__(
        self, task: Any, args: list[str], run: bool = True, data_state: dict | None = None
    ) -> None:
        self.task, self.args = task, args
        self.data_state = data_state  # the weights' vocabularies, until adopted (see _linked)
        self._read_checkpoints: dict[str, dict] = {}  # by local path, until Lightning takes it
        self._local_checkpoints: dict[str, Path] = {}
        # args may equal sys.argv[1:] (the console script); that is intended.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            super().__init__(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=RunConfig,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
                args=args,
                run=run,
            )
        except ArgumentError as err:
            configs = ", ".join(str(p) for p in config_paths(args)) or "command line"
            message = " ".join(str(err).split())
            why = misspelt_key(message, args) or wrong_value(message, args) or unrecognized(message)
            raise UserError(why or f"{configs}: {message}") from None
        except (ValueError, TypeError) as err:  # jsonargparse wraps what __init__ s raise
            cause = user_error_in(err)
            if cause is None:
                raise
            raise cause from None

    def parse_arguments(self, parser: Any, args: Any) -> None:
        with own_checks():
            super().parse_arguments(parser, args)

    def instantiate_classes(self) -> None:
        with own_checks():
            super().instantiate_classes()

    def before_instantiate_classes(self) -> None:
        command = self.subcommand
        if command in ("validate", "test", "predict") and not self.config[command].get("ckpt_path"):
            print(f"rnn-zoo: warning: {command} without a ckpt_path scores the recipe's "
                  "model as initialised, untrained; pass --ckpt_path CHECKPOINT",
                  file=sys.stderr)  # fmt: skip

    def _set_seed(self) -> None:
        try:
            super()._set_seed()
        except ValueError as err:  # numpy's bounds: "-1 is not in bounds, numpy accepts ..."
            raise UserError(f"seed_everything: {err}") from None

    @property
    def recipe(self) -> str:
        """The recipe's name: ``char_lm/demo`` for a bundled one (W&B groups runs by it)."""
        return recipe_name(config_paths(self.args), shipped("recipes"))

    def _describe_run(self, config: Any, recipe: str) -> Run | None:
        job = self.subcommand or "fit"
        if job not in ("fit", "validate", "test"):
            return None
        resumed = None
        path = config.get("ckpt_path")
        if path is not None and str(path) not in LIGHTNING_NAMES:
            resumed = self._checkpoint(path)[1].get("rnn_zoo_run")
        group = config.get("group")
        return describe_run(yaml.safe_load(recipe), self.recipe, job, resumed, group)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """``--ckpt_path`` checked before the trainer starts (one line naming the file, for a
        missing, damaged, pickled or other-task checkpoint; remote ones fetched, never while
        offline), and ``weights_only`` always on."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("weights_only") is False:
            raise UserError(
                "--weights_only false would unpickle the checkpoint, which can run any code; "
                "rnn-zoo checkpoints never need it: drop the flag"
            )
        if "weights_only" in kwargs:
            kwargs["weights_only"] = True
        path = kwargs.get("ckpt_path")
        if path is not None and str(path) not in LIGHTNING_NAMES:
            local, checkpoint = self._checkpoint(path)  # one-line errors
            task = (getattr(self.model, "hparams", None) or {}).get("task")
            require_task(checkpoint, task, path)
            if subcommand == "fit" and (why := nothing_to_train(self.trainer, checkpoint)):
                raise UserError(f"{path}: {why}")
            strict = getattr(self.model, "strict_loading", True)
            if strict and (
                why := weights_mismatch(self.model.state_dict(), checkpoint["state_dict"])
            ):
                raise CheckpointError(
                    f"{path}: its weights do not fit the recipe's model ({why}); pass the "
                    "settings it was trained with (its run folder's config.yaml has them)"
                )
            kwargs["ckpt_path"] = str(local)  # Lightning takes the checkpoint already read
        return kwargs

    def _checkpoint(self, path: Any) -> tuple[Path, dict]:
        """``--ckpt_path`` fetched (a URL), checked and loaded once for the whole command; kept
        (by its local path) only until Lightning takes it (:class:`SafeCheckpointIO`)."""
        local = self._local_checkpoints.get(str(path))
        if local is None or str(local) not in self._read_checkpoints:
            local = self._local_checkpoints[str(path)] = local_checkpoint(path)
            self._read_checkpoints[str(local)] = read_checkpoint(local, origin=str(path))
        return local, self._read_checkpoints[str(local)]

    def _parse_ckpt_path(self) -> None:
        # Lightning would re-apply the checkpoint's hyper_parameters as __init__ arguments;
        # ours are the model's JSON config (for safe loading): the recipe stays the truth.
        return

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--group", type=str | None, default=None, help="W&B group (default: the recipe)"
        )
        parser.add_argument(
            "--log_model",
            type=bool | Literal["all"],
            default=False,
            help="Upload checkpoints to W&B as artifacts (true: at the end, all: every "
            "checkpoint); W&B online only",
        )
        for source, target in getattr(self.task, "cli_links", ()):
            group, attribute = source.split(".", 1)
            parser.link_arguments(
                group,
                f"model.init_args.{target}",
                compute_fn=functools.partial(self._linked, attribute),
                apply_on="instantiate",
            )

    def _linked(self, attribute: str, datamodule: Any) -> Any:
        """``datamodule.<attribute>`` for the model's ``__init__``. A fit that starts from
        weights (``--init_from``) reads its text in their vocabularies: the data module takes
        their ``data_state`` first, so the sizes linked are theirs, not new ones built."""
        if self.data_state is not None:  # once: the first link adopts, the others read
            datamodule.load_state_dict(self.data_state)
            self.data_state = None
        return getattr(datamodule, attribute)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> pl.Trainer:
        listed = list(config.get("callbacks") or []) + list(callbacks)
        config_now = self.config.get(str(self.subcommand), self.config)  # run=False: no subcommand
        recipe = self._parser(self.subcommand).dump(config_now, skip_none=False)
        run = self._describe_run(config_now, recipe)
        config["logger"] = self._loggers(config.get("logger"), run, config_now.get("log_model"))
        if not config["logger"]:
            config["callbacks"] = unlogged(config.get("callbacks"))
        added = self._added_callbacks(config, listed, run)
        callbacks = [*callbacks, *added, RunRecipe(recipe, run.to_dict() if run else None)]
        self.save_config_kwargs = {"overwrite": True, "run": run, "recipe": self.recipe}
        if not config.get("plugins"):
            config["plugins"] = [SafeCheckpointIO(self._read_checkpoints)]
        trainer = super()._instantiate_trainer(config, callbacks)
        if warning := emulated_bfloat16(trainer.precision, trainer.accelerator):
            rank_zero_info(warning)
        if fitting_now(self.subcommand) and (
            why := fused_with_clipping(config_now, trainer) or nothing_to_train(trainer)
        ):
            raise UserError(why)
        return trainer

    @staticmethod
    def _loggers(logger: Any, run: Run | None, log_model: Any) -> Any:
        """rnn-zoo's loggers (W&B and a CSV file in the run folder) where the recipe names
        none; what it names otherwise. No W&B run for predict."""
        if run is None:
            return logger or False
        if logger not in (None, True):
            return logger
        mode = wandb_mode()
        return run_loggers(run, mode == "offline", log_model, wandb=mode != "disabled")

    def _added_callbacks(self, config: dict[str, Any], listed: list, run: Run | None) -> list:
        """What rnn-zoo adds unless the recipe brings its own: a rich progress bar (unless bars
        are off); learning rate and gradient norms (a logged fit); threads that follow the free
        cores (a fit, unless ``OMP_NUM_THREADS`` pins them); the prediction writer (predict);
        ``last.ckpt``, the final weights whatever ends the run (a fit that checkpoints)."""

        def missing(kind: type) -> bool:
            return not any(isinstance(cb, kind) for cb in listed)

        fitting = fitting_now(self.subcommand)
        added: list = []
        if config.get("enable_progress_bar") is not False and missing(ProgressBar):
            added.append(RichProgressBar())
        if run is not None and run.job_type == "fit" and config.get("logger"):
            added += monitors(listed)
        if fitting and "OMP_NUM_THREADS" not in os.environ and missing(FollowFreeCores):
            added.append(FollowFreeCores())
        if self.subcommand == "predict" and missing(PredictionWriter):
            added.append(PredictionWriter())
        if fitting and config.get("enable_checkpointing") is not False and missing(LastCheckpoint):
            added.append(LastCheckpoint())
        return added
