"""Neural machine translation: teacher-forced training, real decoding, corpus BLEU and chrF."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.loggers import WandbLogger
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.parallel_text import BOS, EOS, Batch
from zoo.errors import DataError, UserError
from zoo.models.translation import RNNSearch, TranslationModel
from zoo.translate import decode_batch

#: Builds a model from the source and target vocabulary sizes: a recipe's ``model`` entry is a
#: ``class_path`` (``zoo.models.RNNSearch``, ``zoo.models.Seq2Seq``, ``zoo.models.LuongNMT``) with
#: the class's other ``init_args``; the task supplies the two sizes, linked from the data.
ModelFactory = Callable[[int, int], TranslationModel]


def score_corpus(
    hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False
) -> tuple[Any, Any, str]:
    """sacreBLEU's corpus BLEU and chrF of detokenised text (default settings: 13a tokenisation,
    exp smoothing; chrF with n=6, beta=2), and the two signatures as one line."""
    bleu, chrf = BLEU(lowercase=lowercase), CHRF(lowercase=lowercase)
    refs = [list(references)]
    bleu_score, chrf_score = (
        bleu.corpus_score(hypotheses, refs),
        chrf.corpus_score(hypotheses, refs),
    )
    return bleu_score, chrf_score, f"BLEU {bleu.get_signature()} | chrF {chrf.get_signature()}"


class TranslationTask(pl.LightningModule):
    """Trains a :class:`~zoo.models.translation.TranslationModel` on parallel text.

    Training minimises the teacher-forced cross-entropy per target token (padding ignored).
    Evaluation decodes for real (beam search, or greedy with beam size 1) up to
    ``ceil(max_len_a * source tokens) + max_len_b`` tokens, detokenises with the data module and
    scores corpus BLEU and chrF with sacreBLEU against the original references; ``val/ppl`` is the
    teacher-forced per-token perplexity. Under data parallelism each rank decodes its own
    sentences and every rank gathers all ``(index, hypothesis)`` pairs before scoring, so the
    scores are those of the whole split (corpus BLEU is not a mean of per-rank BLEUs).

    Logged: ``train/loss``; ``val/loss``, ``val/ppl``, ``val/bleu``, ``val/chrf``; ``test/`` the
    same with the beam, plus ``test/bleu_greedy`` and ``test/chrf_greedy``; attention matrices of
    a few validation sentences as images, to loggers with ``log_image`` (W&B).

    Args:
        src_vocab_size, tgt_vocab_size: linked from the data module by the CLI.
        model: builds the model from the two vocabulary sizes, e.g. ``RNNSearch`` or
            ``functools.partial(Seq2Seq, embedding_dim=256, ...)``.
        optimizer: e.g. ``torch.optim.Adadelta`` (Bahdanau et al.) or ``torch.optim.SGD``.
        lr_scheduler: optional; stepped every ``scheduler_frequency`` ``scheduler_interval`` s.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        scheduler_frequency: scheduler steps every this many intervals; a fraction of an epoch
            (``0.5``: every half epoch, Sutskever et al. 2014) becomes the matching number of
            training batches of this run.
        label_smoothing: of the training loss only (perplexity is always the plain NLL).
        beam_size: beam of the test split (1: greedy search); the test also decodes greedily.
        length_penalty: hypotheses are ranked by ``log p / len ** length_penalty``.
        early_stopping: a sentence's beam search ends when its best beam has ended (OpenNMT-py,
            Joey NMT), else when all have (:func:`zoo.decoding.beam_search`): faster, and on the
            Bible demo 0.5 BLEU lower.
        max_len_a, max_len_b: longest hypothesis, ``ceil(a * n) + b`` for ``n`` source tokens.
        val_beam_size: beam during validation (default: ``beam_size``; 1 is fastest).
        attention_examples: validation sentences whose attention is logged as images.
    """

    #: The CLI feeds the data module's vocabulary sizes into the model.
    cli_links = [
        ("data.num_src_tokens", "src_vocab_size"),
        ("data.num_tgt_tokens", "tgt_vocab_size"),
    ]

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
        if scheduler_frequency <= 0 or (
            scheduler_frequency != int(scheduler_frequency)
            and (scheduler_interval != "epoch" or scheduler_frequency > 1)
        ):
            raise UserError(
                "scheduler_frequency must be a whole number of intervals, or a fraction of an "
                f"epoch below 1; got {scheduler_frequency} with interval {scheduler_interval!r}"
            )
        self.model = model(src_vocab_size, tgt_vocab_size)
        cls = type(self.model)
        decoding = {
            "beam_size": beam_size,
            "length_penalty": length_penalty,
            "early_stopping": early_stopping,
            "max_len_a": max_len_a,
            "max_len_b": max_len_b,
        }
        # Only JSON-able values go into checkpoints, which load with weights_only=True.
        self.save_hyperparameters(
            {
                "task": "translation",
                "model": self.model.config(),
                "model_class": f"{cls.__module__}.{cls.__qualname__}",
                "decoding": decoding,
            }
        )
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.scheduler_interval, self.scheduler_frequency = scheduler_interval, scheduler_frequency
        self.label_smoothing = label_smoothing
        self.decoding = decoding
        self.val_beam_size = val_beam_size or beam_size
        self.attention_examples = attention_examples
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()
        self._hypotheses: dict[str, list[tuple[int, str]]] = {}  # suffix -> (index, text)
        self._signature_shown = False

    # ------------------------------------------------------------------ setup
    def _data(self) -> Any:
        """The trainer's data module: it detokenises hypotheses and holds the references."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is None or not hasattr(datamodule, "detokenize"):
            raise UserError(
                "translation evaluation needs the ParallelTextDataModule (to detokenise and to "
                "read the references): pass datamodule= to the trainer"
            )
        return datamodule

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "num_src_tokens"):
            return
        sizes = (datamodule.num_src_tokens, datamodule.num_tgt_tokens)
        if sizes != (self.model.src_vocab_size, self.model.tgt_vocab_size):
            raise DataError(
                f"the model's vocabularies have {self.model.src_vocab_size} / "
                f"{self.model.tgt_vocab_size} tokens but the data's have {sizes[0]} / {sizes[1]}; "
                "let the CLI link them from the data"
            )
        if datamodule.pad_id != self.model.pad_id:
            raise DataError(f"model.pad_id is {self.model.pad_id}, the data's {datamodule.pad_id}")

    def on_fit_start(self) -> None:
        for logger in self.loggers:  # W&B run summaries keep the best value, not the last
            if isinstance(logger, WandbLogger):
                for name, summary in (("val/bleu", "max"), ("val/chrf", "max"), ("val/ppl", "min")):
                    logger.experiment.define_metric(name, summary=summary)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        interval, frequency = self.scheduler_interval, self.scheduler_frequency
        if frequency < 1:  # a fraction of an epoch, in this run's training batches per epoch
            self.trainer.estimated_stepping_batches  # noqa: B018 - sets num_training_batches
            batches = self.trainer.num_training_batches
            interval, frequency = "step", max(1, int(batches * frequency))
        config = {"scheduler": self.lr_scheduler(optimizer), "interval": interval}
        return {"optimizer": optimizer, "lr_scheduler": {**config, "frequency": int(frequency)}}

    # ------------------------------------------------------------------ steps
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, src_lengths, tgt_in)

    def _nll(self, batch: Batch, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy per target token (padding ignored), and the number of tokens."""
        logits = self.model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        pad = self.model.pad_id
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=pad,
            label_smoothing=label_smoothing,
        )
        return loss, (batch.tgt_out != pad).sum()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _ = self._nll(batch, self.label_smoothing)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch)
        )
        return loss

    def _eval_step(self, batch: Batch, metric: MeanMetric, beams: dict[str, int]) -> Any:
        nll, tokens = self._nll(batch)
        metric.update(nll, weight=tokens)
        datamodule, index, best = self._data(), batch.index.tolist(), None
        for suffix, beam_size in beams.items():
            hyps = decode_batch(
                self.model, batch.src, batch.src_lengths, beam_size=beam_size,
                length_penalty=self.decoding["length_penalty"],
                early_stopping=self.decoding.get("early_stopping", True),
                max_len_a=self.decoding["max_len_a"], max_len_b=self.decoding["max_len_b"],
            )  # fmt: skip
            texts = [datamodule.detokenize(ids) for ids in hyps.best]
            self._hypotheses.setdefault(suffix, []).extend(zip(index, texts))
            best = hyps.best if best is None else best
        return best

    def on_validation_epoch_start(self) -> None:
        self._hypotheses = {}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        best = self._eval_step(batch, self.val_nll, {"": self.val_beam_size})
        if batch_idx == self.trainer.num_val_batches[dataloader_idx] // 2:  # middle lengths
            self._log_attention(batch, best)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def on_test_epoch_start(self) -> None:
        self._hypotheses = {}

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.test_nll, {"": self.decoding["beam_size"], "_greedy": 1})

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    # ---------------------------------------------------------------- metrics
    def _gather(self, pairs: list[tuple[int, str]]) -> dict[int, str]:
        """Every rank's ``(index, hypothesis)`` pairs, on every rank, by index."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, pairs)
            pairs = [pair for part in parts for pair in part]
        return dict(sorted(pairs))  # a sentence decoded twice (padded samplers) counts once

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        nll = metric.compute()  # mean over every target token of the split, summed over ranks
        metric.reset()
        values: dict[str, Any] = {f"{split}/loss": nll, f"{split}/ppl": nll.exp()}
        datamodule = self._data()
        references = datamodule.references(split)
        lowercase = bool(getattr(datamodule, "lowercase", False))
        for suffix, pairs in self._hypotheses.items():
            by_index = self._gather(pairs)
            refs = [references[i] for i in by_index]
            bleu, chrf, signature = score_corpus(list(by_index.values()), refs, lowercase)
            values[f"{split}/bleu{suffix}"] = bleu.score
            values[f"{split}/chrf{suffix}"] = chrf.score
            if not self._signature_shown:
                self.print(f"sacreBLEU: {signature}")
                self._signature_shown = True
        self._hypotheses = {}
        # Every rank computed the same scores from the same gathered text: the mean over ranks
        # leaves them as they are (and keeps Lightning from warning about unsynced metrics).
        self.log_dict(values, prog_bar=True, sync_dist=True)

    def _log_attention(self, batch: Batch, best: list[list[int]]) -> None:
        """Attention matrices of a few sentences, as images, to loggers that take them."""
        loggers = [lg for lg in self.loggers if hasattr(lg, "log_image")]
        if (
            not loggers
            or self.attention_examples < 1
            or self.global_rank != 0
            or self.trainer.sanity_checking
            or getattr(self.model, "attention", None) is None
        ):
            return
        from zoo.alignment import alignment_figure, figure_to_array, forced_alignment

        n = min(self.attention_examples, len(batch))
        src, src_lengths, targets = batch.src[:n], batch.src_lengths[:n], best[:n]
        weights = forced_alignment(self.model, src, src_lengths, targets, BOS, EOS)
        if weights is None:
            return
        datamodule = self._data()
        src_vocab, tgt_vocab = datamodule.src_vocab.tokens, datamodule.tgt_vocab.tokens
        images, captions = [], []
        for i, (w, target) in enumerate(zip(weights, targets)):
            source = [src_vocab[t] for t in batch.src[i, : int(src_lengths[i])].tolist()]
            fig = alignment_figure(w, source, [tgt_vocab[t] for t in target] + ["</s>"])
            images.append(figure_to_array(fig))
            captions.append(f"sentence {int(batch.index[i])}")
        for logger in loggers:
            logger.log_image(
                key="val/attention", images=images, step=self.global_step, caption=captions
            )

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Vocabularies (and SentencePiece models) and the data settings: what ``rnn-zoo
        translate`` needs to encode new sources and detokenise translations."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "state_dict"):
            checkpoint["data_state"] = datamodule.state_dict()
            hparams = getattr(datamodule, "hparams", {})  # LightningCLI adds a _class_path
            checkpoint["data_hparams"] = {k: v for k, v in hparams.items() if not k.startswith("_")}
