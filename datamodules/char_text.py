"""Character-level text: code-point vocabulary and batches laid out for truncated BPTT.

The corpus is held as one integer tensor (no per-character Python objects) and cut, as in
Karpathy's char-rnn and pytorch/examples' ``batchify``, into ``batch_size`` parallel streams. Batch
``i`` holds window ``i`` of every stream, so the hidden state left by batch ``i`` is the right one
to start batch ``i + 1`` with::

    stream 0: [ w0 | w1 | w2 | ... ]      batch i = window i of all streams, (B, T)
    stream 1: [ w0 | w1 | w2 | ... ]

``unit: byte`` reads bytes instead of characters (the enwik8 experiments, Graves 2013: the 205
byte values of the first 100 MB of Wikipedia): an uncompressed file is memory-mapped and each
window's bytes become ids only when it is served, so a 100 MB corpus is never copied.
"""

from __future__ import annotations

import glob
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from datamodules.resume import Resumable, trained_batches
from datamodules.text_files import read_bytes, read_text
from datamodules.vocab import UNK_CHAR, CharVocab, code_points
from zoo.errors import DataError

BUNDLED_SHAKESPEARE = Path(__file__).resolve().parent / "data" / "shakespeare.txt.gz"


def map_bytes(path: Path) -> np.ndarray:
    """A file's bytes as a uint8 array: memory-mapped (copy-on-write, never written) when the
    file is plain, decompressed into memory when it ends in ``.gz``."""
    if path.suffix == ".gz" or not path.is_file():
        return np.frombuffer(bytearray(read_bytes(path)), dtype=np.uint8)
    if not path.stat().st_size:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="c")


class StreamLoader(Resumable):
    """Yields ``(x, y)`` windows of ``(B, T)`` ids, stream-major, for truncated BPTT.

    Under data parallelism the corpus is cut into ``batch_size * world_size`` streams and rank
    ``r`` takes streams ``[r * B, (r + 1) * B)``; each rank carries the hidden state of its own
    streams, and the union over ranks is exactly what one process with ``B * world_size`` streams
    sees. It is a plain iterable (not a ``DataLoader``), so Lightning never re-samples it.

    The loader is *stateful* for exact mid-epoch resume: Lightning stores ``state_dict()`` in the
    checkpoint and calls ``load_state_dict`` before iterating again.

    Args:
        ids: ``(N,)`` token ids of one split.
        batch_size: streams per process.
        seq_len: window length ``T`` (the truncation length of BPTT).
        rank, world_size: this process and how many share the streams.
        drop_last: drop the last, shorter window (training) or keep it (evaluation, so that every
            character of the split is scored).
        consumed: callable returning how many batches of the current epoch the trainer has
            processed (prefetching means the loader cannot know it by itself).
        table: ids of the values in ``ids`` (``unit: byte``: byte -> id), applied per window.
    """

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        consumed: Callable[[], int] | None = None,
        table: Tensor | None = None,
    ) -> None:
        streams = batch_size * world_size
        stream_len = (len(ids) - 1) // streams
        if stream_len < (seq_len if drop_last else 1):
            raise DataError(
                f"split of {len(ids):,} characters is too short for {streams} streams x "
                f"{seq_len} steps; lower batch_size or seq_len, or give more text"
            )
        usable = streams * stream_len
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        self.inputs = ids[:usable].view(streams, stream_len)[rows]  # (B, S)
        self.targets = ids[1 : usable + 1].view(streams, stream_len)[rows]  # next characters
        self.seq_len = seq_len
        self.drop_last = drop_last
        self.consumed = consumed
        self.table = table
        self._start = 0

    def __len__(self) -> int:
        stream_len = self.inputs.shape[1]
        if self.drop_last:
            return stream_len // self.seq_len
        return -(-stream_len // self.seq_len)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        start, self._start = self._start, 0
        for i in range(start, len(self)):
            window = slice(i * self.seq_len, (i + 1) * self.seq_len)
            x, y = self.inputs[:, window].long(), self.targets[:, window].long()
            yield (x, y) if self.table is None else (self.table[x], self.table[y])


def expand_paths(patterns: Sequence[str]) -> list[str]:
    """Expand globs; ``stdlib:PATTERN`` globs in this Python's standard library sources.

    ``stdlib:*.py`` is the analogue of Karpathy's Linux-kernel experiment on code that every
    machine with Python has.
    """
    paths = []
    for pattern in patterns:
        if pattern.startswith("stdlib:"):
            pattern = str(Path(sysconfig.get_paths()["stdlib"]) / pattern[len("stdlib:") :])
        if any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern))
            if not found:
                raise DataError(f"{pattern}: no file matches this pattern")
            paths.extend(found)
        else:
            paths.append(pattern)
    return paths


