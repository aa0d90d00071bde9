"""The ``rnn-zoo`` command.

``rnn-zoo fit|validate|test|predict --config RECIPE`` is LightningCLI; the other subcommands
(``sample``, ``diagnose``, ``prepare``) are small argparse programs. Errors that are the user's to
fix (:class:`zoo.errors.UserError`) print as one line and exit with status 2; set
``RNN_ZOO_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PREPARE = {
    "shakespeare": "zoo.prepare.shakespeare",
    "bible": "zoo.prepare.bible",
    "shapes": "zoo.prepare.shapes",
    "tuxpaint": "zoo.prepare.tuxpaint",
    "coco": "datamodules.coco_download",
    "wmt14": "datamodules.wmt14",
}
USAGE = """usage: rnn-zoo COMMAND [...]

commands:
  fit | validate | test | predict --config RECIPE.yaml   train / evaluate (LightningCLI)
  sample --checkpoint PATH [--prime TEXT] ...           generate text from a char model
  translate --checkpoint PATH [--beam N] < IN > OUT     translate lines with a translation model
  caption --checkpoint PATH [--beam N] IMAGE...         caption pictures with a captioning model
  diagnose gradient-flow [--out DIR]                    the vanishing-gradient plot
  prepare {shakespeare,bible,shapes,tuxpaint,coco,wmt14} ...  build corpora / fetch COCO, WMT'14
  pretrained list | info NAME | download NAME            published weights
  export --checkpoint RUN.ckpt --name NAME              a checkpoint -> safetensors + entry
  demo                                                  train the demo char model, then sample

Run 'rnn-zoo COMMAND --help' for a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    from zoo.errors import UserError

    try:
        if command in LIGHTNING_COMMANDS:
            return run_lightning(argv)
        if command == "sample":
            from zoo.generate import main as sample_main

            return sample_main(rest)
        if command == "translate":
            from zoo.translate import main as translate_main

            return translate_main(rest)
        if command == "caption":
            from zoo.caption import main as caption_main

            return caption_main(rest)
        if command == "diagnose":
            from zoo.diagnostics import main as diagnose_main

            return diagnose_main(rest)
        if command == "prepare":
            return run_prepare(rest)
        if command == "pretrained":
            from zoo.hub import pretrained_main

            return pretrained_main(rest)
        if command == "export":
            from zoo.hub import export_main

            return export_main(rest)
        if command == "demo":
            return run_demo(rest)
    except UserError as err:
        return _fail(err)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        return _fail(f"{err.filename}: {err.strerror}")
    print(f"rnn-zoo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _fail(message: object) -> int:
    if os.environ.get("RNN_ZOO_DEBUG"):
        raise  # noqa: PLE0704 - re-raise the exception being handled
    print(f"rnn-zoo: error: {message}", file=sys.stderr)
    return 2


def run_prepare(argv: list[str]) -> int:
    if not argv or argv[0] not in PREPARE:
        print(f"usage: rnn-zoo prepare {{{','.join(PREPARE)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(PREPARE[argv[0]])
    return module.main(argv[1:])


def run_demo(argv: list[str]) -> int:
    """Train the demo recipe (about 5 minutes on 2 CPU cores), report val/bpc, then sample."""
    parser = argparse.ArgumentParser(prog="rnn-zoo demo", description=run_demo.__doc__)
    parser.add_argument("--recipe", type=Path, default=RECIPES / "char_lm" / "demo.yaml")
    parser.add_argument("--max-time", default=None, help="DD:HH:MM:SS, overrides the recipe")
    parser.add_argument("--prime", default="\n")
    parser.add_argument("--length", type=int, default=600)
    args = parser.parse_args(argv)
    recipe = ["--config", str(args.recipe)]
    extra = ["--trainer.max_time", args.max_time] if args.max_time else []
    run_lightning(["fit", *recipe, *extra])
    checkpoint = Path("runs/char_lm/demo/checkpoints/last.ckpt")
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    run_lightning(["validate", *recipe, "--ckpt_path", str(checkpoint), *quiet])
    from zoo.generate import main as sample_main

    print(f"\n--- 600 characters sampled from {checkpoint} (temperature 0.8) ---")
    return sample_main(
        [
            "--checkpoint",
            str(checkpoint),
            "--prime",
            args.prime,
            "--length",
            str(args.length),
            "--seed",
            "0",
        ]
    )


def run_lightning(argv: list[str]) -> int:
    """LightningCLI with the task's links (e.g. the data's vocabulary size into the model)."""
    from zoo.lightning_cli import ZooCLI, find_task_class

    task = find_task_class(argv)
    ZooCLI(task, args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
