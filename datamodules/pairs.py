"""Batches of sentence pairs and the loaders that lay them out, per rank, for translation.

A source row is the sentence's tokens (reversed with ``reverse_source``, Sutskever et al. 2014,
section 3.3) followed by ``</s>``, so every source, even an empty line, has at least one position.
A target ``y`` becomes ``tgt_in = <s> y`` and ``tgt_out = y </s>`` (teacher forcing).

Under data parallelism the loaders shard by themselves (plain iterables, so Lightning adds no
``DistributedSampler``), using the rank and world size they are given:

- training: every rank computes the same epoch order and takes every ``world_size``-th batch;
  the ranks' batches are disjoint, all ranks run ``ceil(N / batch_size) // world_size`` steps, and
  the up to ``world_size - 1`` batches left over are skipped that epoch (see :func:`epoch_batches`);
- evaluation: each pair goes to exactly one rank (no duplicates to pad with), and every rank runs
  the same number of batches, whose sizes differ by at most one (see :func:`eval_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import torch
from torch import Tensor

from datamodules.resume import Resumable
from datamodules.vocab import BOS, EOS, PAD
from zoo.errors import DataError

BUCKET_BATCHES = 100  # batches per bucketing chunk: sorted by length inside, shuffled across


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
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """All ranks' training batches of one epoch, step-major: batch ``s * world_size + r`` is rank
    ``r``'s ``s``-th. The same for every rank (it depends on seed and epoch only).

    Bucketing sorts the shuffled pairs by (source, target) length within chunks of
    ``BUCKET_BATCHES`` batches, cuts them into batches, and shuffles groups of ``world_size``
    neighbouring batches, so the ranks of one step get similar lengths. The last
    ``len % world_size`` batches are dropped (like ``DistributedSampler(drop_last=True)``), so every
    rank runs the same number of steps; they differ from epoch to epoch.

    With ``max_tokens``, batches count tokens instead (fairseq's ``--max-tokens``): each batch is
    as many consecutive pairs as keep ``pairs x longest row`` (rows with ``</s>`` or ``<s>``, so
    length + 1) within ``max_tokens``; chunks then hold about ``BUCKET_BATCHES`` such batches.
    As in fairseq, those batches are cut once (they depend on ``seed`` only) and only their order
    changes from epoch to epoch, so every epoch has the same number of steps (Lightning counts
    them once, for its progress and schedules).

    Args:
        lengths: ``(N,)`` source and ``(N,)`` target lengths.
    """
    src_len, tgt_len = lengths
    rng = np.random.default_rng([seed, epoch])
    if max_tokens is not None:
        batch_size = max(1, max_tokens // max(1, int(np.mean(np.maximum(src_len, tgt_len))) + 1))
        order = np.random.default_rng([seed]).permutation(len(src_len))
    else:
        order = rng.permutation(len(src_len))
    if bucket:
        chunks = np.split(
            order, range(batch_size * BUCKET_BATCHES, len(order), batch_size * BUCKET_BATCHES)
        )
        order = np.concatenate([c[np.lexsort((tgt_len[c], src_len[c]))] for c in chunks])
    if max_tokens is None:
        batches = np.split(order, range(batch_size, len(order), batch_size))
    else:
        batches = np.split(order, token_cuts(np.maximum(src_len, tgt_len)[order] + 1, max_tokens))
        if extra := len(batches) % world_size:  # the batches left over: others in each epoch
            drop = set(rng.choice(len(batches), extra, replace=False).tolist())
            batches = [b for i, b in enumerate(batches) if i not in drop]
    steps = [
        batches[s * world_size : (s + 1) * world_size] for s in range(len(batches) // world_size)
    ]
    if bucket or max_tokens is not None:
        steps = [steps[s] for s in rng.permutation(len(steps))]
    return [batch for step in steps for batch in step]


def token_cuts(rows: np.ndarray, max_tokens: int) -> list[int]:
    """Where to cut a sequence of row lengths so that every piece keeps
    ``len(piece) * max(piece) <= max_tokens`` (a row longer than that is a piece alone)."""
    cuts, start, longest = [], 0, 0
    for i, length in enumerate(rows.tolist()):
        longest = max(longest, length)
        if (i + 1 - start) * longest > max_tokens and i > start:
            cuts.append(i)
            start, longest = i, length
    return cuts


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


class TrainLoader(Resumable):
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
        max_tokens: int | None = None,
    ) -> None:
        self.src, self.tgt, self.batch_size, self.max_tokens = src, tgt, batch_size, max_tokens
        self.lengths = (np.asarray(src.lengths), np.asarray(tgt.lengths))
        self._cached: tuple[int, list[np.ndarray]] | None = None
        if max_tokens is None and -(-len(src) // batch_size) < world_size:
            raise DataError(
                f"has {len(src)} pairs, too few for {world_size} processes x batch_size {batch_size}"
            )
        self.bucket, self.seed, self.reverse_source = bucket, seed, reverse_source
        self.rank, self.world_size = rank, world_size
        self.epoch, self._epoch_fn, self.consumed = 0, epoch, consumed
        self._start = 0
        # token batches are cut once per run (see epoch_batches): so is their count
        self._token_batches = len(self.batches(0)) if max_tokens is not None else 0
        if max_tokens is not None and self._token_batches < 1:
            raise DataError(
                f"has {len(src)} pairs, too few for {world_size} processes x max_tokens {max_tokens}"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches (sentence indices) for ``epoch`` (default: the current one)."""
        if epoch is None:
            epoch = self._epoch_fn() if self._epoch_fn else self.epoch
        if self._cached is None or self._cached[0] != epoch:
            every = epoch_batches(
                self.lengths, self.batch_size, self.seed, epoch, self.bucket, self.world_size,
                self.max_tokens,
            )  # fmt: skip
            self._cached = epoch, every[self.rank :: self.world_size]
        return self._cached[1]

    def __len__(self) -> int:
        if self.max_tokens is not None:
            return self._token_batches
        return -(-len(self.src) // self.batch_size) // self.world_size

    def __iter__(self) -> Iterator[Batch]:
        start, self._start = self._start, 0
        for index in self.batches()[start:]:
            yield make_batch(self.src, self.tgt, index, self.reverse_source)


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
