"""Parallel text for translation: word (Moses) or subword (SentencePiece) vocabularies and
length-bucketed batches of sentence pairs, for Sutskever et al.'s seq2seq and Bahdanau et al.'s
RNNsearch.

Each split goes through::

    files -> aligned UTF-8 lines -> skip pairs with an empty side -> tokens -> ids
          -> (training only) drop pairs over max_len tokens -> Batch(src, tgt_in, tgt_out, ...)

How rows and batches are laid out, and sharded under data parallelism (``trainer.global_rank``,
``trainer.world_size``), is :mod:`datamodules.pairs`; how sentences become ids and back is
:class:`datamodules.tokenizers.TextCodec`, which checkpoints carry.

Sentence indices (``Batch.index``, :meth:`ParallelTextDataModule.references`) count the pairs that
were kept, not file lines: pairs with an empty side are skipped in every split, and training pairs
longer than ``max_len`` are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from datamodules.pairs import EvalLoader, Ragged, TrainLoader
from datamodules.text_files import drop_empty, find_file, read_lines, read_parallel, read_tsv
from datamodules.tokenizers import TextCodec, moses_words, train_sentencepiece
from datamodules.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from zoo.errors import DataError, UserError

BUNDLED_BIBLE = Path(__file__).resolve().parent / "data" / "bible-enfr"
SPLITS = ("train", "val", "test")


@dataclass
class _Text:
    """One split's aligned, stripped, non-empty lines."""

    src: list[str]
    tgt: list[str]
    origin: str  # the file(s), for messages


@dataclass
class _Split:
    """One split in ids, with its original target lines."""

    src: Ragged
    tgt: Ragged
    references: list[str]


