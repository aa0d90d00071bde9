"""Parallel text for translation: word (Moses) or subword (SentencePiece) vocabularies and
length-bucketed batches of sentence pairs, for Sutskever et al.'s seq2seq and Bahdanau et al.'s
RNNsearch.

Each split goes through::

    files -> aligned UTF-8 lines -> skip pairs with an empty side -> tokens -> ids
          -> (training only) drop pairs over max_len tokens -> Batch(src, tgt_in, tgt_out, ...)

A source row is the sentence's tokens (reversed with ``reverse_source``, Sutskever et al. 2014,
section 3.3) followed by ``</s>``, so every source, even an empty line, has at least one position.
A target ``y`` becomes ``tgt_in = <s> y`` and ``tgt_out = y </s>`` (teacher forcing).

Under data parallelism the loaders shard by themselves (plain iterables, so Lightning adds no
``DistributedSampler``), using ``trainer.global_rank`` and ``trainer.world_size``:

- training: every rank computes the same epoch order and takes every ``world_size``-th batch;
  the ranks' batches are disjoint, all ranks run ``ceil(N / batch_size) // world_size`` steps, and
  the up to ``world_size - 1`` batches left over are skipped that epoch (see :func:`epoch_batches`);
- evaluation: each pair goes to exactly one rank (no duplicates to pad with), and every rank runs
  the same number of batches, whose sizes differ by at most one (see :func:`eval_batches`).

Sentence indices (``Batch.index``, :meth:`ParallelTextDataModule.references`) count the pairs that
were kept, not file lines: pairs with an empty side are skipped in every split, and training pairs
longer than ``max_len`` are dropped.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

import zoo
from datamodules.vocab import read_bytes
from zoo.errors import DataError, UserError

BUNDLED_BIBLE = Path(zoo.__file__).parent / "data" / "bible-enfr"

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
SPLITS = ("train", "val", "test")
BUCKET_BATCHES = 100  # batches per bucketing chunk: sorted by length inside, shuffled across
SOURCE_LIMIT = 3  # encode_source refuses lines over SOURCE_LIMIT * max_len tokens

_MEMORY: dict[str, Any] = {}  # per-process cache: tokenised splits and SentencePiece models


# ----------------------------------------------------------------------------- reading files
def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` transparently), without their line ends.

    Lines are split on ``\\n`` only (a trailing ``\\r`` is removed), not on the other Unicode breaks
    that ``str.splitlines`` knows, so line numbers agree with ``wc -l`` and sides stay aligned.

    Raises:
        DataError: one line naming the file: missing, not gzip, or a line that is not UTF-8.
    """
    path = Path(path)
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[err.start]:02x}); "
            "convert the file, e.g. with iconv -t UTF-8"
        ) from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def find_file(data_dir: Path, prefix: str, lang: str) -> Path:
    """``data_dir / f"{prefix}.{lang}"``, or the same with ``.gz``."""
    plain = data_dir / f"{prefix}.{lang}"
    for path in (plain, plain.with_name(plain.name + ".gz")):
        if path.is_file():
            return path
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory; set data_dir to the corpus folder")
    raise DataError(f"{plain}: no such file (nor {plain.name}.gz) in {data_dir}")


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    """The two sides of a corpus, checked to have the same number of lines."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}; "
            "the two sides must be aligned line by line"
        )
    return src, tgt


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    """A file of ``source<TAB>target`` lines, split into the two sides."""
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), 1):
        if line.count("\t") != 1:
            raise DataError(
                f"{path}: line {number} has {line.count(chr(9))} tabs; "
                "each line must be source<TAB>target"
            )
        source, target = line.split("\t")
        src.append(source)
        tgt.append(target)
    return src, tgt


def drop_empty(src: list[str], tgt: list[str]) -> tuple[list[str], list[str], int]:
    """Strip both sides and skip pairs with an empty side; returns the number skipped."""
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    return [s for s, _ in kept], [t for _, t in kept], len(pairs) - len(kept)


# ---------------------------------------------------------------------------- tokenisation
def _digest(*parts: str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return sha.hexdigest()[:24]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{package} is not installed; pip install {package}") from None


def _file_cached(path: Path | None, compute: Callable[[], bytes]) -> bytes:
    """``compute()``, stored at ``path`` (written atomically) and read from there next time."""
    if path is not None and path.is_file():
        return path.read_bytes()
    data = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # ranks racing to write the same entry cannot corrupt it
    return data


@cache
def _moses_tokenizer(lang: str) -> Any:
    _version("sacremoses")
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang)


@cache
def _moses_detokenizer(lang: str) -> Any:
    _version("sacremoses")
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang)


def moses_tokenize(lines: list[str], lang: str, cache_dir: str | None = None) -> list[str]:
    """Moses tokens of each line, space-joined (tokens never contain whitespace).

    Cached per process, and in ``cache_dir`` (plain UTF-8 text, one line per sentence) if given,
    under a hash of the lines, the language and the sacremoses version.
    """
    key = "moses-" + _digest(lang, _version("sacremoses"), "\n".join(lines))
    if key not in _MEMORY:
        path = Path(cache_dir) / f"{key}.{lang}.txt" if cache_dir else None

        def compute() -> bytes:
            tokenizer = _moses_tokenizer(lang)
            tokens = (" ".join(tokenizer.tokenize(line, escape=False)) for line in lines)
            return "\n".join(tokens).encode("utf-8")

        out = _file_cached(path, compute).decode("utf-8").split("\n") if lines else []
        if len(out) != len(lines):  # a damaged cache file: tokenise again
            out = compute().decode("utf-8").split("\n")
        _MEMORY[key] = out
    return _MEMORY[key]


def train_sentencepiece(lines: list[str], vocab_size: int, cache_dir: str | None = None) -> bytes:
    """Serialized unigram SentencePiece model trained on ``lines``, with our special ids.

    Deterministic: every sentence is used and training runs on one thread (the model differs
    with the thread count). Cached per process and in ``cache_dir`` like :func:`moses_tokenize`.
    """
    key = "spm-" + _digest(str(vocab_size), _version("sentencepiece"), "\n".join(lines))
    if key not in _MEMORY:
        import sentencepiece as spm

        def compute() -> bytes:
            model = io.BytesIO()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus yields fewer pieces instead of failing
                character_coverage=1.0,
                input_sentence_size=0,
                num_threads=1,
                minloglevel=2,
                **{f"{name}_id": i for i, name in enumerate(("pad", "unk", "bos", "eos"))},
                **{f"{name}_piece": s for name, s in zip(("pad", "unk", "bos", "eos"), SPECIALS)},
            )
            return model.getvalue()

        path = Path(cache_dir) / f"{key}.model" if cache_dir else None
        _MEMORY[key] = _file_cached(path, compute)
    return _MEMORY[key]


# ------------------------------------------------------------------------------ vocabulary
class Vocab:
    """Token <-> id table whose first four entries are ``<pad> <unk> <s> </s>`` (ids 0-3)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}: {tokens[:4]}")
        self.tokens = tokens
        self._index = {token: i for i, token in enumerate(tokens)}
        if len(self._index) != len(tokens):
            raise ValueError("a vocabulary cannot list a token twice")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int, min_freq: int = 1) -> Vocab:
        """The ``max_size - 4`` most frequent tokens seen at least ``min_freq`` times.

        Ties are broken by the tokens' code points, so the table depends only on the counts.
        """
        counts = Counter(chain.from_iterable(sentences))
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [word for word, count in ranked if count >= min_freq]
        return cls([*SPECIALS, *words[: max(max_size - len(SPECIALS), 0)]])

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> Vocab:
        return cls(tokens)

    def to_list(self) -> list[str]:
        """The tokens in id order: what a checkpoint stores (loads with ``weights_only=True``)."""
        return list(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {' '.join(self.tokens[4:9])} ...)"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Tokens -> ids; unknown tokens map to ``<unk>`` (1)."""
        return [self._index.get(token, UNK) for token in tokens]

    def decode(self, ids: Iterable[int] | Tensor, skip_unk: bool = False) -> list[str]:
        """Ids -> tokens, stopping at ``</s>`` and skipping ``<pad>`` and ``<s>``.

        ``<unk>`` is kept as the token ``<unk>`` unless ``skip_unk``: dropping it silently would
        hide the model's unknown words from the reader and from BLEU.
        """
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS) and not (skip_unk and i == UNK):
                tokens.append(self.tokens[i])
        return tokens


