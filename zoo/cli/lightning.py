"""``rnn-zoo fit|validate|test|predict --config RECIPE``: LightningCLI for every task.

The recipe's ``model.class_path`` names the task (a LightningModule in :mod:`zoo.tasks`); the
task's ``cli_links`` feed what the data knows (a vocabulary size) into the model. ``--config``
takes a path or a bundled recipe's name (``char_lm/demo``; ``rnn-zoo recipes`` lists them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.files import shipped

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
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
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    argv = resolve_configs(argv)
    ZooCLI(find_task_class(argv), args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
