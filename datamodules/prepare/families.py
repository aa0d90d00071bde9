"""The Tux Paint split, grouped: stamps of one family (the same thing filled or outlined, in
another case, size or number) or with the same caption go to the same side, so that the test
split holds nothing a model saw in training."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol


class Captioned(Protocol):
    """A stamp: its picture path under the stamps folder and its caption."""

    path: str
    caption: str


def split_of(key: str) -> str:
    """The split of a group of stamps from the SHA-1 of its key: 80/10/10 train/val/test.

    Args:
        key: the group's first picture path, relative to the stamps folder, e.g.
            ``"animals/mammals/koala.png"`` (:func:`split_stamps`).
    """
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "val" if bucket < 90 else "test"


_VARIANT = re.compile(r"[-_ ]?(filled|outlined|outline)$")
_NUMBERED = re.compile(r"[-_ ]?\d+[a-z]?$")  # frog-1, fireman200b, fireman240a


def family_of(path: str) -> str:
    """What a stamp is, whatever the variant: its file name without the folder, extension, case,
    ``_filled`` / ``_outline`` and number or size suffixes (``letters/A_outline.png`` and
    ``letters/a_filled.png`` are both ``a``; ``fireman200b`` and ``fireman240a`` are
    ``fireman``; ``frog-1`` is ``frog``)."""
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    while True:
        shorter = _NUMBERED.sub("", _VARIANT.sub("", stem))
        if shorter == stem or not shorter:
            return stem
        stem = shorter


def caption_key(caption: str) -> str:
    """A caption as words only, lower case: "The letter A." and "the letter a" are one."""
    return " ".join(re.findall(r"\w+", caption.lower()))


def split_stamps(stamps: Sequence[Captioned]) -> dict[str, str]:
    """Picture path -> split, with every family (:func:`family_of`) and every caption on one
    side: stamps that share either are one group, split by the hash of its first path (so a
    stamp alone keeps the split of its own path). A random split by picture would put the same
    letter, filled in train and outlined in test, on both sides, and flatter the test scores."""
    parent = list(range(len(stamps)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, stamp in enumerate(stamps):
        for key in (f"family {family_of(stamp.path)}", f"caption {caption_key(stamp.caption)}"):
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    groups: dict[int, list[str]] = {}
    for i, stamp in enumerate(stamps):
        groups.setdefault(root(i), []).append(stamp.path)
    return {path: split_of(min(paths)) for paths in groups.values() for path in paths}
