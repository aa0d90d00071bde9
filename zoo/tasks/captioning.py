"""Image captioning: teacher-forced training (+ the doubly stochastic attention penalty), real
decoding at evaluation and corpus BLEU-1..4 against every reference caption."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from datamodules.coco_captions import Batch
from datamodules.parallel_text import BOS, EOS
from zoo.decoding import beam_search, greedy_search
from zoo.errors import DataError, UserError
from zoo.models.captioning import CaptioningModel, ShowAttendTell, doubly_stochastic_penalty

#: Builds a model from the vocabulary size: a recipe's ``model`` entry is a ``class_path``
#: (``zoo.models.captioning.ShowAttendTell`` or ``...ShowAndTell``) with its other ``init_args``.
ModelFactory = Callable[[int], CaptioningModel]


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
) -> list[float]:
    """Corpus BLEU-1..4 (Papineni et al. 2002) of tokenised captions with several references.

    As the COCO caption evaluation's ``Bleu`` scorer (pycocoevalcap, not installed here): clipped
    n-gram counts summed over the corpus, the brevity penalty from the reference length closest
    to each hypothesis' (the shorter one on ties), no smoothing (a BLEU-n with no matching n-gram
    is 0). pycocoevalcap's scorer adds a tiny epsilon to the counts, so its values can differ in
    the last decimals.

    Returns:
        ``[BLEU-1, BLEU-2, BLEU-3, BLEU-4]``, each in [0, 1].
    """
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            counts = _ngrams(hyp, n)
            most = Counter()
            for ref in refs:
                most |= _ngrams(ref, n)  # max count of each n-gram over the references
            matches[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0:
        return [0.0] * 4
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    scores, log_sum = [], 0.0
    for n in range(4):
        if matches[n] == 0:
            scores += [0.0] * (4 - n)
            break
        log_sum += math.log(matches[n] / totals[n])
        scores.append(brevity * math.exp(log_sum / (n + 1)))
    return scores


class CaptioningTask(pl.LightningModule):
    """Trains a :class:`~zoo.models.captioning.CaptioningModel` on captioned pictures.

    Training minimises the teacher-forced cross-entropy per word (padding ignored), plus, for
    models with attention, ``attention_penalty`` times the doubly stochastic term (Xu et al. 2015,
    eq. 14; their lambda is 1). Evaluation decodes every picture once (beam search, greedy with
    beam size 1) and scores corpus BLEU-1..4 against all of its references (our implementation of
    the COCO scorer, :func:`corpus_bleu`; pycocoevalcap and its Java tokeniser are not used).
    ``val/loss`` is the teacher-forced NLL of each picture's first caption. Under data parallelism
    each rank decodes its share of the pictures and every rank gathers all ``(image id,
    caption)`` pairs before scoring.

    Logged: ``train/loss`` (and ``train/attention_penalty``); ``val/loss``, ``val/bleu1`` ..
    ``val/bleu4`` (0-100); ``test/`` the same.

    Args:
        vocab_size: linked from the data module by the CLI.
        model: builds the model from the vocabulary size.
        optimizer: e.g. ``torch.optim.Adam`` (Xu et al. used RMSProp / Adam).
        attention_penalty: lambda of the doubly stochastic regularisation.
        beam_size: beam at test time (1: greedy search).
        val_beam_size: beam during validation (default: ``beam_size``).
        max_len: longest generated caption, in words.
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
        model, state = self.model, self.model.encode(images)
        size, max_len = images.shape[0], self.decoding["max_len"]
        if beam_size == 1:
            hyps = greedy_search(model.decode_step, state, BOS, EOS, max_len, batch_size=size)
        else:
            hyps = beam_search(
                model.decode_step, model.reorder_state, state, BOS, EOS, max_len,
                beam_size=beam_size, batch_size=size,
            )  # fmt: skip
        return hyps.best

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

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        values: dict[str, Any] = {f"{split}/loss": metric.compute()}
        metric.reset()
        by_id = self._gather(self._hypotheses)
        references = self._data().reference_tokens(split)
        bleu = corpus_bleu(list(by_id.values()), [references[i] for i in by_id])
        values.update({f"{split}/bleu{n}": 100 * b for n, b in enumerate(bleu, start=1)})
        self.last_captions = by_id  # for inspection after trainer.validate / test
        self._hypotheses = []
        self.log_dict(values, prog_bar=True, sync_dist=True)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The vocabulary and data settings: what decoding new pictures needs."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "state_dict"):
            checkpoint["data_state"] = datamodule.state_dict()
            hparams = getattr(datamodule, "hparams", {})
            checkpoint["data_hparams"] = {k: v for k, v in hparams.items() if not k.startswith("_")}
