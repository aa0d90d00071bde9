"""Character-level text: code-point vocabulary and batches laid out for truncated BPTT.

The corpus is held as one integer tensor (no per-character Python objects) and cut, as in
Karpathy's char-rnn and pytorch/examples' ``batchify``, into ``batch_size`` parallel streams. Batch
``i`` holds window ``i`` of every stream, so the hidden state left by batch ``i`` is the right one
to start batch ``i + 1`` with::

    stream 0: [ w0 | w1 | w2 | ... ]      batch i = window i of all streams, (B, T)
    stream 1: [ w0 | w1 | w2 | ... ]
"""

from __future__ import annotations

import glob
import gzip
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

import zoo
from zoo.errors import DataError

UNK = "\ufffd"  # index 0: characters never seen in the training split

BUNDLED_SHAKESPEARE = Path(zoo.__file__).parent / "data" / "shakespeare.txt.gz"


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file (``.gz`` transparently), with one-line errors naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; pass an existing UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass a UTF-8 text file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid gzip file ({err})") from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty; a character model needs text to learn from")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path}: looks like a binary file (NUL bytes); pass UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "convert it, e.g. with iconv -t UTF-8"
        ) from None


def code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as a uint32 array, without per-character objects."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class CharVocab:
    """Code-point vocabulary. Index 0 is reserved for characters unseen in training."""

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars or chars[0] != UNK:
            chars = [UNK, *[c for c in chars if c != UNK]]
        self.chars = chars
        self._points = np.array([ord(c) for c in chars[1:]], dtype=np.uint32)
        self._order = np.argsort(self._points)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_points(cls, points: np.ndarray) -> CharVocab:
        return cls([UNK, *(chr(p) for p in np.unique(points))])

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self.chars == other.chars

    def encode_points(self, points: np.ndarray) -> Tensor:
        """Code points -> ids (0 for unknown), vectorised with a binary search."""
        sorted_points = self._points[self._order]
        pos = np.searchsorted(sorted_points, points).clip(0, max(len(sorted_points) - 1, 0))
        found = sorted_points[pos] == points if len(sorted_points) else np.zeros(len(points), bool)
        ids = np.where(found, self._order[pos] + 1, 0)
        return torch.from_numpy(ids.astype(np.int32 if len(self) > 32767 else np.int16))

    def encode(self, text: str, strict: bool = False) -> Tensor:
        """Text -> ids. With ``strict``, characters outside the vocabulary raise ValueError."""
        if strict:
            unknown = sorted({c for c in text if c not in self._index or c == UNK})
            if unknown:
                shown = "".join(unknown[:10])
                raise ValueError(
                    f"characters not in the model's vocabulary: {shown!r}; "
                    "remove them from the text"
                )
        return self.encode_points(code_points(text)).long()

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


class StreamLoader:
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
            yield self.inputs[:, window].long(), self.targets[:, window].long()

    def state_dict(self) -> dict[str, int]:
        return {"position": self.consumed() if self.consumed else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = int(state.get("position", 0))
        self._start = position if position < len(self) else 0  # a finished epoch restarts


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
    """

    def __init__(
        self,
        paths: list[str] | None = None,
        batch_size: int = 32,
        seq_len: int = 100,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
            raise DataError(
                f"val_fraction and test_fraction must be in [0, 1): {val_fraction}, {test_fraction}"
            )
        if val_fraction + test_fraction >= 1:
            raise DataError("val_fraction + test_fraction must leave some text for training")
        self.paths = [str(p) for p in paths] if paths else [str(BUNDLED_SHAKESPEARE)]
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.eval_batch_size = eval_batch_size or batch_size
        self._splits: dict[str, Tensor] | None = None
        self._vocab: CharVocab | None = None

    # ------------------------------------------------------------------ data
    def _load(self) -> None:
        points = np.concatenate([code_points(read_text(p)) for p in expand_paths(self.paths)])
        n_val = int(len(points) * self.val_fraction)
        n_test = int(len(points) * self.test_fraction)
        n_train = len(points) - n_val - n_test
        self._vocab = CharVocab.from_points(points[:n_train])
        ids = self._vocab.encode_points(points)
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
        if self._splits is None:
            self._load()
        return self._splits[name]

    # ------------------------------------------------------------- loaders
    def _loader(self, name: str, batch_size: int, drop_last: bool, consumed=None) -> StreamLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        try:
            return StreamLoader(
                self.split(name), batch_size, self.seq_len, rank, world, drop_last, consumed
            )
        except DataError as err:
            raise DataError(f"{', '.join(self.paths)}: {name} {err}") from None

    def train_dataloader(self) -> StreamLoader:
        def consumed() -> int:  # batches of this epoch that training has processed
            return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

        return self._loader("train", self.batch_size, True, consumed if self.trainer else None)

    def val_dataloader(self) -> StreamLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> StreamLoader:
        return self._loader("test", self.eval_batch_size, False)

    def predict_dataloader(self) -> StreamLoader:
        return self._loader("test", self.eval_batch_size, False)
