"""``rnn-zoo compare``: the lecture's comparison of cells as one command. Each core trains from
the same recipe, on the same data, for the same wall-clock budget; then each is tested from its
best checkpoint. The runs share one W&B group; the folder gets ``compare.csv`` (every run),
``compare.md`` (one row per core: parameters, chars/s, best val, test, seconds) and
``compare.png`` (val against time and against steps), readable without any account.

    rnn-zoo compare --config char_lm/demo --cores RNN GRU LSTM MinGRU --max-time 00:00:02:00
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zoo.cli.common import check_char_lm, check_duration
from zoo.errors import UserError
from zoo.files import new_folders, write_text

DEFAULT_CORES = ["RNN", "GRU", "LSTM", "LayerNormLSTM", "MinGRU", "MinLSTM", "SLSTM"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="a char-LM recipe (path or bundled name)")
    parser.add_argument("--cores", nargs="+", default=DEFAULT_CORES, metavar="CORE",
                        help="zoo.cores classes (default: %(default)s)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="runs per core (seed, seed + 1...)")
    parser.add_argument("--max-time", default=None, help="DD:HH:MM:SS per run (default: recipe's)")
    parser.add_argument("--metric", default="bpc", help="the val/ and test/ value compared: "
                        "bpc (default), loss or ppl")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="default: runs/compare/<recipe>")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="-- then recipe overrides for every run, e.g. -- --data.batch_size 64")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 100:
        raise UserError(f"--seeds {args.seeds}: give 1 to 100 runs per core")
    if args.metric not in ("bpc", "loss", "ppl"):
        raise UserError(f"--metric {args.metric!r}: choose bpc, loss or ppl (a char LM's values)")
    check_duration("--max-time", args.max_time)
    args.overrides = [a for a in args.overrides if a != "--"]
    return args


def check_cores(names: list[str]) -> list[type]:
    """The ``zoo.cores`` classes named, each once; one line listing the known ones otherwise."""
    from zoo.cores import CORES as known

    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(
            f"--cores: unknown core {unknown[0]!r}; choose from {', '.join(sorted(known))}"
        )
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UserError(f"--cores: {twice} is named twice; name each core once")
    return [known[n] for n in names]


def train_one(argv: list[str], metric: str, folder: Path):
    """Fit one core, then test its best checkpoint: a :class:`zoo.runlog.Trained` and its
    validation curve ``[(step, seconds, value)]``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from zoo.callbacks import ElapsedTime
    from zoo.cli.zoo_cli import ZooCLI, find_task_class
    from zoo.runlog import Trained
    from zoo.tasks.runs import finish_wandb

    failed = True
    try:
        cli = ZooCLI(find_task_class(argv), args=argv, run=False)
        trainer, task, data = cli.trainer, cli.model, cli.datamodule
        clock = ElapsedTime(f"val/{metric}")
        trainer.callbacks.append(clock)
        for callback in trainer.checkpoint_callbacks:  # each run keeps its own best.ckpt
            if isinstance(callback, ModelCheckpoint):
                callback.dirpath = str(folder / "checkpoints")
        trainer.fit(task, datamodule=data)
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks
                     if isinstance(c, ModelCheckpoint) and c.best_model_path), None)  # fmt: skip
        trainer.test(task, datamodule=data, ckpt_path=best, verbose=False)
        failed = False
    finally:
        finish_wandb(failed)
    if not clock.points:
        raise UserError(f"{folder}: no validation ran within the budget; raise --max-time")
    chars = getattr(data, "batch_size", 1) * getattr(data, "seq_len", 1) * trainer.global_step
    result = Trained(
        core=type(task.model.core).__name__,
        seed=int(cli.config.get("seed_everything") or 0),
        params=sum(p.numel() for p in task.model.parameters()),
        steps=trainer.global_step,
        chars_per_s=chars / max(clock.train_seconds, 1e-9),
        best_val=min(v for _, _, v in clock.points),
        test=float(trainer.callback_metrics[f"test/{metric}"]),
        seconds=clock.train_seconds,
    )
    return result, clock.points


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from zoo.cli.common import read_recipe
    from zoo.cli.lightning import recipe_path
    from zoo.files import check_folder
    from zoo.plots import compare_figure, save_figure
    from zoo.runlog import compare_csv, compare_markdown

    recipe = Path(recipe_path(args.config))
    config = read_recipe(recipe)
    check_char_lm(recipe, config, "compare swaps the core of")
    seed0 = config.get("seed_everything") or 0
    if isinstance(seed0, bool) or not isinstance(seed0, int):  # true: Lightning draws a seed
        raise UserError(
            f"{recipe}: seed_everything is {seed0!r}; compare seeds its runs from an integer"
        )
    classes = check_cores(args.cores)
    out = args.out or Path("runs") / "compare" / recipe.stem
    check_folder(out, "--out")
    with new_folders(out):  # removed again if the first run fails before writing in it
        group = f"compare/{recipe.stem}/{time.strftime('%Y%m%d-%H%M%S')}"
        runs, curves = [], {}
        for seed in range(seed0, seed0 + args.seeds):
            for cls in classes:
                name = f"{cls.__name__}-s{seed}"
                folder = out / name
                argv_one = ["--config", str(recipe), *args.overrides,
                            "--model.init_args.core", f"zoo.cores.{cls.__name__}",
                            "--seed_everything", str(seed), "--group", group,
                            "--trainer.default_root_dir", str(folder)]  # fmt: skip
                if args.max_time:
                    argv_one += ["--trainer.max_time", args.max_time]
                print(f"--- {name}: training ---", flush=True)
                result, points = train_one(argv_one, args.metric, folder)
                runs.append(result)
                curves.setdefault(cls.__name__, points)  # the first seed's curve is drawn
                print(f"--- {name}: best val/{args.metric} {result.best_val:.3f}, "
                      f"test {result.test:.3f}, {result.chars_per_s:,.0f} chars/s ---", flush=True)  # fmt: skip
        table = compare_markdown(runs, args.metric)
        write_text(out / "compare.csv", compare_csv(runs))
        write_text(out / "compare.md", table)
        save_figure(compare_figure(curves, f"val/{args.metric}"), out / "compare.png")
    print(table)
    print(f"{out}/compare.md, compare.csv, compare.png (W&B group {group})")
    return 0
