"""Vocabularies for every task: characters (char LM) and words or pieces with the four specials
(translation, captioning). No Lightning here: sampling, translating and captioning import only
this."""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain

import numpy as np
import torch
from torch import Tensor

UNK_CHAR = "\ufffd"  # character index 0: characters never seen in the training split

#: Word ids of the specials, first in every word vocabulary.
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


def code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as a uint32 array, without per-character objects."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class CharVocab:
    """Code-point vocabulary. Index 0 is reserved for characters unseen in training.

    With ``unit="byte"`` the symbols are bytes (``chr(0)`` .. ``chr(255)`` stand for them): text
    is encoded to UTF-8 before it is looked up, and ids decode to bytes, then to UTF-8 text.
    """

    def __init__(self, chars: Sequence[str], unit: str = "char") -> None:
        if unit not in ("char", "byte"):
            raise ValueError(f"unit must be 'char' or 'byte', not {unit!r}")
        self.unit = unit
        chars = list(chars)
        if not chars or chars[0] != UNK_CHAR:
            chars = [UNK_CHAR, *[c for c in chars if c != UNK_CHAR]]
        self.chars = chars
        self._points = np.array([ord(c) for c in chars[1:]], dtype=np.uint32)
        self._order = np.argsort(self._points)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_points(cls, points: np.ndarray, unit: str = "char") -> CharVocab:
        return cls([UNK_CHAR, *(chr(p) for p in np.unique(points))], unit)

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and (self.chars, self.unit) == (other.chars, other.unit)

    def points(self, text: str) -> np.ndarray:
        """What the symbols of ``text`` are: its code points, or its UTF-8 bytes."""
        if self.unit == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)
        return code_points(text)

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
            symbols = text if self.unit == "char" else text.encode("utf-8").decode("latin-1")
            unknown = sorted({c for c in symbols if c not in self._index or c == UNK_CHAR})
            if unknown:
                shown = "".join(unknown[:10])
                raise ValueError(
                    f"characters not in the model's vocabulary: {shown!r}; "
                    "remove them from the text"
                )
        return self.encode_points(self.points(text)).long()

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        if self.unit == "byte":
            return self._bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.chars[i] for i in _ints(ids))

    def stream_decoder(self) -> Callable[..., str]:
        """:meth:`decode` for text that comes in pieces, ``decoder(ids, final=False)``: with
        bytes, a UTF-8 character split between two pieces is held back until its last byte
        comes, so the pieces join to what :meth:`decode` gives for the whole (``final``: the
        last piece; an unfinished character then becomes U+FFFD)."""
        if self.unit != "byte":
            return lambda ids, final=False: self.decode(ids)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda ids, final=False: decoder.decode(self._bytes(ids), final)

    def _bytes(self, ids: Sequence[int] | Tensor) -> bytes:
        """chr(b) stands for byte b; the unknown symbol for U+FFFD's bytes."""
        chars = (self.chars[i] for i in _ints(ids))
        return b"".join(bytes([ord(c)]) if ord(c) < 256 else c.encode() for c in chars)


def _ints(ids: Sequence[int] | Tensor) -> Sequence[int]:
    return ids.tolist() if isinstance(ids, Tensor) else ids


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
        return cls.from_counts(Counter(chain.from_iterable(sentences)), max_size, min_freq)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int, min_freq: int = 1) -> Vocab:
        """:meth:`build` from the tokens' counts (``{token: count}``), however they were made."""
        ranked = sorted(
            ((word, count) for word, count in counts.items() if word not in SPECIALS),
            key=lambda item: (-item[1], item[0]),
        )
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
