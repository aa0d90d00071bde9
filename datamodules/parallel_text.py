"""Parallel text for translation: word (Moses) or subword (SentencePiece) vocabularies and
length-bucketed batches of sentence pairs, for Sutskever et al.'s seq2seq and Bahdanau et al.'s
RNNsearch.

Each split goes, once, through::

    files -> aligned UTF-8 lines -> skip pairs with an empty side -> tokens -> ids
          -> (training only) drop pairs over max_len tokens -> token-id store on disk

in ``workers`` processes (:mod:`datamodules.token_store`), and every run and rank then reads the
rows of its batches from the store and cuts them into ``Batch(src, tgt_in, tgt_out, ...)``.

How rows and batches are laid out, and sharded under data parallelism (``trainer.global_rank``,
``trainer.world_size``), is :mod:`datamodules.pairs`; how sentences become ids and back is
:class:`datamodules.tokenizers.TextCodec`, which checkpoints carry.

Sentence indices (``Batch.index``, :meth:`ParallelTextDataModule.references`) count the pairs that
were kept, not file lines: pairs with an empty side are skipped in every split, and training pairs
longer than ``max_len`` are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from datamodules.pairs import EvalLoader, Ragged, TrainLoader
from datamodules.resume import trained_batches
from datamodules.stored_split import StoredSplit
from datamodules.text_files import find_file, read_lines
from datamodules.token_store import SplitFiles, TokenStore, scratch_root
from datamodules.tokenizers import TextCodec
from datamodules.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from zoo.errors import DataError, UserError

BUNDLED_BIBLE = Path(__file__).resolve().parent / "data" / "bible-enfr"
SPLITS = ("train", "val", "test")


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
        batch_size: training pairs per batch and process (``batch_type: sentences``).
        batch_type: ``"sentences"`` (``batch_size`` pairs a batch, the papers' batches) or
            ``"tokens"`` (as many pairs as fit ``max_tokens``, like fairseq and Joey NMT).
        max_tokens: with ``batch_type: tokens``, the most padded positions (pairs x longest side,
            ``</s>`` included) a training batch holds.
        eval_batch_size: pairs per evaluation batch (default: ``batch_size``).
        bucket: length-bucketed training batches (else uniformly random ones).
        seed: seed of the training order; epoch ``e`` uses ``(seed, e)``.
        cache_dir: folder of the token-id store: splits and vocabularies, keyed by a hash of the
            files and settings, prepared once (by ``prepare_data`` on one process, or ahead of
            time by ``rnn-zoo prepare translation``) and read by row by every run and rank;
            ``None`` prepares into a folder of this process, removed at exit.
        workers: processes that tokenise while preparing.
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
        batch_type: Literal["sentences", "tokens"] = "sentences",
        max_tokens: int = 4096,
        bucket: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        workers: int = 1,
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
            workers=workers,
        )
        if tokenizer not in ("moses", "sentencepiece"):
            raise UserError(f"tokenizer must be 'moses' or 'sentencepiece', not {tokenizer!r}")
        if batch_type not in ("sentences", "tokens"):
            raise UserError(f"batch_type must be 'sentences' or 'tokens', not {batch_type!r}")
        if batch_type == "tokens" and max_tokens < max_len + 1:
            raise UserError(
                f"data.max_tokens={max_tokens} cannot hold one pair of max_len={max_len} tokens; "
                f"set it to at least {max_len + 1}"
            )
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
        self.batch_type, self.max_tokens = batch_type, max_tokens
        self.bucket, self.seed, self.cache_dir, self.workers = bucket, seed, cache_dir, workers
        self.download, self.predict = download, predict
        self.skipped_empty: dict[str, int] = {}  # pairs with an empty side, per split
        self.dropped_long = 0  # training pairs over max_len
        self._splits: dict[str, StoredSplit] = {}
        self._references: dict[str, list[str]] = {}
        self._token_store: TokenStore | None = None
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
        settings = {
            **self._settings(), "tokenizer": self.tokenizer, "src_vocab_size": self.src_vocab_size,
            "tgt_vocab_size": self.tgt_vocab_size, "min_freq": self.min_freq,
            "sp_vocab_size": self.sp_vocab_size, "sp_joint": self.sp_joint,
        }  # fmt: skip
        return self.store.codec(self._files("train"), settings)

    @property
    def store(self) -> TokenStore:
        """The token-id store in ``cache_dir`` (see :mod:`datamodules.token_store`)."""
        if self._token_store is None:
            root = self.cache_dir if self.cache_dir else scratch_root()
            self._token_store = TokenStore(root, self.workers)
        return self._token_store

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
        self._references.clear()

    # -------------------------------------------------------------------- text
    def _files(self, name: str) -> SplitFiles:
        """Where split ``name``'s text is (downloading WMT'14 first with ``download``)."""
        if self.tsv[name]:
            return SplitFiles(Path(self.tsv[name]))
        if not self.prefixes[name]:
            raise UserError(f"no {name} split: set data.{name} or data.{name}_tsv")
        self._download()
        src = find_file(self.data_dir, self.prefixes[name], self.src_lang)
        return SplitFiles(src, find_file(self.data_dir, self.prefixes[name], self.tgt_lang))

    def _split(self, name: str) -> StoredSplit:
        """A split in ids (the training split filtered by ``max_len``), read from the store
        (prepared first if it is not there)."""
        if name not in self._splits:
            settings = {"tokenizer": self.tokenizer, **self._settings()}
            split = self.store.split(self._files(name), self.codec, settings, name == "train")
            self.skipped_empty[name] = split.skipped_empty
            if split.skipped_empty:
                rank_zero_warn(
                    f"{split.origin}: skipped {split.skipped_empty:,} pairs with an empty side"
                )
            if name == "train":
                self.dropped_long = split.dropped_long
                rank_zero_info(
                    f"{split.origin}: dropped {self.dropped_long:,} of "
                    f"{len(split) + self.dropped_long:,} training pairs longer than "
                    f"max_len={self.max_len} tokens"
                )
            self._splits[name] = split
        return self._splits[name]

    def references(self, split: str) -> list[str]:
        """The original (untokenised, stripped) target lines of ``split`` (``"train"``,
        ``"val"``, ``"test"``), in the order ``Batch.index`` refers to.

        They keep their case: with ``lowercase``, score with ``sacrebleu``'s ``lowercase=True``.
        """
        if split not in self._references:
            self._references[_check_split(split)] = self._split(split).references()
        return self._references[split]

    def split_size(self, split: str) -> int:
        """Pairs in ``split`` after skipping empty pairs (and, for training, long ones)."""
        return len(self._split(_check_split(split)).src)

    def _configured(self) -> list[str]:
        return [name for name in SPLITS if self.prefixes[name] or self.tsv[name]]

    def _download(self) -> None:
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

    def prepare(self, splits: Sequence[str] = SPLITS) -> dict[str, int]:
        """Tokenise the configured ``splits`` into the store (vocabularies from the training
        split), in ``workers`` processes; returns the pairs kept per split."""
        try:
            return {name: len(self._split(name)) for name in self._configured() if name in splits}
        finally:
            self.store.close()

    def prepare_data(self) -> None:
        """Download (with ``download``), then, when fitting, prepare the training and validation
        splits on this one process; the other ranks read what it wrote (a shared ``cache_dir``).
        The test split is prepared when it is first read."""
        self._download()
        trainer = self.trainer
        if trainer is None or trainer.state.fn == "fit":
            self.prepare(("train", "val"))

    def setup(self, stage: str | None = None) -> None:
        """Open the training and validation splits before fitting, so data errors come first.

        Other stages read their split lazily, when the loader is made: after a checkpoint's
        vocabulary has been restored by :meth:`load_state_dict`.
        """
        if stage in (None, "fit"):
            for name in ("train", "val"):
                if self.prefixes[name] or self.tsv[name]:
                    self._split(name)
            self.store.close()

    # ----------------------------------------------------------------- loaders
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> TrainLoader:
        """This rank's share of the training batches (see :func:`epoch_batches`)."""
        split, (rank, world_size) = self._split("train"), self._rank()
        trainer = self.trainer
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None

        try:
            return TrainLoader(
                split.src, split.tgt, self.batch_size, self.bucket, self.seed,
                self.reverse_source, rank, world_size, epoch, trained_batches(trainer),
                max_tokens=self.max_tokens if self.batch_type == "tokens" else None,
            )  # fmt: skip
        except DataError as err:
            raise DataError(f"{split.origin}: training split {err}") from None

    def _eval_loader(self, name: str) -> EvalLoader | list:
        if not (self.prefixes[name] or self.tsv[name]):
            return []
        split, (rank, world_size) = self._split(name), self._rank()
        try:
            return EvalLoader(
                split.src, split.tgt, self.eval_batch_size, self.reverse_source, rank, world_size
            )
        except DataError as err:
            raise DataError(f"{split.origin}: {name} split {err}") from None

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
