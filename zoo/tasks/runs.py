"""One record per run: its name, id and folder, the loggers that write into that folder, and
the resolved config, saved there once and sent to W&B as the run's config.

A run of ``rnn-zoo fit --config char_lm/demo`` lives in ``<default_root_dir>/<run id>/``::

    runs/char_lm/demo/20261201-143512-3fa9/
        config.yaml     the resolved recipe (every init argument, the seed, the trainer)
        metrics.csv     every logged value (CSVLogger): what ``rnn-zoo plot`` draws
        wandb/          the W&B run (offline unless online was asked for: ``wandb sync``)

W&B names the run ``<recipe>-<core>-s<seed>``, groups it by recipe, tags it with task and core,
and sets the job type to the subcommand. Resuming with ``--ckpt_path`` continues the same run
(same id and folder, W&B ``resume="allow"``): checkpoints carry the run (``rnn_zoo_run``).
A fit that fails before it logs or saves anything removes its folder again.
"""

from __future__ import annotations

import csv
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info

from zoo.callbacks import GradientNorms
from zoo.errors import UserError
from zoo.files import write_text

#: Environment variable holding the run id, so that every DDP rank agrees on it (the launcher's
#: child processes inherit it; on a cluster, set it once for all ranks).
RUN_ID_VARIABLE = "RNN_ZOO_RUN_ID"


@dataclass(frozen=True)
class Run:
    """What identifies a run and where it writes."""

    id: str
    name: str  # <recipe>-<core>-s<seed>
    group: str  # the recipe
    tags: tuple[str, ...]  # task, core
    job_type: str  # fit, validate, test
    folder: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": list(self.tags)}


