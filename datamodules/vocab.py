"""Character vocabulary and text reading, without Lightning (sampling imports only this)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zoo.errors import DataError

UNK = "\ufffd"  # index 0: characters never seen in the training split


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it ends in ``.gz``; one-line errors naming the file."""
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
    return raw


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file (``.gz`` transparently), with one-line errors naming the file."""
    path = Path(path)
    raw = read_bytes(path)
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
