"""``rnn-zoo demo``: train the demo recipe (about 5 minutes on 2 CPU cores), report val/bpc
from the final weights, then sample from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli import lightning, sample
from zoo.cli.lightning import RECIPES
from zoo.errors import UserError

CHECKPOINT = Path("runs/char_lm/demo/checkpoints/last.ckpt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnn-zoo demo", description=__doc__)
    parser.add_argument("--recipe", type=Path, default=RECIPES / "char_lm" / "demo.yaml")
    parser.add_argument("--max-time", default=None, help="DD:HH:MM:SS, overrides the recipe")
    parser.add_argument("--prime", default="\n")
    parser.add_argument("--length", type=int, default=600)
    args = parser.parse_args(argv)
    if not 0 <= args.length <= 1_000_000 or not args.prime:  # checked before 5 minutes of work
        raise UserError("--length must be between 0 and 1,000,000 and --prime not empty")
    recipe = ["--config", str(args.recipe)]
    extra = ["--trainer.max_time", args.max_time] if args.max_time else []
    lightning.main(["fit", *recipe, *extra])
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    lightning.main(["validate", *recipe, "--ckpt_path", str(CHECKPOINT), *quiet])
    print(f"\n--- {args.length} characters sampled from {CHECKPOINT} (temperature 0.8) ---")
    sampling = ["--prime", args.prime, "--length", str(args.length), "--seed", "0"]
    return sample.main(["--checkpoint", str(CHECKPOINT), *sampling])
