"""Character-level language modelling with truncated backpropagation through time."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.vocab import CharVocab
from zoo.cores import (
    LSTM,
    CoreFactory,
    State,
    build_core,
    detach_state,
    state_from_parts,
    state_parts,
)
from zoo.errors import DataError
from zoo.files import few
from zoo.models import CharRNN
from zoo.predict.char_lm import LN2
from zoo.tasks.common import (
    FromCheckpoint,
    load_rng_state,
    logging_step,
    optimizers,
    save_rng_state,
)


class CharLanguageModel(FromCheckpoint, pl.LightningModule):
    """Trains :class:`~zoo.models.CharRNN` with truncated BPTT (Williams & Peng 1990).

    Batches are consecutive windows of ``B`` parallel streams (see
    :class:`datamodules.char_text.StreamLoader`), so the final state of one batch is carried into
    the next; it is detached between batches, which is what truncates backpropagation to
    ``seq_len`` steps. The state is reset at the start of every epoch, and saved in checkpoints
    so that a resumed run continues exactly.

    Evaluation carries its own state over the whole split and reports the mean negative
    log-likelihood per character in nats (``loss``), perplexity ``exp(loss)`` and bits per
    character ``loss / ln 2``.

    Args:
        vocab_size: linked from the data module by the CLI.
        core: the recurrent core, built with the embedding size as its input size.
        embedding_dim, dropout, tie_weights, dropout_mask: see :class:`~zoo.models.CharRNN`.
        optimizer: e.g. ``torch.optim.RMSprop`` (char-rnn) or ``torch.optim.Adam``.
        lr_scheduler: optional; stepped once per epoch unless ``scheduler_interval: step``.
    """

    #: The CLI feeds the data module's vocabulary size into ``vocab_size``.
    cli_links = [("data.vocab_size", "vocab_size")]
    task_name = "char_lm"
    #: W&B keeps the best value of each (val/ and test/), not the last (zoo.tasks.runs).
    summaries = {"loss": "min", "ppl": "min", "bpc": "min"}

    @classmethod
    def init_args(cls, hparams: dict) -> dict:
        config = dict(hparams["model"])
        core = config.pop("core")
        return {**config, "core": lambda size: build_core(core, size)}

    def __init__(
        self,
        vocab_size: int,
        core: CoreFactory = LSTM,
        embedding_dim: int = 64,
        dropout: float = 0.0,
        tie_weights: bool = False,
        dropout_mask: Literal["element", "sequence"] = "element",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        self.model = CharRNN(vocab_size, core, embedding_dim, dropout, tie_weights, dropout_mask)
        # Only JSON-able values go into checkpoints, which load with weights_only=True.
        self.save_hyperparameters({"task": "char_lm", "model": self.model.config()}, logger=False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.vocab: CharVocab | None = None
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()
        self._train_state: State | None = None
        self._eval_state: State | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        vocab = getattr(datamodule, "vocab", None)
        if vocab is None:
            return
        self.check_data(datamodule)
        if len(vocab) != self.model.vocab_size:
            raise DataError(
                f"model.vocab_size is {self.model.vocab_size} but the data has {len(vocab)} "
                "characters; let the CLI link it from the data"
            )
        self.vocab = vocab

    def check_data(self, datamodule: Any) -> None:
        """Refuse text whose characters are not those of the weights this task holds (from a
        checkpoint or ``--init_from``); the error lists those that differ."""
        vocab = getattr(datamodule, "vocab", None)
        if self.vocab is None or vocab is None or self.vocab == vocab:
            return
        data, weights = set(vocab.chars), set(self.vocab.chars)
        differences = [
            f"{len(chars)} {what}: {few([repr(c) for c in sorted(chars)], limit=8)}"
            for chars, what in (
                (data - weights, "the weights lack"),
                (weights - data, "the data lacks"),
            )
            if chars
        ] or [f"the data is read by {vocab.unit}, the weights by {self.vocab.unit}"]
        raise DataError(
            f"the data's characters differ from the weights' ({'; '.join(differences)}): "
            "train, fine-tune and evaluate on text with the same characters (the vocabulary "
            "comes from the training split)"
        )

    def configure_optimizers(self):
        return optimizers(self, self.optimizer, self.lr_scheduler, self.scheduler_interval)

    # ------------------------------------------------------------------ steps
    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.model(tokens, state)

    def _nll(self, batch: tuple[Tensor, Tensor], state: State | None) -> tuple[Tensor, State]:
        x, y = batch  # (B, T) inputs and next-character targets
        logits, state = self.model(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return loss, state

    def on_train_start(self) -> None:
        state = self._train_state  # restored from a checkpoint, which loads on the CPU
        if state is not None:
            self._train_state = state_from_parts([s.to(self.device) for s in state_parts(state)])

    def on_train_epoch_start(self) -> None:
        # Not called when a run resumes mid-epoch: that epoch goes on with the saved state.
        self._train_state = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, state = self._nll(batch, self._train_state)
        self._train_state = detach_state(state)  # truncate BPTT here
        if logging_step(self):
            self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], metric: MeanMetric) -> None:
        loss, self._eval_state = self._nll(batch, self._eval_state)
        metric.update(loss, weight=batch[1].numel())

    def on_validation_epoch_start(self) -> None:
        self._eval_state = None

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def on_test_epoch_start(self) -> None:
        self._eval_state = None

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    def on_predict_epoch_start(self) -> None:
        self._eval_state, self.predicted_targets = None, []

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Bits spent on each next character: (B, T), the text's surprisal (the characters are
        kept in ``predicted_targets`` for the prediction writer)."""
        x, y = batch
        logits, self._eval_state = self.model(x, self._eval_state)
        self.predicted_targets.append(y)
        return F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none") / LN2

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        nll = metric.compute()  # mean over every character of the split, summed over ranks
        metric.reset()
        self.log_dict(
            {f"{split}/loss": nll, f"{split}/ppl": nll.exp(), f"{split}/bpc": nll / LN2},
            prog_bar=True,
            sync_dist=True,  # already reduced by the metric: the mean of equal values, no warning
        )

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.vocab is not None:
            checkpoint["vocab"] = list(self.vocab.chars)
            checkpoint["vocab_unit"] = self.vocab.unit
        state = self._train_state
        if state is not None:
            checkpoint["tbptt_state"] = list(state_parts(state))
        save_rng_state(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vocab" in checkpoint:
            self.vocab = CharVocab(checkpoint["vocab"], checkpoint.get("vocab_unit", "char"))
        saved = checkpoint.get("tbptt_state")
        if saved is not None:
            self._train_state = state_from_parts(saved)
        load_rng_state(self, checkpoint)
