"""Neural machine translation: teacher-forced training, real decoding, corpus BLEU and chrF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.pairs import Batch
from zoo.decoding import DecodeSettings
from zoo.errors import UserError
from zoo.metrics import score_corpus
from zoo.models.translation import RNNSearch, TranslationModel
from zoo.predict.translation import decode_batch
from zoo.tasks import common

#: A recipe's ``model`` (``zoo.models.RNNSearch`` / ``Seq2Seq`` / ``LuongNMT`` + init_args).
ModelFactory = Callable[[int, int], TranslationModel]


class TranslationTask(common.FromCheckpoint, pl.LightningModule):
    """Trains a :class:`~zoo.models.translation.TranslationModel` on parallel text.

    Training minimises the teacher-forced cross-entropy per target token (padding ignored).
    Evaluation decodes for real and scores sacreBLEU's corpus BLEU and chrF against the original
    references, over every rank's hypotheses gathered (not a mean of per-rank BLEUs).

    Logged: ``train/loss``; ``val/`` and ``test/`` ``loss``, ``ppl``, ``bleu``, ``chrf`` (and
    ``test/bleu_greedy``, ``test/chrf_greedy``); ``val/attention`` images of a few sentences.

    Args:
        src_vocab_size, tgt_vocab_size: linked from the data module by the CLI.
        model: builds the model from the two sizes (``RNNSearch``, ``partial(Seq2Seq, ...)``).
        optimizer, lr_scheduler: injected; the scheduler steps every ``scheduler_frequency``
            ``scheduler_interval`` s (0.5 epoch: Sutskever et al. 2014).
        label_smoothing: of the training loss only (perplexity is always the plain NLL).
        chunked_loss: fuse the output layer with the cross-entropy, a chunk of target tokens at a
            time (``torch.nn.functional.linear_cross_entropy``), so in training the ``(B, T, V)``
            logits and their gradient never exist whole: for large vocabularies (WMT's 30,000 to
            80,000 words) on a small GPU. Same loss and gradients; not with ``label_smoothing``.
            Evaluation (no gradients kept) scores the plain way.
        beam_size, length_penalty, early_stopping, max_len_a, max_len_b: the test's search
            (:class:`~zoo.decoding.DecodeSettings`); the test also decodes greedily.
        val_beam_size: beam during validation (default: ``beam_size``; 1 is fastest).
    """

    #: The CLI feeds the data module's vocabulary sizes into the model.
    cli_links = [(f"data.num_{side}_tokens", f"{side}_vocab_size") for side in ("src", "tgt")]
    task_name = "translation"
    #: W&B keeps the best value of each (val/ and test/), not the last (zoo.tasks.runs).
    summaries = {"loss": "min", "ppl": "min", "bleu": "max", "chrf": "max"}

    @classmethod
    def init_args(cls, hparams: dict) -> dict:
        sizes = ("src_vocab_size", "tgt_vocab_size")
        decoding = {k: v for k, v in hparams["decoding"].items() if k != "n_best"}
        return {**common.model_init_args(hparams, TranslationModel, sizes), **decoding}

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        model: ModelFactory = RNNSearch,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_frequency: float = 1.0,
        label_smoothing: float = 0.0,
        chunked_loss: bool = False,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        early_stopping: bool = True,
        max_len_a: float = 1.5,
        max_len_b: int = 5,
        val_beam_size: int | None = None,
        attention_examples: int = 3,
    ) -> None:
        super().__init__()
        if beam_size < 1 or (val_beam_size is not None and val_beam_size < 1):
            raise UserError("beam_size and val_beam_size must be at least 1 (1: greedy search)")
        common.check_frequency(scheduler_interval, scheduler_frequency)
        if chunked_loss and label_smoothing:
            raise UserError(
                f"model.init_args: chunked_loss has no label smoothing (torch's chunked "
                f"linear_cross_entropy): set label_smoothing: 0.0 (not {label_smoothing}) or "
                "chunked_loss: false"
            )
        try:
            self.decoding = DecodeSettings(
                beam_size, 1, length_penalty, early_stopping, max_len_a, max_len_b
            )
        except ValueError as err:
            raise UserError(f"model.init_args: {err}") from None
        self.model = model(src_vocab_size, tgt_vocab_size)
        decoding = {"decoding": self.decoding.to_dict()}
        self.save_hyperparameters(
            common.model_hparams("translation", self.model, **decoding), logger=False
        )
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.scheduler_interval, self.scheduler_frequency = scheduler_interval, scheduler_frequency
        self.label_smoothing, self.chunked_loss = label_smoothing, chunked_loss
        self.val_beam_size = val_beam_size or beam_size
        self.attention_examples = attention_examples
        self.val_nll, self.test_nll = MeanMetric(), MeanMetric()
        self._hypotheses: dict[str, list[tuple[int, str]]] = {}  # suffix -> (index, text)
        self._signature_shown = False

    def _data(self) -> Any:  # it detokenises hypotheses and holds the references
        return common.trainer_data(self, "detokenize", "translation needs its parallel text")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "num_src_tokens"):
            return
        model, sizes = self.model, (datamodule.num_src_tokens, datamodule.num_tgt_tokens)
        common.check_linked("vocabularies", (model.src_vocab_size, model.tgt_vocab_size), sizes)
        common.check_linked("pad_id", self.model.pad_id, datamodule.pad_id)

    def configure_optimizers(self):
        scheduler = self.scheduler_interval, self.scheduler_frequency
        return common.optimizers(self, self.optimizer, self.lr_scheduler, *scheduler)

    # ------------------------------------------------------------------ steps
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, src_lengths, tgt_in)

    def _nll(self, batch: Batch, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy per target token (padding ignored), and the number of tokens."""
        model = self.model
        features = model.drop(model.features(batch.src, batch.src_lengths, batch.tgt_in))
        features, targets, pad = features.flatten(0, 1), batch.tgt_out.flatten(), model.pad_id
        if self.chunked_loss and torch.is_grad_enabled():  # (B * T, F) -> the mean, chunk by chunk
            loss = F.linear_cross_entropy(
                features, model.head.weight, targets, linear_bias=model.head.bias,
                ignore_index=pad, options=torch.nn.LinearCrossEntropyOptions(),
            )  # fmt: skip
            loss = loss.to(torch.promote_types(loss.dtype, torch.float32))  # bf16 under autocast
        else:
            logits = model.head(features)  # (B * T, V); bf16 under autocast: scored in float32
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(
                logits, targets, ignore_index=pad, label_smoothing=label_smoothing
            )
        return loss, (targets != pad).sum()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _ = self._nll(batch, self.label_smoothing)
        if common.logging_step(self):
            self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: Batch, metric: MeanMetric, beams: dict[str, int]) -> Any:
        nll, tokens = self._nll(batch)
        metric.update(nll, weight=tokens)
        datamodule, index, best = self._data(), batch.index.tolist(), None
        for suffix, beam_size in beams.items():
            settings = self.decoding.override(beam_size=beam_size)
            hyps = decode_batch(self.model, batch.src, batch.src_lengths, settings)
            texts = [datamodule.detokenize(ids) for ids in hyps.best]
            self._hypotheses.setdefault(suffix, []).extend(zip(index, texts))
            best = hyps.best if best is None else best
        return best

    def on_validation_epoch_start(self) -> None:
        self._hypotheses = {}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        best = self._eval_step(batch, self.val_nll, {"": self.val_beam_size})
        if batch_idx == self.trainer.num_val_batches[dataloader_idx] // 2:  # middle lengths
            common.log_attention(self, batch, best)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.test_nll, {"": self.decoding.beam_size, "_greedy": 1})

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[tuple[int, str]]:
        hyps = decode_batch(self.model, batch.src, batch.src_lengths, self.decoding)
        return list(zip(batch.index.tolist(), map(self._data().detokenize, hyps.best)))

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        nll = metric.compute()  # mean over every target token of the split, summed over ranks
        metric.reset()
        values: dict[str, Any] = {f"{split}/loss": nll, f"{split}/ppl": nll.exp()}
        data = self._data()
        references, lowercase = data.references(split), bool(getattr(data, "lowercase", False))
        for suffix, pairs in self._hypotheses.items():
            by_index = common.gather_by_index(pairs)
            refs = [references[i] for i in by_index]
            bleu, chrf, signature = score_corpus(list(by_index.values()), refs, lowercase)
            values[f"{split}/bleu{suffix}"] = bleu.score
            values[f"{split}/chrf{suffix}"] = chrf.score
            if not self._signature_shown:
                self.print(f"sacreBLEU: {signature}")
                common.set_summary(self, "sacrebleu_signature", signature)
                self._signature_shown = True
        self._hypotheses = {}
        # Every rank computed the same scores from the same gathered text: the mean over ranks
        # leaves them as they are (and keeps Lightning from warning about unsynced metrics).
        self.log_dict(values, prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        common.save_data_state(self, checkpoint)  # what a Translator needs (zoo.predict)
        common.save_rng_state(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        common.load_rng_state(self, checkpoint)