def new_run_id() -> str:
    """Sortable and unique: ``20261201-143512-3e7a``, the start time, then its milliseconds in
    three hex digits (so runs of one second still sort in the order they started) and a random
    one."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{int(now % 1 * 1000):03x}{secrets.token_hex(1)[0]}"


def shared_run_id() -> str:
    """The run id every rank of this launch shares: the parent makes it, its children read it."""
    inherited = os.environ.get(RUN_ID_VARIABLE)
    child = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0"
    if inherited and child:
        return inherited
    run_id = new_run_id()
    os.environ[RUN_ID_VARIABLE] = run_id
    return run_id


def recipe_name(paths: list[Path], recipes: Path) -> str:
    """``char_lm/demo`` for a bundled recipe, the file's stem for another; the last one given."""
    if not paths:
        return "command-line"
    path = paths[-1].resolve()
    try:
        return path.relative_to(recipes.resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def core_names(config: Any) -> list[str]:
    """The recurrent cores a config names (``zoo.cores.LSTM`` -> ``lstm``), in order, once each."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            path = node.get("class_path")
            if isinstance(path, str) and path.startswith("zoo.cores."):
                name = path.rsplit(".", 1)[1].lower()
                if name not in found:
                    found.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def task_name(config: Mapping[str, Any]) -> str:
    """``char_lm`` for ``zoo.tasks.char_lm.CharLanguageModel``."""
    path = str((config.get("model") or {}).get("class_path", ""))
    parts = path.split(".")
    return parts[-2] if len(parts) >= 2 else path or "model"


def describe_run(
    config: Mapping[str, Any],
    recipe: str,
    job_type: str,
    resumed: Mapping[str, Any] | None = None,
    group: str | None = None,
) -> Run:
    """The run a resolved config starts. A fit resumed from a checkpoint continues the run the
    checkpoint belongs to; validating or testing one starts a new run under its name and group.
    ``group`` replaces the recipe as the W&B group (``rnn-zoo compare`` groups its runs).
    """
    if resumed and job_type == "fit":
        return Run(**{**resumed, "tags": tuple(resumed.get("tags", ())), "job_type": job_type})
    cores = core_names(config.get("model"))
    seed = config.get("seed_everything")
    name = f"{recipe.rsplit('/', 1)[-1]}-{'+'.join(cores) or 'model'}-s{seed}"
    tags = (task_name(config), *cores)
    if resumed:
        name, recipe = resumed.get("name", name), resumed.get("group", recipe)
    root = (config.get("trainer") or {}).get("default_root_dir") or "."
    run_id = shared_run_id()
    return Run(run_id, name, group or recipe, tags, job_type, str(Path(root) / run_id))


def compact_config(node: Any) -> Any:
    """A resolved config without the ``init_args`` levels, as W&B shows it best:
    ``model.optimizer.lr`` rather than ``model.init_args.optimizer.init_args.lr``."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "init_args" and isinstance(value, Mapping):
                out.update(compact_config(value))
            elif key == "dict_kwargs" and not value:
                continue
            else:
                out[key] = compact_config(value)
        return out
    if isinstance(node, list):
        return [compact_config(value) for value in node]
    return node


def run_loggers(
    run: Run, offline: bool, log_model: bool | str = False, wandb: bool = True
) -> list[Logger]:
    """A W&B run (unless ``wandb`` is False: ``WANDB_MODE=disabled``) and a CSV file, both in the
    run's folder (``trainer.log_dir`` is that folder)."""
    if log_model and (offline or not wandb):
        raise UserError(
            "--log_model uploads checkpoints to W&B, which an offline run cannot: set "
            "WANDB_API_KEY (or WANDB_MODE=online), or drop --log_model"
        )
    csv_logger = RunCSVLogger(save_dir=run.folder, name="", version="")
    if not wandb:
        return [csv_logger]
    wandb_logger = WandbLogger(
        project="rnn-zoo",
        # absolute: a W&B service shared with a parent process (WANDB_SERVICE) resolves a
        # relative folder in that process's working directory, not in this one's
        save_dir=str(Path(run.folder).absolute()),
        name=run.name,
        id=run.id,
        group=run.group,
        tags=list(run.tags),
        job_type=run.job_type,
        resume="allow",
        offline=offline,
        log_model=log_model,
    )
    # Lightning passes anonymous=None, which wandb >= 0.23 warns about on every run (the setting
    # is gone: wandb/wandb#10909); and W&B looks for a git repository from the run folder, with
    # a warning when that folder is not there yet.
    getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)
    Path(run.folder).mkdir(parents=True, exist_ok=True)
    return [wandb_logger, csv_logger]


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept and appended to
    (Lightning's deletes it), so a resumed run's curves continue the first part's."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` in the run folder, continued (not replaced) when the fit resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def finish_wandb(failed: bool = False) -> None:
    """End the W&B run this process holds, so that the next fit in the same process (``rnn-zoo
    demo``, ``compare``, a notebook) starts its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")  # never imported here just to find nothing
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def monitors(callbacks: list) -> list:
    """What every logged fit adds: the learning rate per step, gradient norms per layer."""
    added = []
    if not any(isinstance(cb, LearningRateMonitor) for cb in callbacks):
        added.append(LearningRateMonitor(logging_interval="step"))
    if not any(isinstance(cb, GradientNorms) for cb in callbacks):
        added.append(GradientNorms())
    return added


class RunConfig(SaveConfigCallback):
    """Saves the resolved config once per run, in the run's own folder, and hands it to W&B as
    the run config (with the recipe's name and the run folder), with the task's summaries:
    ``val/bpc`` keeps its minimum, ``val/bleu`` its maximum, and so on."""

    def __init__(self, parser, config, run: Run | None, recipe: str, **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)
        self.run, self.recipe = run, recipe

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved or self.run is None or not trainer.is_global_zero:
            return
        text = self.parser.dump(self.config, skip_none=False)
        write_text(Path(self.run.folder) / self.config_filename, text)
        self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.run is not None and trainer.is_global_zero and stage == "fit":
            folder = self.run.folder
            if any(isinstance(lg, RunCSVLogger) for lg in trainer.loggers):  # its metrics.csv
                rank_zero_info(f"run record: {folder} ('rnn-zoo plot {folder}' draws its curves)")
            elif trainer.loggers:  # a recipe's own logger keeps its curves where it says
                rank_zero_info(
                    f"run record: {folder} (curves: where the recipe's logger puts them)"
                )
            else:  # plot would find no metrics.csv to draw
                rank_zero_info(f"run record: {folder} (no curves: the fit ran with logger: false)")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A run that failed before it logged or saved anything leaves no folder behind: a bad
        data file or an early Ctrl-C would otherwise leave a config.yaml-only run record."""
        if self.run is None or not trainer.is_global_zero:
            return
        folder = Path(self.run.folder)
        if folder.is_dir() and [p.name for p in folder.iterdir()] == [self.config_filename]:
            (folder / self.config_filename).unlink()
            folder.rmdir()

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        config = compact_config(yaml.safe_load(text))
        config.update(recipe=self.recipe, run_folder=self.run.folder)
        summaries = getattr(pl_module, "summaries", {})
        for logger in loggers:
            logger.experiment.config.update(config, allow_val_change=True)
            for metric, summary in summaries.items():
                for split in ("val", "test"):
                    logger.experiment.define_metric(f"{split}/{metric}", summary=summary)
