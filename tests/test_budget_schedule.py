"""The learning rate follows the run's budget: warm-up, then decay to ``final`` exactly when
``max_steps`` (or ``max_time``) runs out, and a resumed run continues the same curve."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch

from datamodules.char_text import CharTextDataModule
from zoo.callbacks import BudgetSchedule
from zoo.cores import GRU
from zoo.schedules import budget_factor
from zoo.tasks.char_lm import CharLanguageModel


@pytest.mark.parametrize(
    "progress,shape,expected",
    [(0.0, "linear", 1e-3 / 0.101), (0.1, "linear", 1.0), (0.55, "linear", 0.5),
     (1.0, "linear", 0.0), (0.55, "cosine", 0.5), (0.325, "cosine", 0.5 + 0.5 * 2**-0.5)],
)  # fmt: skip
def test_budget_factor(progress, shape, expected) -> None:
    assert budget_factor(progress, warmup=0.1, shape=shape) == pytest.approx(expected)
    assert budget_factor(1.0, final=0.2) == pytest.approx(0.2)


class _Rates(pl.Callback):
    """The rate each step trained with; stops the run after ``stop`` steps if given."""

    def __init__(self, stop: int | None = None) -> None:
        self.rates: list[float] = []
        self.stop = stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])
        if self.stop is not None and trainer.global_step >= self.stop:
            trainer.should_stop = True


def _fit(tmp_path, steps: int, ckpt=None, stop=None) -> tuple[list[float], pl.Trainer]:
    torch.manual_seed(0)
    dm = CharTextDataModule(batch_size=4, seq_len=16)
    optimizer = functools.partial(torch.optim.Adam, lr=0.01)
    task = CharLanguageModel(dm.vocab_size, core=functools.partial(GRU, hidden_size=8),
                             optimizer=optimizer)  # fmt: skip
    rates = _Rates(stop)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[BudgetSchedule(warmup=0.1, final=0.0), rates], enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(task, dm, ckpt_path=ckpt)
    return rates.rates, trainer


def test_rate_warms_up_then_reaches_final_at_the_last_step(tmp_path) -> None:
    rates, _ = _fit(tmp_path, 20)
    expected = [0.01 * budget_factor(step / 20, 0.1) for step in range(20)]
    assert rates == pytest.approx(expected)
    assert max(rates) == pytest.approx(0.01) and rates[-1] == pytest.approx(0.01 * 0.5 / 9)


def test_resumed_run_continues_the_curve(tmp_path) -> None:
    first, trainer = _fit(tmp_path, 20, stop=8)  # a 20-step budget, interrupted at step 8
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    rest, _ = _fit(tmp_path, 20, ckpt=str(ckpt))
    whole, _ = _fit(tmp_path, 20)
    assert len(first) == 8 and first + rest == pytest.approx(whole)
