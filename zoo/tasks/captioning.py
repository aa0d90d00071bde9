"""Image captioning: teacher-forced training (+ the doubly stochastic attention penalty), real
decoding at evaluation and the COCO caption scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) against
every reference caption."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.coco_captions import Batch
from zoo.caption_metrics import score_captions
from zoo.errors import DataError, UserError
from zoo.models.captioning import CaptioningModel, ShowAttendTell, doubly_stochastic_penalty

#: Builds a model from the vocabulary size: a recipe's ``model`` entry is a ``class_path``
#: (``zoo.models.captioning.ShowAttendTell`` or ``...ShowAndTell``) with its other ``init_args``.
ModelFactory = Callable[[int], CaptioningModel]


class CaptioningTask(pl.LightningModule):
    """Trains a :class:`~zoo.models.captioning.CaptioningModel` on captioned pictures.

    Training minimises the teacher-forced cross-entropy per word (padding ignored), plus, for
    models with attention, ``attention_penalty`` times the doubly stochastic term (Xu et al. 2015,
    eq. 14; their lambda is 1). Evaluation decodes every picture once (beam search, greedy with
    beam size 1) and scores the captions against all of the picture's references with the COCO
    evaluation's scorers (:func:`zoo.caption_metrics.score_captions`: pycocoevalcap, its Java
    tokeniser replaced by a pure-Python one). ``val/loss`` is the teacher-forced NLL of each
    picture's first caption. Under data parallelism each rank decodes its share of the pictures;
    the ``(image id, caption)`` pairs are gathered and scored once, as one corpus, on rank 0
    (BLEU and CIDEr-D are corpus statistics: a mean of per-rank scores would differ), and the
    scores are sent to every rank.

    Logged: ``train/loss`` (and ``train/attention_penalty``); ``val/loss``, ``val/bleu1`` ..
    ``val/bleu4``, ``val/meteor`` (where Java runs), ``val/rouge_l``, ``val/cider`` (all x100,
    as papers report them: CIDEr-D 0-1000); ``test/`` the same. With a W&B logger, a table of
    ``examples`` pictures with their generated and reference captions per evaluation.

    Args:
        vocab_size: linked from the data module by the CLI.
        model: builds the model from the vocabulary size.
        optimizer: e.g. ``torch.optim.Adam`` (Xu et al. used RMSProp / Adam).
        attention_penalty: lambda of the doubly stochastic regularisation.
        beam_size: beam at test time (1: greedy search).
        val_beam_size: beam during validation (default: ``beam_size``).
        max_len: longest generated caption, in words.
        meteor: score METEOR (starts Java, seconds per evaluation; false for tiny runs).
        examples: pictures in the W&B captions table of each evaluation (0: none).
    """

    cli_links = [("data.vocab_size", "vocab_size")]

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
        if beam_size < 1 or (val_beam_size is not None and val_beam_size < 1):
            raise UserError("beam_size and val_beam_size must be at least 1 (1: greedy search)")
        self.model = model(vocab_size)
        cls = type(self.model)
        decoding = {"beam_size": beam_size, "max_len": max_len}
        # Only JSON-able values go into checkpoints, which load with weights_only=True.
        self.save_hyperparameters(
            {
                "task": "captioning",
                "model": self.model.config(),
                "model_class": f"{cls.__module__}.{cls.__qualname__}",
                "decoding": decoding,
                "attention_penalty": attention_penalty,
            }
        )
        self.optimizer = optimizer
        self.attention_penalty = attention_penalty
        self.decoding = decoding
        self.val_beam_size = val_beam_size or beam_size
        self.meteor = meteor
        self.examples = examples
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()
        self._hypotheses: list[tuple[int, list[str]]] = []

    def _data(self) -> Any:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is None or not hasattr(datamodule, "reference_tokens"):
            raise UserError(
                "captioning evaluation needs the CocoCaptionsDataModule (for the vocabulary and "
                "the references): pass datamodule= to the trainer"
            )
        return datamodule

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "vocab_size"):
            if datamodule.vocab_size != self.model.vocab_size:
                raise DataError(
                    f"the model's vocabulary has {self.model.vocab_size} words but the data's has "
                    f"{datamodule.vocab_size}; let the CLI link them from the data"
                )
        if getattr(datamodule, "feature_cache", None) is not None:
            self._use_feature_cache(datamodule, stage)

    def _use_feature_cache(self, datamodule: Any, stage: str) -> None:
        """Have the data run the frozen CNN once (or read its saved features), so batches carry
        features and the model skips the CNN. Local rank 0 builds; the others wait, then read."""
        trainer, device = self.trainer, self.trainer.strategy.root_device
        if trainer.local_rank == 0:
            datamodule.use_feature_cache(self.model.encoder, stage, device)
        trainer.strategy.barrier("feature_cache")
        if trainer.local_rank != 0:
            datamodule.use_feature_cache(self.model.encoder, stage, device)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        return self.model(images, captions_in)

    def _losses(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor]:
        """Mean NLL per word, the attention penalty (None without attention), word count."""
        pad = self.model.pad_id
        penalty = None
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
            self.log("train/attention_penalty", penalty, batch_size=len(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _decode(self, images: Tensor, beam_size: int) -> list[list[int]]:
        from zoo.caption import decode_images

        return decode_images(self.model, images, beam_size, self.decoding["max_len"])

    def _eval_step(self, batch: Batch, metric: MeanMetric, beam_size: int) -> None:
        nll, _, words = self._losses(batch)
        metric.update(nll, weight=words)
        vocab = self._data().vocab
        best = self._decode(batch.images, beam_size)
        ids = batch.image_ids.tolist()
        self._hypotheses.extend((i, vocab.decode(tokens)) for i, tokens in zip(ids, best))

    def on_validation_epoch_start(self) -> None:
        self._hypotheses = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_nll, self.val_beam_size)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def on_test_epoch_start(self) -> None:
        self._hypotheses = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_nll, self.decoding["beam_size"])

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    def _gather(self, pairs: list[tuple[int, list[str]]]) -> dict[int, list[str]]:
        """Every rank's ``(image id, caption)`` pairs, on every rank."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, pairs)
            pairs = [pair for part in parts for pair in part]
        return dict(sorted(pairs))

    def _score(self, split: str, by_id: dict[int, list[str]]) -> dict[str, float]:
        """The corpus scores of every rank's captions, computed on rank 0 (one Java process for
        METEOR) and sent to the other ranks."""
        scores: list[Any] = [None]
        if self.global_rank == 0:
            references = self._data().references(split)
            hypotheses = {i: " ".join(words) for i, words in by_id.items()}
            refs = {i: references[i] for i in by_id}
            scores[0] = score_captions(refs, hypotheses, meteor=self.meteor)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(scores, src=0)
        return scores[0]

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        values: dict[str, Any] = {f"{split}/loss": metric.compute()}  # summed over ranks
        metric.reset()
        by_id = self._gather(self._hypotheses)
        scores = self._score(split, by_id)
        values.update({f"{split}/{name}": 100 * value for name, value in scores.items()})
        self.last_captions = by_id  # for inspection after trainer.validate / test
        self.last_scores = scores
        self._hypotheses = []
        self._log_examples(split, by_id)
        # Every rank holds the same scores: the mean over ranks leaves them as they are (and
        # keeps Lightning from warning about unsynced epoch-level metrics).
        self.log_dict(values, prog_bar=True, sync_dist=True)

    def _log_examples(self, split: str, by_id: dict[int, list[str]]) -> None:
        """A W&B table of a few pictures with their generated and reference captions."""
        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers or self.examples < 1 or self.global_rank != 0:
            return
        if self.trainer.sanity_checking:
            return
        import wandb

        datamodule = self._data()
        references = datamodule.references(split)
        paths = datamodule.splits[split].paths
        examples = list(by_id.items())[: self.examples]  # the same pictures each time
        rows = [
            [i, wandb.Image(str(paths[i])), " ".join(words), "\n".join(references[i])]
            for i, words in examples
        ]
        columns = ["image_id", "image", "generated", "references"]
        if hasattr(self.model, "forward_with_attention"):  # Show, Attend and Tell: overlays
            columns.append("attention")
            for row, figure in zip(rows, self._attention_figures(datamodule, paths, examples)):
                row.append(wandb.Image(figure))
        for logger in loggers:
            logger.log_table(
                key=f"{split}/captions", columns=columns, data=rows, step=self.global_step
            )

    @torch.no_grad()
    def _attention_figures(self, datamodule: Any, paths: Any, examples: list) -> list:
        """One attention-overlay figure (as ``rnn-zoo caption --plot-attention`` draws it) per
        ``(image_id, words)`` example, from the pictures on disk."""
        from datamodules.coco_captions import load_image
        from zoo.caption import attention_figure, attention_maps

        pictures = [load_image(paths[i]) for i, _ in examples]
        images = torch.stack([datamodule.transform(p) for p in pictures]).to(self.device)
        captions = [datamodule.vocab.encode(words) for _, words in examples]
        was_training = self.model.training
        self.model.eval()
        maps = attention_maps(self.model, images, captions)
        self.model.train(was_training)
        return [
            attention_figure(picture, [*words, "</s>"], weights)
            for picture, (_, words), weights in zip(pictures, examples, maps)
        ]

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The vocabulary and data settings: what decoding new pictures needs."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "state_dict"):
            checkpoint["data_state"] = datamodule.state_dict()
            hparams = getattr(datamodule, "hparams", {})
            checkpoint["data_hparams"] = {k: v for k, v in hparams.items() if not k.startswith("_")}