# ------------------------------------------------------------------------------- batches
class Ragged:
    """Variable-length id sequences in one flat array: sequence ``i`` is
    ``values[offsets[i]:offsets[i + 1]]`` (no per-sentence Python objects)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.fromiter(chain.from_iterable(seqs), dtype=np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, index: np.ndarray) -> Ragged:
        return Ragged.from_lists([self[i] for i in index])


@dataclass
class Batch:
    """Padded sentence pairs. ``src_lengths`` and ``index`` stay on the CPU when moved (what
    ``pack_padded_sequence`` wants); Lightning moves a batch with :meth:`to`.

    Attributes:
        src: ``(B, S)`` source ids (tokens, then ``</s>``), padded with ``pad_id`` (0).
        src_lengths: ``(B,)`` source lengths, at least 1.
        tgt_in: ``(B, T)`` decoder inputs ``<s> y``, padded.
        tgt_out: ``(B, T)`` decoder targets ``y </s>``, padded.
        index: ``(B,)`` indices of the pairs in their split, for :meth:`references`.
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    index: Tensor

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = {"device": device, "non_blocking": non_blocking}
        return replace(
            self,
            src=self.src.to(**move),
            tgt_in=self.tgt_in.to(**move),
            tgt_out=self.tgt_out.to(**move),
        )


