"""``rnn-zoo fit|validate|test|predict --config RECIPE``: LightningCLI for every task.

The recipe's ``model.class_path`` names the task (a LightningModule in :mod:`zoo.tasks`); the
task's ``cli_links`` feed what the data knows (a vocabulary size) into the model. ``--config``
takes a path or a bundled recipe's name (``char_lm/demo``; ``rnn-zoo recipes`` lists them).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import UserError
from zoo.files import shipped

if TYPE_CHECKING:
    import pytorch_lightning as pl

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
#: ``Trainer.fit`` arguments that are no subcommand options (LightningCLI fills them itself).
FIT_INPUTS = {"self", "model", "train_dataloaders", "val_dataloaders", "datamodule"}
RECIPES = shipped("recipes")
HELP = """usage: rnn-zoo {command} --config RECIPE [--KEY VALUE ...] [--print_config]

LightningCLI {command} with a recipe: a path, or a bundled recipe's name such as char_lm/demo
(see 'rnn-zoo recipes'). Any recipe key can be overridden on the command line, e.g.
  rnn-zoo {command} --config char_lm/demo --trainer.max_steps 100 --data.batch_size 16
'rnn-zoo {command} --config RECIPE --help' lists every option of that recipe's classes."""


def recipe_path(value: str) -> str:
    """A ``--config`` value as a file: the path itself, else the bundled recipe of that name."""
    if Path(value).is_file():
        return value
    name = value.removesuffix(".yaml").removeprefix("recipes/")
    bundled = RECIPES / f"{name}.yaml"
    return str(bundled) if bundled.is_file() else value


def resolve_configs(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config`` value turned into a file path (:func:`recipe_path`)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = recipe_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + recipe_path(arg.split("=", 1)[1])
    return out


def main(argv: list[str]) -> int:
    """``argv`` starts with the subcommand (``fit``, ``validate``, ``test``, ``predict``)."""
    command, rest = argv[0], argv[1:]
    if any(a in ("-h", "--help") for a in rest) and not any(
        a in ("--config", "-c") or a.startswith("--config=") for a in rest
    ):
        print(HELP.format(command=command))  # the short help, without importing Lightning
        return 0
    trained(argv)
    return 0


def trained(argv: list[str]) -> pl.Trainer:
    """Runs ``argv`` as :func:`main` does (not its ``--help``); the Trainer that ran it."""
    options = ("--init_from", "--ckpt_path")
    if all(take_option(argv, option)[1] is not None for option in options):
        raise UserError(
            "--init_from and --ckpt_path: give one; --ckpt_path resumes a run where it stopped, "
            "--init_from starts a new fit from the weights alone"
        )
    # A checkpoint's recipe is written to a scratch folder for the parser, removed when done.
    with tempfile.TemporaryDirectory(prefix="rnn-zoo-recipe-") as scratch:
        return run(argv[0], with_saved_recipe(resolve_configs(argv), Path(scratch)))


def run(command: str, argv: list[str]) -> pl.Trainer:
    """:func:`trained` once ``argv``'s recipes are files."""
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    argv, init_from = take_option(argv, "--init_from")
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from zoo.tasks.runs import finish_wandb

    task = find_task_class(argv)
    failed = True
    try:
        weights = None
        if init_from is not None:  # fine-tuning: the weights only, a fresh optimizer and schedule
            from zoo.tasks.common import InitWeights

            if command != "fit":
                raise UserError("--init_from starts a new fit; for evaluation use --ckpt_path")
            weights = InitWeights(init_from, getattr(task, "task_name", None))
        args = argv if weights is None else argv[1:]
        data_state = None if weights is None else weights.data_state  # new text, their vocabulary
        cli = ZooCLI(task, args=args, run=weights is None, data_state=data_state)
        if weights is not None:
            weights.load_into(cli.model, cli.datamodule)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        failed = False
    except MisconfigurationException as err:  # a trainer setting Lightning refuses
        raise UserError(f"trainer: {' '.join(str(err).split())}") from None
    finally:
        finish_wandb(failed)  # one W&B run per command, even when one process runs several
    return cli.trainer


def take_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """``argv`` without ``name VALUE`` (or ``name=VALUE``), and the value."""
    out, value, skip = [], None, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == name and i + 1 < len(argv):
            value, skip = argv[i + 1], True
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
    return out, value


def with_saved_recipe(argv: list[str], scratch: Path) -> list[str]:
    """``argv`` with ``--config <the checkpoint's recipe>`` when it names a ``--ckpt_path`` (or
    ``--init_from``) but no recipe: a checkpoint carries the run it belongs to, and the command
    line's other options still apply on top of it. The recipe is written into ``scratch``."""
    if any(a in ("--config", "-c") or a.startswith("--config=") for a in argv):
        return argv
    _, path = take_option(argv, "--ckpt_path")
    init_from = take_option(argv, "--init_from")[1]
    if path is None and init_from is not None:
        from zoo.predict import is_published

        if is_published(init_from):  # fine-tuning published weights: the recipe they came from
            return [argv[0], "--config", recipe_path(published_recipe(init_from)), *argv[1:]]
    path = path or init_from
    if path is None:
        return argv
    from zoo.checkpoint import local_checkpoint, read_checkpoint

    recipe = read_checkpoint(local_checkpoint(path), origin=path).get("rnn_zoo_recipe")
    if not isinstance(recipe, str):
        raise UserError(f"{path}: holds no recipe (saved before rnn-zoo 0.2); add --config RECIPE")
    if path == init_from:  # a new fit: drop the old run's Trainer.fit arguments (ckpt_path...)
        import inspect

        import yaml
        from pytorch_lightning import Trainer

        config = yaml.safe_load(recipe)
        for key in set(inspect.signature(Trainer.fit).parameters) - FIT_INPUTS:
            config.pop(key, None)
        recipe = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    saved = scratch / "recipe.yaml"
    saved.write_text(recipe, encoding="utf-8")
    return [argv[0], "--config", str(saved), *argv[1:]]


def published_recipe(name_or_path: str) -> str:
    """The recipe a published model was trained with, from its manifest entry."""
    from zoo import hub

    name = name_or_path
    if name_or_path.endswith(".safetensors"):
        from zoo.published import read_file

        name = read_file(name_or_path).name or ""
        if name not in hub.list_pretrained():
            raise UserError(f"{name_or_path}: not a published model's file; add --config RECIPE")
    recipe = hub.pretrained_info(name).get("recipe")
    if not recipe:
        raise UserError(f"{name_or_path}: its manifest entry names no recipe; add --config RECIPE")
    return str(recipe)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
