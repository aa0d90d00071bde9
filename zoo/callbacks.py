"""Callbacks shared by the tasks."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Checkpoint, Timer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from zoo.errors import UserError
from zoo.files import write_text
from zoo.predict.char_lm import generate_text
from zoo.schedules import budget_factor
from zoo.threads import CoreMeter, threads_for


class SampleText(pl.Callback):
    """Sample from a char model at chosen training steps and log the samples as a table.

    The default steps follow the progression Karpathy showed for War and Peace (iterations 100,
    300, 500, 700, 1200 and 2000): noise, then words, then punctuation and line structure.

    Args:
        steps: global steps after which to sample.
        length: characters per sample.
        prime: text to start from.
        temperature: softmax temperature.
        echo: also print each sample to the terminal.
    """

    def __init__(
        self,
        steps: Sequence[int] = (100, 300, 500, 700, 1200, 2000),
        length: int = 200,
        prime: str = "\n",
        temperature: float = 0.8,
        echo: bool = True,
    ) -> None:
        self.steps = set(steps)
        self.length = length
        self.prime = prime
        self.temperature = temperature
        self.echo = echo
        self.rows: list[list] = []

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step not in self.steps or pl_module.vocab is None:
            return
        text = generate_text(
            pl_module.model,
            pl_module.vocab,
            self.prime,
            self.length,
            temperature=self.temperature,
            seed=step,
        )
        self.rows.append([step, text])
        if self.echo:
            print(f"\n--- sample at step {step} ---\n{text}\n", flush=True)
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):  # W&B: one table that grows as training goes on
                logger.log_text(key="samples", columns=["step", "text"], data=self.rows, step=step)


class StopAfterEpochs(pl.Callback):
    """Stop training after a fractional number of epochs, e.g. Sutskever et al.'s 7.5.

    ``Trainer(max_epochs=...)`` takes whole epochs only; this stops mid-epoch, after the batch
    that completes ``epochs`` (counted in this run's training batches per epoch).

    Args:
        epochs: epochs to train, > 0.
    """

    def __init__(self, epochs: float) -> None:
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs}")
        self.epochs = epochs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches
        if done >= self.epochs - 1e-9:
            trainer.should_stop = True


_RECURRENT_PARAMETER = re.compile(r"\.(?:weight|bias)_(?:ih|hh)_l(\d+)(_reverse)?$")


def layer_of(parameter: str) -> str:
    """The layer a parameter belongs to: ``core.rnn.weight_hh_l1`` -> ``core.rnn.l1`` (each
    recurrent layer and direction apart), ``head.weight`` -> ``head``."""
    match = _RECURRENT_PARAMETER.search(parameter)
    if match:
        return f"{parameter[: match.start()]}.l{match.group(1)}{match.group(2) or ''}"
    return parameter.rsplit(".", 1)[0] if "." in parameter else parameter


class GradientNorms(pl.Callback):
    """The L2 norm of each layer's gradient (``grad_norm/<layer>``) and of all of them
    (``grad_norm/total``), before clipping, on the steps Lightning logs (every
    ``log_every_n_steps``): vanishing and exploding gradients as they happen. Other steps
    compute nothing, so the hot loop has no extra host syncs."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1):
            return
        groups: dict[str, list[torch.Tensor]] = {}
        for name, param in pl_module.named_parameters():
            if param.grad is not None:
                groups.setdefault(layer_of(name), []).append(param.grad.detach().float().norm())
        if not groups:
            return
        norms = {f"grad_norm/{k}": torch.stack(v).norm() for k, v in groups.items()}
        norms["grad_norm/total"] = torch.stack(list(norms.values())).norm()
        pl_module.log_dict(norms, on_step=True, on_epoch=False)


class ElapsedTime(pl.Callback):
    """Seconds since the fit started, logged with every validation (``time/elapsed_s``), with
    the validation's ``metric`` kept in :attr:`points`: curves against wall-clock time
    (``rnn-zoo compare``). :attr:`train_seconds` is the whole fit's.

    Args:
        metric: the validation value to keep beside the time, e.g. ``val/bpc``.
    """

    def __init__(self, metric: str = "val/loss") -> None:
        self.metric = metric
        self.start: float | None = None
        self.train_seconds = 0.0
        self.points: list[tuple[int, float, float]] = []  # (step, seconds, value)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is not None:
            self.train_seconds = time.perf_counter() - self.start

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.start is not None:
            pl_module.log("time/elapsed_s", time.perf_counter() - self.start)

    def on_validation_end(self, trainer, pl_module) -> None:  # the task's scores are in now
        value = trainer.callback_metrics.get(self.metric)
        seconds = trainer.callback_metrics.get("time/elapsed_s")
        if trainer.sanity_checking or value is None or seconds is None:
            return
        self.points.append((trainer.global_step, float(seconds), float(value)))


class FollowFreeCores(pl.Callback):
    """On the CPU, torch's intra-op threads follow the free cores (:mod:`zoo.threads`),
    re-checked every ``interval`` seconds of training: when another process takes a core, the
    run drops a thread and slows down in proportion rather than many times over, and takes the
    thread back when the core is free again. ``rnn-zoo fit`` adds it unless ``OMP_NUM_THREADS``
    pins the count. Never more threads than at the start; the start count is restored at the end.

    Args:
        interval: seconds between checks (each reads ``/proc/stat``; no tensor work).
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.meter: CoreMeter | None = None
        self.changes: list[tuple[int, int]] = []  # (step, threads)

    def on_train_start(self, trainer, pl_module) -> None:
        self.meter = CoreMeter() if pl_module.device.type == "cpu" else None
        self.most = torch.get_num_threads()
        self.next = time.monotonic() + self.interval

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.meter is None or self.most < 2 or time.monotonic() < self.next:
            return
        others = self.meter.others()
        self.next = time.monotonic() + self.interval
        if others is None:
            return
        wanted = threads_for(len(self.meter.cpus), others, self.most)
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
            self.changes.append((trainer.global_step, wanted))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.meter is not None:
            torch.set_num_threads(self.most)


class BudgetSchedule(pl.Callback):
    """The learning rate follows the run's budget, whichever ends it: ``max_time`` (the share
    of the time used, as the Timer counts it) or else ``max_steps``. A warm-up, then a decay
    to ``final`` times the optimizer's rate exactly when the budget runs out
    (:func:`zoo.schedules.budget_factor`), so a time-boxed run ends on small, careful steps on
    any machine, fast or slow. Resumes where it was (the base rates are in its state).

    Args:
        warmup: share of the budget spent warming up.
        final: multiplier at the end of the budget.
        shape: ``linear`` or ``cosine``.
    """

    def __init__(
        self,
        warmup: float = 0.02,
        final: float = 0.0,
        shape: Literal["linear", "cosine"] = "linear",
    ) -> None:
        if not (0 <= warmup < 1 and 0 <= final <= 1):
            raise ValueError(f"warmup must be in [0, 1) and final in [0, 1], got {warmup}, {final}")
        self.warmup, self.final, self.shape = warmup, final, shape
        self.base: list[float] | None = None

    def progress(self, trainer: pl.Trainer) -> float:
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed()
            return elapsed / max(elapsed + remaining, 1e-9)
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        raise UserError("BudgetSchedule needs trainer.max_time or trainer.max_steps")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = [g for opt in trainer.optimizers for g in opt.param_groups]
        if self.base is None:
            self.base = [g["lr"] for g in groups]
        factor = budget_factor(self.progress(trainer), self.warmup, self.final, self.shape)
        for group, base in zip(groups, self.base):
            group["lr"] = base * factor

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base = state_dict.get("base")


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` always holds the weights as they are at the end of the run, whatever ended
    it (``max_steps``, ``max_time``, early stopping, Ctrl-C), and is rewritten after every
    validation, so a killed run leaves its latest state; the monitored best is the
    ``ModelCheckpoint``'s (``best.ckpt`` in the recipes). ``rnn-zoo fit`` adds this callback
    whenever checkpointing is on.

    A run that stops mid-epoch is saved from the batch it stops after, as Lightning's own
    mid-epoch checkpoints are, so ``--ckpt_path last.ckpt`` resumes it exactly. (Lightning's
    ``save_last`` only rewrites ``last.ckpt`` when a checkpoint is saved: with a monitored
    ``ModelCheckpoint``, when the score improves.) A ``Checkpoint``, so that Lightning runs it
    after the callbacks that decide to stop (``Timer``, ``EarlyStopping``).

    Args:
        dirpath: folder of ``last.ckpt``; default: the ``ModelCheckpoint``'s, else
            ``<default_root_dir>/checkpoints``.
        filename: name without ``.ckpt``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.saved_step: int | None = None

    def path(self, trainer: pl.Trainer) -> Path:
        others = [cb for cb in trainer.checkpoint_callbacks if cb is not self]
        folder = self.dirpath or (getattr(others[0], "dirpath", None) if others else None)
        folder = folder or Path(trainer.default_root_dir) / "checkpoints"
        return Path(folder) / f"{self.filename}.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps_done = 0 < trainer.max_steps <= trainer.global_step
        if steps_done or trainer.should_stop:  # the last batch: saved before the epoch closes
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.saved_step != trainer.global_step:
            self._save(trainer)
        rank_zero_info(f"last.ckpt: the final weights are in {self.path(trainer)}")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        # Other ranks may be gone: rank 0 writes alone, without the trainer's barriers.
        path = self.path(trainer)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint()
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        print(f"\nrnn-zoo: interrupted; the weights so far are in {path}", file=sys.stderr)

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path(trainer), weights_only=False)  # all, to resume from
        self.saved_step = trainer.global_step


class RunRecipe(pl.Callback):
    """Every checkpoint carries the run's resolved recipe (``checkpoint["rnn_zoo_recipe"]``, the
    YAML ``--print_config`` shows), so ``rnn-zoo fit --ckpt_path X.ckpt`` resumes without
    ``--config``, and the run they belong to (``checkpoint["rnn_zoo_run"]``), so that the
    resumed fit continues it. ``rnn-zoo fit|validate|test`` add it.

    Args:
        recipe: the resolved configuration, as YAML.
        run: :meth:`zoo.tasks.runs.Run.to_dict`, or None.
    """

    def __init__(self, recipe: str, run: dict | None = None) -> None:
        self.recipe, self.run = recipe, run

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["rnn_zoo_recipe"] = self.recipe
        if self.run is not None:  # the run a resumed fit continues (zoo.tasks.runs)
            checkpoint["rnn_zoo_run"] = self.run


class PredictionWriter(BasePredictionWriter):
    """What ``rnn-zoo predict`` writes, in input order, under DDP too (each rank writes its
    part, rank 0 merges them in order): a char LM's per-character surprisal
    (``predictions.tsv``: position, character, bits), a translation model's hypotheses
    (``predictions.txt``, one line per input line), a captioning model's captions
    (``predictions.json``, COCO results format ``[{"image_id", "caption"}]``).

    Args:
        output_dir: folder of the file (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.written: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        rows = _rows(pl_module, predictions)
        folder = Path(self.output_dir or trainer.default_root_dir)
        part = folder / f".predictions.rank{trainer.global_rank}.json"
        write_text(part, json.dumps(rows))
        trainer.strategy.barrier("predictions")
        if trainer.is_global_zero:
            parts = [folder / f".predictions.rank{r}.json" for r in range(trainer.world_size)]
            merged = [row for path in parts for row in json.loads(path.read_text())]
            self.written = _write_predictions(folder, pl_module.hparams.get("task"), merged)
            for path in parts:
                path.unlink(missing_ok=True)
            rank_zero_info(f"predictions: {len(merged):,} rows in {self.written}")


def _rows(pl_module, predictions) -> list:
    """JSON-able rows of this rank's predictions: ``[char, bits]`` or ``[index, text]``."""
    if pl_module.hparams.get("task") == "char_lm":  # (B, T) windows of B contiguous streams
        bits = torch.cat(predictions, dim=1).cpu()  # (B, N): stream b is the b-th stretch
        targets = torch.cat(pl_module.predicted_targets, dim=1).cpu()
        chars = pl_module.vocab.decode(targets.reshape(-1))
        return [[c, round(b, 4)] for c, b in zip(chars, bits.reshape(-1).tolist())]
    return [pair for batch in predictions for pair in batch]


def _write_predictions(folder: Path, task: str, rows: list) -> Path:
    if task == "char_lm":
        path = folder / "predictions.tsv"
        lines = [f"{i}\t{json.dumps(c)}\t{bits}" for i, (c, bits) in enumerate(rows, 1)]
        write_text(path, "position\tcharacter\tbits\n" + "".join(f"{line}\n" for line in lines))
    elif task == "translation":
        path = folder / "predictions.txt"
        write_text(path, "".join(f"{text}\n" for _, text in sorted(rows)))
    else:
        path = folder / "predictions.json"
        results = [{"image_id": i, "caption": text} for i, text in sorted(rows)]
        write_text(path, json.dumps(results, ensure_ascii=False, indent=1) + "\n")
    return path