def pad_rows(rows: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Rows of ids -> ``(B, L)`` long tensor padded with ``PAD`` and ``(B,)`` lengths."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    out = np.full((len(rows), max(lengths, default=0)), PAD, dtype=np.int64)
    for row, ids in zip(out, rows):
        row[: len(ids)] = ids
    return torch.from_numpy(out), torch.from_numpy(lengths)


def source_row(ids: Sequence[int] | np.ndarray, reverse: bool) -> np.ndarray:
    """Source ids as the encoder reads them: tokens (reversed if asked), then ``</s>``."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.append(ids[::-1] if reverse else ids, EOS)


def make_batch(src: Ragged, tgt: Ragged, index: np.ndarray, reverse_source: bool) -> Batch:
    """Collate the pairs ``index`` of a split into a :class:`Batch`."""
    src_ids, src_lengths = pad_rows([source_row(src[i], reverse_source) for i in index])
    tgt_in, _ = pad_rows([np.append(BOS, tgt[i]) for i in index])
    tgt_out, _ = pad_rows([np.append(tgt[i], EOS) for i in index])
    return Batch(src_ids, src_lengths, tgt_in, tgt_out, torch.from_numpy(np.asarray(index)).long())


# ------------------------------------------------------------------------ batch layouts
def epoch_batches(
    lengths: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    seed: int,
    epoch: int,
    bucket: bool = True,
    world_size: int = 1,
) -> list[np.ndarray]:
    """All ranks' training batches of one epoch, step-major: batch ``s * world_size + r`` is rank
    ``r``'s ``s``-th. The same for every rank (it depends on seed and epoch only).

    Bucketing sorts the shuffled pairs by (source, target) length within chunks of
    ``BUCKET_BATCHES`` batches, cuts them into batches, and shuffles groups of ``world_size``
    neighbouring batches, so the ranks of one step get similar lengths. The last
    ``len % world_size`` batches are dropped (like ``DistributedSampler(drop_last=True)``), so every
    rank runs the same number of steps; they differ from epoch to epoch.

    Args:
        lengths: ``(N,)`` source and ``(N,)`` target lengths.
    """
    src_len, tgt_len = lengths
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_len))
    if bucket:
        chunks = np.split(
            order, range(batch_size * BUCKET_BATCHES, len(order), batch_size * BUCKET_BATCHES)
        )
        order = np.concatenate([c[np.lexsort((tgt_len[c], src_len[c]))] for c in chunks])
    batches = np.split(order, range(batch_size, len(order), batch_size))
    steps = [
        batches[s * world_size : (s + 1) * world_size] for s in range(len(batches) // world_size)
    ]
    if bucket:
        steps = [steps[s] for s in rng.permutation(len(steps))]
    return [batch for step in steps for batch in step]


def eval_batches(
    lengths: tuple[np.ndarray, np.ndarray], batch_size: int, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """Rank ``rank``'s evaluation batches: every pair exactly once over all ranks, no padding.

    Pairs are sorted by length and cut into ``k * world_size`` near-equal contiguous batches;
    batch ``j`` goes to rank ``j % world_size``. Every rank gets the same number of batches,
    ``k = min(ceil(N / (batch_size * world_size)), N // world_size)``, of at most ``batch_size``
    pairs (but up to two when ``batch_size`` is 1 and ``world_size`` does not divide ``N``); batch
    sizes differ by at most one within a rank and across ranks.

    Raises:
        DataError: fewer pairs than ranks (a rank would have nothing to evaluate).
    """
    src_len, tgt_len = lengths
    n = len(src_len)
    if n < world_size:
        raise DataError(f"has {n} pairs, fewer than the {world_size} processes")
    per_rank = min(-(-n // (batch_size * world_size)), n // world_size)
    chunks = np.array_split(np.lexsort((tgt_len, src_len)), per_rank * world_size)
    return chunks[rank::world_size]


class TrainLoader:
    """Training batches of one rank, reshuffled every epoch; a plain iterable, so Lightning never
    adds a ``DistributedSampler``. Each rank takes its own batches of :func:`epoch_batches`, so the
    ranks' batches are disjoint and together are what one process would run (bar the dropped
    remainder).

    Like ``StreamLoader`` it is stateful for exact mid-epoch resume: the epoch's order is
    reproducible, and ``state_dict`` records how many batches were consumed.

    Args:
        src, tgt: the split's ids.
        epoch: callable returning the current epoch (else :meth:`set_epoch` sets it).
        consumed: callable returning how many batches of this epoch the trainer processed.
    """

    def __init__(
        self,
        src: Ragged,
        tgt: Ragged,
        batch_size: int,
        bucket: bool = True,
        seed: int = 0,
        reverse_source: bool = False,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
        consumed: Callable[[], int] | None = None,
    ) -> None:
        if -(-len(src) // batch_size) < world_size:
            raise DataError(
                f"has {len(src)} pairs, too few for {world_size} processes x batch_size {batch_size}"
            )
        self.src, self.tgt, self.batch_size = src, tgt, batch_size
        self.bucket, self.seed, self.reverse_source = bucket, seed, reverse_source
        self.rank, self.world_size = rank, world_size
        self.epoch, self._epoch_fn, self.consumed = 0, epoch, consumed
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches (sentence indices) for ``epoch`` (default: the current one)."""
        if epoch is None:
            epoch = self._epoch_fn() if self._epoch_fn else self.epoch
        lengths = (self.src.lengths, self.tgt.lengths)
        every = epoch_batches(
            lengths, self.batch_size, self.seed, epoch, self.bucket, self.world_size
        )
        return every[self.rank :: self.world_size]

    def __len__(self) -> int:
        return -(-len(self.src) // self.batch_size) // self.world_size

    def __iter__(self) -> Iterator[Batch]:
        start, self._start = self._start, 0
        for index in self.batches()[start:]:
            yield make_batch(self.src, self.tgt, index, self.reverse_source)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.consumed() if self.consumed else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = int(state.get("position", 0))
        self._start = position if position < len(self) else 0  # a finished epoch restarts


class EvalLoader:
    """Evaluation batches of one rank (see :func:`eval_batches`), sorted by length."""

    def __init__(
        self,
        src: Ragged,
        tgt: Ragged,
        batch_size: int,
        reverse_source: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.src, self.tgt, self.reverse_source = src, tgt, reverse_source
        self.index = eval_batches((src.lengths, tgt.lengths), batch_size, rank, world_size)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[Batch]:
        for index in self.index:
            yield make_batch(self.src, self.tgt, index, self.reverse_source)


# --------------------------------------------------------------------------- data module
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
            line (default: ``zoo/data/bible-enfr``).
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
            first (:func:`datamodules.wmt14.download_wmt14`; set ``val: newstest2013`` and
            ``test: newstest2014``).
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
        self.download = download
        self.skipped_empty: dict[str, int] = {}  # pairs with an empty side, per split
        self.dropped_long = 0  # training pairs over max_len
        self._texts: dict[str, _Text] = {}
        self._splits: dict[str, _Split] = {}
        self._vocabs: tuple[Vocab, Vocab] | None = None
        self._sp_models: dict[str, bytes] = {}  # side -> serialized SentencePiece model

    # ---------------------------------------------------------------- vocabulary
    @property
    def src_vocab(self) -> Vocab:
        """Source vocabulary (built from the training split on first use)."""
        return self._ensure_vocabs()[0]

    @property
    def tgt_vocab(self) -> Vocab:
        """Target vocabulary (built from the training split on first use)."""
        return self._ensure_vocabs()[1]

    @property
    def num_src_tokens(self) -> int:
        return len(self.src_vocab)

    @property
    def num_tgt_tokens(self) -> int:
        return len(self.tgt_vocab)

    def _ensure_vocabs(self) -> tuple[Vocab, Vocab]:
        if self._vocabs is None:
            if self.tokenizer == "moses":
                self._vocabs = self._build_word_vocabs()
            else:
                self._set_sp_models(self._train_sp_models())
        return self._vocabs

    def _build_word_vocabs(self) -> tuple[Vocab, Vocab]:
        text = self._text("train")
        src = [t.split() for t in self._moses(text.src, self.src_lang)]
        tgt = [t.split() for t in self._moses(text.tgt, self.tgt_lang)]
        keep = [i for i in range(len(src)) if self._fits(len(src[i]), len(tgt[i]))]
        if not keep:
            raise DataError(f"{text.origin}: every pair is longer than max_len={self.max_len}")
        return (
            Vocab.build((src[i] for i in keep), self.src_vocab_size, self.min_freq),
            Vocab.build((tgt[i] for i in keep), self.tgt_vocab_size, self.min_freq),
        )

    def _train_sp_models(self) -> dict[str, bytes]:
        text = self._text("train")
        src, tgt = self._normalize(text.src), self._normalize(text.tgt)
        if self.sp_joint:
            joint = train_sentencepiece(src + tgt, self.sp_vocab_size, self.cache_dir)
            return {"src": joint, "tgt": joint}
        return {
            "src": train_sentencepiece(src, self.sp_vocab_size, self.cache_dir),
            "tgt": train_sentencepiece(tgt, self.sp_vocab_size, self.cache_dir),
        }

    def _set_sp_models(self, models: dict[str, bytes]) -> None:
        self._sp_models = models
        self._vocabs = (_sp_vocab(models["src"]), _sp_vocab(models["tgt"]))
        self._splits.clear()  # ids depend on the models

    def _fits(self, src_len: int | np.ndarray, tgt_len: int | np.ndarray) -> Any:
        return (src_len <= self.max_len) & (tgt_len <= self.max_len)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Vocabularies (token lists) and SentencePiece models (uint8 tensors): what decoding
        needs, in types that ``torch.load(weights_only=True)`` accepts."""
        state: dict[str, Any] = {
            "tokenizer": self.tokenizer,
            "src_vocab": self.src_vocab.to_list(),
            "tgt_vocab": self.tgt_vocab.to_list(),
        }
        for side, model in self._sp_models.items():
            state[f"{side}_sp_model"] = torch.frombuffer(bytearray(model), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("tokenizer", self.tokenizer) != self.tokenizer:
            raise UserError(
                f"the checkpoint was made with tokenizer={state['tokenizer']!r}, "
                f"not {self.tokenizer!r}; set data.tokenizer accordingly"
            )
        if self.tokenizer == "sentencepiece":
            self._set_sp_models(
                {side: _as_bytes(state[f"{side}_sp_model"]) for side in ("src", "tgt")}
            )
        else:
            self._vocabs = (
                Vocab.from_list(state["src_vocab"]),
                Vocab.from_list(state["tgt_vocab"]),
            )
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

    def _normalize(self, lines: list[str]) -> list[str]:
        return [line.lower() for line in lines] if self.lowercase else lines

    def _moses(self, lines: list[str], lang: str, cache: bool = True) -> list[str]:
        lines = self._normalize(lines)
        if cache:
            return moses_tokenize(lines, lang, self.cache_dir)
        tokenizer = _moses_tokenizer(lang)
        return [" ".join(tokenizer.tokenize(line, escape=False)) for line in lines]

    def _encode(self, lines: list[str], side: str, cache: bool = True) -> list[list[int]]:
        """Lines of one side (``"src"`` or ``"tgt"``) -> ids, without specials."""
        src_vocab, tgt_vocab = self._ensure_vocabs()
        if self.tokenizer == "sentencepiece":
            return _sp_processor(self._sp_models[side]).encode(self._normalize(lines))
        vocab, lang = (src_vocab, self.src_lang) if side == "src" else (tgt_vocab, self.tgt_lang)
        return [vocab.encode(tokens.split()) for tokens in self._moses(lines, lang, cache)]

    def _split(self, name: str) -> _Split:
        """A split in ids (the training split filtered by ``max_len``), made once per vocabulary."""
        if name not in self._splits:
            text = self._text(name)
            src = Ragged.from_lists(self._encode(text.src, "src"))
            tgt = Ragged.from_lists(self._encode(text.tgt, "tgt"))
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
            from datamodules.wmt14 import download_wmt14

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

    # -------------------------------------------------------- translate time
    def encode_source(self, lines: list[str]) -> tuple[Tensor, Tensor]:
        """Source sentences -> ``(B, S)`` padded ids and ``(B,)`` lengths, laid out as in training.

        Unknown words become ``<unk>``; an empty line becomes just ``</s>``.

        Raises:
            ValueError: a line has more than ``3 * max_len`` tokens (naming the line, 1-based).
        """
        limit = SOURCE_LIMIT * self.max_len
        rows = self._encode(lines, "src", cache=False)
        for number, ids in enumerate(rows, 1):
            if len(ids) > limit:
                raise ValueError(
                    f"line {number} has {len(ids)} tokens, more than {limit} "
                    f"({SOURCE_LIMIT} x max_len); split it into shorter sentences"
                )
        return pad_rows([source_row(ids, self.reverse_source) for ids in rows])

    def detokenize(self, ids: Sequence[int] | Tensor) -> str:
        """Target ids (e.g. a decoder's output) -> text, stopping at ``</s>``; for scoring.

        Moses' French rules put a space before ``: ; ! ?`` (French typography) and unbalanced
        quotes may come out spaced differently from the source text; BLEU's ``13a``
        tokenisation and chrF do not see the difference.
        """
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.tokenizer == "sentencepiece":
            ids = ids[: ids.index(EOS)] if EOS in ids else ids
            pieces = [i for i in ids if i not in (PAD, BOS)]
            return _sp_processor(self._sp_models["tgt"]).decode(pieces)
        return _moses_detokenizer(self.tgt_lang).detokenize(self.tgt_vocab.decode(ids))


# ------------------------------------------------------------------------------- helpers
def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            smallest = " (it counts the four specials)" if "vocab" in name else ""
            raise UserError(f"{name} is too small{smallest}")


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
    return name


def _as_bytes(model: Tensor | Sequence[int] | bytes) -> bytes:
    """A serialized model stored as a uint8 tensor or a list of ints -> bytes."""
    if isinstance(model, Tensor):
        return model.to(torch.uint8).numpy().tobytes()
    return bytes(model)


@lru_cache(maxsize=8)
def _sp_processor(model: bytes) -> Any:
    _version("sentencepiece")
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model)


def _sp_vocab(model: bytes) -> Vocab:
    processor = _sp_processor(model)
    return Vocab([processor.id_to_piece(i) for i in range(processor.get_piece_size())])