class CharTextDataModule(pl.LightningDataModule):
    """One or more UTF-8 text files, split contiguously into train / val / test.

    Args:
        paths: text files (``.gz`` allowed), concatenated in order; globs and ``stdlib:*.py``
            (see :func:`expand_paths`) are expanded. Defaults to the bundled Shakespeare corpus.
        batch_size: parallel streams per process.
        seq_len: truncated-BPTT window length.
        val_fraction, test_fraction: the last fractions of the corpus, in that order.
        eval_batch_size: streams for validation / test (default: ``batch_size``).
        predict: a text file for ``rnn-zoo predict`` (default: the test split), read in one
            stream per process, in order.
        unit: ``"char"`` (Unicode characters of UTF-8 text) or ``"byte"`` (raw bytes, any file;
            uncompressed files are memory-mapped).
    """

    def __init__(
        self,
        paths: list[str] | None = None,
        batch_size: int = 32,
        seq_len: int = 100,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        eval_batch_size: int | None = None,
        predict: str | None = None,
        unit: Literal["char", "byte"] = "char",
    ) -> None:
        super().__init__()
        if unit not in ("char", "byte"):
            raise DataError(f"data.unit must be 'char' or 'byte', not {unit!r}")
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if value < 1:
                raise DataError(f"data.{name} must be at least 1, got {value}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise DataError(f"data.eval_batch_size must be at least 1, got {eval_batch_size}")
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
            raise DataError(
                f"val_fraction and test_fraction must be in [0, 1): {val_fraction}, {test_fraction}"
            )
        if val_fraction + test_fraction >= 1:
            raise DataError("val_fraction + test_fraction must leave some text for training")
        if paths is not None and not [p for p in paths if str(p)]:  # [] or [""]: no file named
            raise DataError(
                f"data.paths is {list(paths)}: name at least one text file, or leave data.paths "
                "out to train on the bundled Shakespeare"
            )
        self.paths = [str(p) for p in paths] if paths else [str(BUNDLED_SHAKESPEARE)]
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.eval_batch_size = eval_batch_size or batch_size
        self.predict = predict
        self.unit = unit
        self._splits: dict[str, Tensor] | None = None
        self._vocab: CharVocab | None = None
        self._table: Tensor | None = None  # byte -> id, with unit: byte
        self._bytes: np.ndarray | None = None

    # ------------------------------------------------------------------ data
    def _load(self) -> None:
        if self.unit == "byte":
            return self._load_bytes()
        points = np.concatenate([code_points(read_text(p)) for p in expand_paths(self.paths)])
        n_train, n_val = self._sizes(len(points))
        self._vocab = CharVocab.from_points(points[:n_train])
        self._set_splits(self._vocab.encode_points(points), n_train, n_val)

    def _load_bytes(self) -> None:
        paths = expand_paths(self.paths)
        parts = [map_bytes(Path(p)) for p in paths]
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if not len(raw):
            raise DataError(f"{', '.join(paths)}: no bytes to learn from")
        n_train, n_val = self._sizes(len(raw))
        counts = np.zeros(256, np.int64)
        for start in range(0, n_train, 1 << 24):  # in pieces: no int64 copy of the corpus
            counts += np.bincount(raw[start : min(start + (1 << 24), n_train)], minlength=256)
        self._vocab = CharVocab.from_points(np.flatnonzero(counts).astype(np.uint32), "byte")
        self._table = self._vocab.encode_points(np.arange(256, dtype=np.uint32)).long()
        self._bytes = raw  # the mapped file (or the decompressed bytes)
        self._set_splits(torch.from_numpy(raw), n_train, n_val)

    def _sizes(self, n: int) -> tuple[int, int]:
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        return n - n_val - n_test, n_val

    def _set_splits(self, ids: Tensor, n_train: int, n_val: int) -> None:
        self._splits = {
            "train": ids[:n_train],
            "val": ids[n_train : n_train + n_val],
            "test": ids[n_train + n_val :],
        }

    @property
    def vocab(self) -> CharVocab:
        """Vocabulary of the training split (read from the files on first use)."""
        if self._vocab is None:
            self._load()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> Tensor:
        """A split's ids (with ``unit: byte``, its bytes: :attr:`table` maps them to ids)."""
        if self._splits is None:
            self._load()
        return self._splits[name]

    # ------------------------------------------------------------- loaders
    def _loader(self, name: str, batch_size: int, drop_last: bool, consumed=None) -> StreamLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        try:
            return StreamLoader(
                self.split(name), batch_size, self.seq_len, rank, world, drop_last, consumed,
                self._table,
            )  # fmt: skip
        except DataError as err:
            hint = ""
            if name in ("val", "test"):  # a share of the text, sized by data.<name>_fraction
                hint = f"; data.{name}_fraction is {getattr(self, name + '_fraction')}"
            raise DataError(f"{', '.join(self.paths)}: {name} {err}{hint}") from None

    def train_dataloader(self) -> StreamLoader:
        return self._loader("train", self.batch_size, True, trained_batches(self.trainer))

    def val_dataloader(self) -> StreamLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> StreamLoader:
        return self._loader("test", self.eval_batch_size, False)

    def predict_dataloader(self) -> StreamLoader:
        """The ``predict`` file in one stream per process, in order (or the test split, laid
        out as for testing)."""
        if self.predict is None:
            return self._loader("test", self.eval_batch_size, False)
        if self.unit == "byte":
            points = map_bytes(Path(self.predict)).astype(np.uint32)
        else:
            points = code_points(read_text(self.predict))
        ids = self.vocab.encode_points(points)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        outside = (ids.numpy() == 0) & (points != ord(UNK_CHAR))  # scored as the unknown symbol
        if outside.any() and rank == 0:  # as evaluation does, but said
            unseen = np.unique(points[outside])
            first = unseen[:10]
            shown = (
                "".join(map(chr, first)) if self.unit == "char" else bytes(first.astype(np.uint8))
            )
            print(f"rnn-zoo: warning: {self.predict}: {int(outside.sum())} characters "
                  f"({len(unseen)} distinct: {shown!r}) are not in the model's vocabulary; they are "
                  "scored as its unknown symbol and written as U+FFFD", file=sys.stderr)  # fmt: skip
        try:
            return StreamLoader(ids, 1, self.seq_len, rank, world, drop_last=False)
        except DataError as err:
            raise DataError(f"{self.predict}: {err}") from None
