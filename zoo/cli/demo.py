"""``rnn-zoo demo``: train the demo recipe (about 5 minutes on 2 CPU cores), report val/bpc
from the final weights, then sample from them.

``--precision auto`` (the default) trains in bf16 mixed precision where the machine computes
bfloat16 natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16): on 2 such CPU cores that
is about 1.5 times the steps of float32 in the same 4.5 minutes. Elsewhere bfloat16 would be
emulated, slower than float32, so it trains in float32 there. The final val/bpc is computed in
float32 either way."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli import lightning, sample
from zoo.cli.common import check_char_lm, check_duration, native_bfloat16, read_recipe
from zoo.cli.lightning import RECIPES
from zoo.errors import UserError

if TYPE_CHECKING:
    import pytorch_lightning as pl


def training_precision(choice: str, recipe: Path) -> tuple[str | None, str]:
    """Lightning's precision for ``--precision choice`` (None: leave the recipe's) and why."""
    if choice == "32":
        return "32-true", "float32, as asked"
    if choice == "bf16":
        return "bf16-mixed", "bf16 mixed precision, as asked"
    config = read_recipe(lightning.recipe_path(str(recipe)))
    if isinstance(config.get("trainer"), dict) and "precision" in config["trainer"]:
        return None, f"the recipe's precision ({config['trainer']['precision']})"
    reason = native_bfloat16()
    if reason:
        return "bf16-mixed", f"bf16 mixed precision ({reason}; --precision 32 for float32)"
    return None, "float32 (bfloat16 is not native here)"


def check_prime(prime: str, recipe: list[str]) -> None:
    """Refuse a ``--prime`` with characters the recipe's training text lacks, before training
    (sampling would refuse it only after the whole budget)."""
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    argv = [*lightning.resolve_configs(recipe), "--trainer.logger", "false"]  # no run folder
    cli = ZooCLI(find_task_class(argv), args=argv, run=False)  # reads the data: its vocabulary
    vocab = getattr(cli.datamodule, "vocab", None)
    if vocab is None or not hasattr(vocab, "encode"):
        raise UserError(f"{recipe[-1]}: the demo trains a char-LM recipe, not this one")
    try:
        vocab.encode(prime, strict=True)
    except ValueError as err:
        raise UserError(f"--prime: {err}") from None


def check_recipe(recipe: Path) -> None:
    """Refuse, before training, a recipe of another task, or one whose fit would save no
    last.ckpt to score."""
    config = read_recipe(lightning.recipe_path(str(recipe)))
    check_char_lm(recipe, config, "the demo trains and samples")
    trainer = config.get("trainer")
    if isinstance(trainer, dict) and trainer.get("enable_checkpointing") is False:
        why = "trainer.enable_checkpointing is false: its fit would save no final weights to score"
        raise UserError(f"{recipe}: {why}; set it to true")


def final_checkpoint(trainer: pl.Trainer, recipe: Path) -> Path:
    """The ``last.ckpt`` that the demo's own fit wrote, where its recipe puts it. A fit that took
    no step is refused: an older file there would be scored and sampled as if it were this run's.
    """
    from zoo.callbacks import LastCheckpoint

    last = [cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
    if not last:
        why = "its fit saves no last.ckpt (checkpointing is off): no final weights to score"
        raise UserError(f"{recipe}: {why}; turn trainer.enable_checkpointing on")
    if trainer.global_step == 0:
        why = "the fit ended before its first step: no new weights to score and sample"
        raise UserError(f"{recipe}: {why}; give it a longer --max-time")
    return last[0].path(trainer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnn-zoo demo", description=__doc__)
    parser.add_argument("--recipe", type=Path, default=RECIPES / "char_lm" / "demo.yaml")
    parser.add_argument(
        "--precision", choices=("auto", "32", "bf16"), default="auto",
        help="auto: bf16 mixed precision where the machine computes bfloat16 natively",
    )  # fmt: skip
    parser.add_argument("--max-time", default=None, help="DD:HH:MM:SS, overrides the recipe")
    parser.add_argument("--prime", default="\n")
    parser.add_argument("--length", type=int, default=600)
    args = parser.parse_args(argv)
    if not 0 <= args.length <= 1_000_000 or not args.prime:  # checked before 5 minutes of work
        raise UserError("--length must be between 0 and 1,000,000 and --prime not empty")
    check_duration("--max-time", args.max_time)
    check_recipe(args.recipe)
    recipe = ["--config", str(args.recipe)]
    if args.prime != "\n":
        check_prime(args.prime, recipe)
    precision, why = training_precision(args.precision, args.recipe)
    print(f"rnn-zoo demo: training in {why}", flush=True)
    extra = ["--trainer.max_time", args.max_time] if args.max_time else []
    extra += ["--trainer.precision", precision] if precision else []
    checkpoint = final_checkpoint(lightning.trained(["fit", *recipe, *extra]), args.recipe)
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    lightning.main(["validate", *recipe, "--ckpt_path", str(checkpoint), *quiet])
    print(f"\n--- {args.length} characters sampled from {checkpoint} (temperature 0.8) ---")
    sampling = ["--prime", args.prime, "--length", str(args.length), "--seed", "0"]
    return sample.main(["--checkpoint", str(checkpoint), *sampling])