class ParallelTextDataModule(pl.LightningDataModule):
    """Aligned sentence pairs for translation (default: the bundled English-French Bible).

    Vocabularies come from the training split only (after the ``max_len`` filter) and are saved in
    checkpoints through :meth:`state_dict`, so ``ParallelTextDataModule.load_from_checkpoint`` gives
    a module that can :meth:`encode_source` and :meth:`detokenize` without the data.

    Args:
        data_dir: folder of ``{prefix}.{lang}`` or ``{prefix}.{lang}.gz`` files, one sentence a
            line (default: ``datamodules/data/bible-enfr``).
        src_lang, tgt_lang: language codes: file suffixes and Moses rules.
        train, val, test: file prefixes of the splits; ``None`` leaves a split out.
        train_tsv, val_tsv, test_tsv: a ``source<TAB>target`` file instead of the two files.
        tokenizer: ``"moses"`` words (sacremoses) or ``"sentencepiece"`` subwords.
        src_vocab_size, tgt_vocab_size: Moses word shortlists, four specials included (the
            rest become ``<unk>``).
        min_freq: Moses words seen fewer times in training become ``<unk>``.
        sp_vocab_size: SentencePiece pieces, specials included (a soft limit on small corpora).
        sp_joint: one SentencePiece model for both sides (else one per side).
        lowercase: lowercase both sides before tokenising.
        max_len: drop training pairs with more tokens on either side (RNNsearch-50).
        reverse_source: reverse the source tokens (Sutskever et al., 2014); ``</s>`` stays last.
        batch_size: training pairs per batch and process.
        eval_batch_size: pairs per evaluation batch (default: ``batch_size``).
        bucket: length-bucketed training batches (else uniformly random ones).
        seed: seed of the training order; epoch ``e`` uses ``(seed, e)``.
        cache_dir: folder to keep tokenised splits and SentencePiece models in (keyed by a hash
            of the text and settings); ``None`` caches in memory only, once per process.
        download: if ``data_dir`` lacks a split's files, download WMT'14 English-French into it
            first (:func:`datamodules.prepare.wmt14.download_wmt14`; set ``val: newstest2013`` and
            ``test: newstest2014``).
        predict: source sentences, one a line, for ``rnn-zoo predict`` (default: the test split's
            sources); each line on exactly one process.
    """

    pad_id = PAD
    unk_id = UNK
    bos_id = BOS
    eos_id = EOS

    def __init__(
        self,
        data_dir: str | None = None,
        src_lang: str = "en",
        tgt_lang: str = "fr",
        train: str | None = "train",
        val: str | None = "valid",
        test: str | None = "test",
        train_tsv: str | None = None,
        val_tsv: str | None = None,
        test_tsv: str | None = None,
        tokenizer: Literal["moses", "sentencepiece"] = "moses",
        src_vocab_size: int = 30000,
        tgt_vocab_size: int = 30000,
        min_freq: int = 1,
        sp_vocab_size: int = 8000,
        sp_joint: bool = True,
        lowercase: bool = False,
        max_len: int = 50,
        reverse_source: bool = False,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        bucket: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        download: bool = False,
        predict: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive(
            src_vocab_size=src_vocab_size - len(SPECIALS),
            tgt_vocab_size=tgt_vocab_size - len(SPECIALS),
            sp_vocab_size=sp_vocab_size - len(SPECIALS),
            min_freq=min_freq,
            max_len=max_len,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or batch_size,
        )
        if tokenizer not in ("moses", "sentencepiece"):
            raise UserError(f"tokenizer must be 'moses' or 'sentencepiece', not {tokenizer!r}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir) if data_dir else BUNDLED_BIBLE
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.prefixes = {"train": train, "val": val, "test": test}
        self.tsv = {"train": train_tsv, "val": val_tsv, "test": test_tsv}
        self.tokenizer = tokenizer
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.min_freq, self.sp_vocab_size, self.sp_joint = min_freq, sp_vocab_size, sp_joint
        self.lowercase, self.max_len, self.reverse_source = lowercase, max_len, reverse_source
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.bucket, self.seed, self.cache_dir = bucket, seed, cache_dir
        self.download, self.predict = download, predict
        self.skipped_empty: dict[str, int] = {}  # pairs with an empty side, per split
        self.dropped_long = 0  # training pairs over max_len
        self._texts: dict[str, _Text] = {}
        self._splits: dict[str, _Split] = {}
        self._codec: TextCodec | None = None  # the vocabularies, from the training split

    # ---------------------------------------------------------------- vocabulary
    @property
    def codec(self) -> TextCodec:
        """Sentences <-> ids (vocabularies built from the training split on first use)."""
        if self._codec is None:
            self._codec = self._build_codec()
        return self._codec

    @property
    def src_vocab(self) -> Vocab:
        """Source vocabulary (built from the training split on first use)."""
        return self.codec.src_vocab

    @property
    def tgt_vocab(self) -> Vocab:
        """Target vocabulary (built from the training split on first use)."""
        return self.codec.tgt_vocab

    @property
    def num_src_tokens(self) -> int:
        return len(self.src_vocab)

    @property
    def num_tgt_tokens(self) -> int:
        return len(self.tgt_vocab)

    def _settings(self) -> dict[str, Any]:
        return {
            "src_lang": self.src_lang, "tgt_lang": self.tgt_lang, "lowercase": self.lowercase,
            "max_len": self.max_len, "reverse_source": self.reverse_source,
        }  # fmt: skip

    def _build_codec(self) -> TextCodec:
        text = self._text("train")
        if self.tokenizer == "sentencepiece":
            return TextCodec.from_sentencepiece(self._train_sp_models(text), **self._settings())
        src = [t.split() for t in self._words(text.src, self.src_lang)]
        tgt = [t.split() for t in self._words(text.tgt, self.tgt_lang)]
        keep = [i for i in range(len(src)) if self._fits(len(src[i]), len(tgt[i]))]
        if not keep:
            raise DataError(f"{text.origin}: every pair is longer than max_len={self.max_len}")
        src_vocab = Vocab.build((src[i] for i in keep), self.src_vocab_size, self.min_freq)
        tgt_vocab = Vocab.build((tgt[i] for i in keep), self.tgt_vocab_size, self.min_freq)
        return TextCodec("moses", src_vocab, tgt_vocab, **self._settings())

    def _words(self, lines: list[str], lang: str) -> list[str]:
        lines = [line.lower() for line in lines] if self.lowercase else lines
        return moses_words(lines, lang, self.cache_dir)

    def _train_sp_models(self, text: _Text) -> dict[str, bytes]:
        src, tgt = text.src, text.tgt
        if self.lowercase:
            src, tgt = [s.lower() for s in src], [t.lower() for t in tgt]
        if self.sp_joint:
            joint = train_sentencepiece(src + tgt, self.sp_vocab_size, self.cache_dir)
            return {"src": joint, "tgt": joint}
        return {
            "src": train_sentencepiece(src, self.sp_vocab_size, self.cache_dir),
            "tgt": train_sentencepiece(tgt, self.sp_vocab_size, self.cache_dir),
        }

    def _fits(self, src_len: int | np.ndarray, tgt_len: int | np.ndarray) -> Any:
        return (src_len <= self.max_len) & (tgt_len <= self.max_len)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The codec's state: vocabularies (token lists) and SentencePiece models (uint8
        tensors), what decoding needs, in types ``torch.load(weights_only=True)`` accepts."""
        return self.codec.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("tokenizer", self.tokenizer) != self.tokenizer:
            raise UserError(
                f"the checkpoint was made with tokenizer={state['tokenizer']!r}, "
                f"not {self.tokenizer!r}; set data.tokenizer accordingly"
            )
        self._codec = TextCodec.from_state({"tokenizer": self.tokenizer, **state}, self._settings())
        self._splits.clear()  # ids depend on the vocabularies

    # -------------------------------------------------------------------- text
    def _text(self, name: str) -> _Text:
        """A split's lines, read once; pairs with an empty side are skipped with a warning."""
        if name not in self._texts:
            if self.tsv[name]:
                origin = self.tsv[name]
                src, tgt = read_tsv(Path(origin))
            elif self.prefixes[name]:
                self.prepare_data()
                src_path = find_file(self.data_dir, self.prefixes[name], self.src_lang)
                tgt_path = find_file(self.data_dir, self.prefixes[name], self.tgt_lang)
                origin = f"{src_path} | {tgt_path}"
                src, tgt = read_parallel(src_path, tgt_path)
            else:
                raise UserError(f"no {name} split: set data.{name} or data.{name}_tsv")
            src, tgt, skipped = drop_empty(src, tgt)
            self.skipped_empty[name] = skipped
            if skipped:
                rank_zero_warn(f"{origin}: skipped {skipped:,} pairs with an empty side")
            if not src:
                raise DataError(f"{origin}: no sentence pairs with text on both sides")
            self._texts[name] = _Text(src, tgt, origin)
        return self._texts[name]

    def _split(self, name: str) -> _Split:
        """A split in ids (the training split filtered by ``max_len``), made once per vocabulary."""
        if name not in self._splits:
            text = self._text(name)
            src = Ragged.from_lists(self.codec.encode(text.src, "src", self.cache_dir))
            tgt = Ragged.from_lists(self.codec.encode(text.tgt, "tgt", self.cache_dir))
            keep = np.arange(len(src))
            if name == "train":
                keep = np.flatnonzero(self._fits(src.lengths, tgt.lengths))
                self.dropped_long = len(src) - len(keep)
                rank_zero_info(
                    f"{text.origin}: dropped {self.dropped_long:,} of {len(src):,} training pairs "
                    f"longer than max_len={self.max_len} tokens"
                )
                if not len(keep):
                    raise DataError(
                        f"{text.origin}: every pair is longer than max_len={self.max_len}"
                    )
                src, tgt = src.subset(keep), tgt.subset(keep)
            self._splits[name] = _Split(src, tgt, [text.tgt[i] for i in keep])
        return self._splits[name]

    def references(self, split: str) -> list[str]:
        """The original (untokenised, stripped) target lines of ``split`` (``"train"``,
        ``"val"``, ``"test"``), in the order ``Batch.index`` refers to.

        They keep their case: with ``lowercase``, score with ``sacrebleu``'s ``lowercase=True``.
        """
        return self._split(_check_split(split)).references

    def split_size(self, split: str) -> int:
        """Pairs in ``split`` after skipping empty pairs (and, for training, long ones)."""
        return len(self._split(_check_split(split)).src)

    def prepare_data(self) -> None:
        """With ``download``, fetch WMT'14 English-French if a split's files are missing."""
        prefixes = [p for split, p in self.prefixes.items() if p and not self.tsv[split]]
        langs = (self.src_lang, self.tgt_lang)
        names = [f"{prefix}.{lang}" for prefix in prefixes for lang in langs]
        if self.download and not all(
            (self.data_dir / name).is_file() or (self.data_dir / f"{name}.gz").is_file()
            for name in names
        ):
            if not self.hparams.data_dir or sorted(langs) != ["en", "fr"]:
                raise UserError("download fetches WMT'14 en-fr: set data_dir, src_lang, tgt_lang")
            from datamodules.prepare.wmt14 import download_wmt14

            download_wmt14(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Encode the training and validation splits before fitting, so data errors come first.

        Other stages read their split lazily, when the loader is made: after a checkpoint's
        vocabulary has been restored by :meth:`load_state_dict`.
        """
        if stage in (None, "fit"):
            for name in ("train", "val"):
                if self.prefixes[name] or self.tsv[name]:
                    self._split(name)

    # ----------------------------------------------------------------- loaders
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> TrainLoader:
        """This rank's share of the training batches (see :func:`epoch_batches`)."""
        split, (rank, world_size) = self._split("train"), self._rank()
        trainer = self.trainer
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None

        def consumed() -> int:  # batches of this epoch that training has processed
            return trainer.fit_loop.epoch_loop.batch_progress.current.processed

        try:
            return TrainLoader(
                split.src, split.tgt, self.batch_size, self.bucket, self.seed,
                self.reverse_source, rank, world_size, epoch, consumed if trainer else None,
            )  # fmt: skip
        except DataError as err:
            raise DataError(f"{self._text('train').origin}: training split {err}") from None

    def _eval_loader(self, name: str) -> EvalLoader | list:
        if not (self.prefixes[name] or self.tsv[name]):
            return []
        split, (rank, world_size) = self._split(name), self._rank()
        try:
            return EvalLoader(
                split.src, split.tgt, self.eval_batch_size, self.reverse_source, rank, world_size
            )
        except DataError as err:
            raise DataError(f"{self._text(name).origin}: {name} split {err}") from None

    def val_dataloader(self) -> EvalLoader | list:
        """This rank's validation batches: each pair on exactly one rank (see
        :func:`eval_batches`); an empty list when ``val`` is ``None``."""
        return self._eval_loader("val")

    def test_dataloader(self) -> EvalLoader | list:
        """This rank's test batches, laid out like :meth:`val_dataloader`."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> EvalLoader:
        """The ``predict`` file's sources (or the test split's), laid out as for evaluation;
        ``Batch.index`` is the line number (0-based)."""
        if self.predict is None:
            return self._eval_loader("test")
        lines = read_lines(self.predict)
        src = Ragged.from_lists(self.codec.encode(lines, "src"))
        rank, world_size = self._rank()
        try:
            empty = Ragged.from_lists([[] for _ in lines])
            return EvalLoader(
                src, empty, self.eval_batch_size, self.reverse_source, rank, world_size
            )
        except DataError as err:
            raise DataError(f"{self.predict}: {err}") from None

    # -------------------------------------------------------- translate time
    def encode_source(self, lines: list[str]) -> tuple[Tensor, Tensor]:
        """:meth:`TextCodec.encode_source`: sources laid out as in training."""
        return self.codec.encode_source(lines)

    def detokenize(self, ids: Sequence[int] | Tensor) -> str:
        """:meth:`TextCodec.detokenize`: target ids -> text, stopping at ``</s>``."""
        return self.codec.detokenize(ids)


# ------------------------------------------------------------------------------- helpers
def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            smallest = " (it counts the four specials)" if "vocab" in name else ""
            raise UserError(f"data.{name} is too small{smallest}")


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
    return name
