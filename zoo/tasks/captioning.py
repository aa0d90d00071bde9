"""Image captioning: teacher-forced training, real decoding at evaluation, the COCO scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.caption_batches import Batch
from zoo.errors import UserError
from zoo.metrics import score_captions
from zoo.models.captioning import CaptioningModel, ShowAttendTell, doubly_stochastic_penalty
from zoo.predict.captioning import caption_settings, decode_images
from zoo.tasks import common

#: A recipe's ``model`` (``zoo.models.captioning.ShowAttendTell`` / ``ShowAndTell`` + init_args).
ModelFactory = Callable[[int], CaptioningModel]


class CaptioningTask(common.FromCheckpoint, pl.LightningModule):
    """Trains a :class:`~zoo.models.captioning.CaptioningModel` on captioned pictures.

    Training minimises the teacher-forced cross-entropy per word (padding ignored), plus, with
    attention, ``attention_penalty`` times the doubly stochastic term (Xu et al. 2015, eq. 14).
    Evaluation decodes every picture and scores the captions against all its references with
    the COCO scorers (:func:`zoo.metrics.score_captions`), once, on rank 0, over every rank's
    captions gathered (BLEU and CIDEr-D are corpus statistics).

    Logged: ``train/loss`` (``train/attention_penalty``); ``val/``, ``test/`` ``loss``, ``bleu1-4``,
    ``meteor`` (with Java), ``rouge_l``, ``cider`` (x100); with W&B, a table of ``examples``.

    Args:
        vocab_size: linked from the data module by the CLI.
        model: builds the model from the vocabulary size.
        optimizer: e.g. ``torch.optim.Adam`` (Xu et al. used RMSProp / Adam).
        attention_penalty: lambda of the doubly stochastic regularisation (theirs is 1).
        beam_size, max_len: the test's search (1: greedy) and longest caption, in words.
        val_beam_size: beam during validation (default: ``beam_size``); ``meteor``: score METEOR
            (starts Java, seconds per evaluation; false for tiny runs).
    """

    cli_links = [("data.vocab_size", "vocab_size")]
    task_name = "captioning"
    #: W&B keeps the best value of each (val/ and test/), not the last (zoo.tasks.runs).
    summaries = {"loss": "min", "bleu4": "max", "cider": "max", "meteor": "max", "rouge_l": "max"}

    @classmethod
    def init_args(cls, hparams: dict) -> dict:
        model = common.model_init_args(hparams, CaptioningModel, ("vocab_size",))
        return {**model, **hparams["decoding"], "attention_penalty": hparams["attention_penalty"]}

    def __init__(
        self,
        vocab_size: int,
        model: ModelFactory = ShowAttendTell,
        optimizer: OptimizerCallable = torch.optim.Adam,
        attention_penalty: float = 1.0,
        beam_size: int = 3,
        val_beam_size: int | None = None,
        max_len: int = 20,
        meteor: bool = True,
        examples: int = 8,
    ) -> None:
        super().__init__()
        try:
            self.decoding = caption_settings(beam_size=beam_size, max_len=max_len)
            self.val_beam_size = caption_settings(beam_size=val_beam_size or beam_size).beam_size
        except ValueError as err:
            raise UserError(f"model.init_args: {err}") from None
        self.model = model(vocab_size)
        extra = {"decoding": {"beam_size": beam_size, "max_len": max_len}}
        extra["attention_penalty"] = attention_penalty
        self.save_hyperparameters(
            common.model_hparams("captioning", self.model, **extra), logger=False
        )
        self.optimizer, self.attention_penalty = optimizer, attention_penalty
        self.meteor, self.examples = meteor, examples
        self.val_nll, self.test_nll = MeanMetric(), MeanMetric()
        self._hypotheses: list[tuple[int, list[str]]] = []

    def _data(self) -> Any:
        return common.trainer_data(self, "reference_tokens", "captioning needs its captions")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "vocab_size"):
            common.check_linked("vocabulary", self.model.vocab_size, datamodule.vocab_size)
        if getattr(datamodule, "feature_cache", None) is not None:
            common.use_feature_cache(self.trainer, datamodule, self.model.encoder, stage)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())

    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        return self.model(images, captions_in)

    def _losses(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor]:
        """Mean NLL per word, the attention penalty (None without attention), word count."""
        pad, penalty = self.model.pad_id, None
        if hasattr(self.model, "forward_with_attention"):
            logits, weights = self.model.forward_with_attention(batch.images, batch.captions_in)
            penalty = doubly_stochastic_penalty(weights, batch.captions_in != pad)
        else:
            logits = self.model(batch.images, batch.captions_in)  # (B, T, V)
        nll = F.cross_entropy(
            logits.flatten(0, 1).float(), batch.captions_out.flatten(), ignore_index=pad
        )
        return nll, penalty, (batch.captions_out != pad).sum()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        nll, penalty, _ = self._losses(batch)
        loss = nll
        if penalty is not None and self.attention_penalty:
            loss = nll + self.attention_penalty * penalty
        if common.logging_step(self):
            if penalty is not None and self.attention_penalty:
                self.log("train/attention_penalty", penalty, batch_size=len(batch))
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: Batch, metric: MeanMetric, beam_size: int) -> None:
        nll, _, words = self._losses(batch)
        metric.update(nll, weight=words)
        vocab = self._data().vocab
        best = decode_images(self.model, batch.images, self.decoding, beam_size=beam_size)
        ids = batch.image_ids.tolist()
        self._hypotheses.extend((i, vocab.decode(tokens)) for i, tokens in zip(ids, best))

    def on_validation_epoch_start(self) -> None:
        self._hypotheses = []

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_nll, self.val_beam_size)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_nll, self.decoding.beam_size)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[tuple[int, str]]:
        best = decode_images(self.model, batch.images, self.decoding)
        return [
            (i, " ".join(self._data().vocab.decode(c)))
            for i, c in zip(batch.image_ids.tolist(), best)
        ]

    def _score(self, split: str, by_id: dict[int, list[str]]) -> dict[str, float]:
        """All ranks' captions scored on rank 0 (one Java for METEOR), sent to the others."""
        scores = None
        if self.global_rank == 0:
            references = self._data().references(split)
            hypotheses = {i: " ".join(words) for i, words in by_id.items()}
            scores = score_captions({i: references[i] for i in by_id}, hypotheses, self.meteor)
        return common.broadcast_from_zero(scores)

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        values: dict[str, Any] = {f"{split}/loss": metric.compute()}  # summed over ranks
        metric.reset()
        by_id = common.gather_by_index(self._hypotheses)
        scores = self._score(split, by_id)
        values.update({f"{split}/{name}": 100 * value for name, value in scores.items()})
        self.last_captions, self.last_scores = by_id, scores  # to inspect after validate / test
        self._hypotheses = []
        common.log_caption_table(self, split, by_id)
        # Every rank holds the same scores: their mean over ranks leaves them as they are.
        self.log_dict(values, prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        common.save_data_state(self, checkpoint)  # what a Captioner needs (zoo.predict)
        common.save_rng_state(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        common.load_rng_state(self, checkpoint)
