"""A prepared split of parallel text, read back (written by :mod:`datamodules.token_store`).

The folder is a Hugging Face dataset (``save_to_disk``: one Arrow stream file of ``src`` and
``tgt`` id lists and ``ref`` lines) plus ``meta.json`` and ``index.npz``: every row's byte position
in the Arrow file and its length, per side. Rows are read with one ``pread`` each, so nothing of
the file stays mapped and a reader's memory grows only by those positions and lengths.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class StoredRows:
    """One side's ids, read like :class:`pairs.Ragged` (``self[i]``, ``lengths``, ``len``) from
    the split's Arrow file with one ``pread`` a row: only the rows a batch asks for are read,
    and nothing stays mapped. (A memory-mapped file grew a reading process by about as much as
    the file: the kernel maps the neighbouring pages of every row read.)"""

    def __init__(self, path: Path, positions: np.ndarray, lengths: np.ndarray) -> None:
        self.path, self.positions, self.lengths = path, positions, lengths
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = int(self.lengths[i]) * 4
        return np.frombuffer(os.pread(self._fd, size, int(self.positions[i])), dtype="<i4")

    def __getstate__(self) -> dict[str, Any]:  # a pickled copy opens its own file
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _map_arrow(path: Path) -> tuple[pa.Table, int]:
    """An Arrow stream file mapped read-only, zero-copy, and the address it is mapped at."""
    with open(path, "rb") as f:
        mapped = pa.py_buffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    return pa.ipc.open_stream(mapped).read_all(), mapped.address


def write_index(path: Path, arrow: Path) -> None:
    """``index.npz`` beside a split's Arrow file: for each side, every row's byte position in
    the file and its length (what :class:`StoredRows` reads by)."""
    table, base = _map_arrow(arrow)
    index = {}
    for side in ("src", "tgt"):
        positions, lengths = [], []
        for chunk in table[side].chunks:
            values = chunk.values
            start = values.buffers()[1].address - base + 4 * values.offset
            offsets = chunk.offsets.to_numpy().astype(np.int64)
            positions.append(start + 4 * offsets[:-1])
            lengths.append(np.diff(offsets).astype(np.int32))
        index[f"{side}_positions"] = np.concatenate(positions or [np.zeros(0, np.int64)])
        index[f"{side}_lengths"] = np.concatenate(lengths or [np.zeros(0, np.int32)])
    np.savez(path / "index.npz", **index)


class StoredSplit:
    """One prepared split: ``src`` and ``tgt`` ids (:class:`StoredRows`), the kept pairs' target
    lines (:meth:`references`), and what preparing it skipped (``skipped_empty``,
    ``dropped_long``). The folder is also a Hugging Face dataset (``datasets.load_from_disk``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        self.arrow = path / meta["file"]
        with np.load(path / "index.npz") as index:
            self.src, self.tgt = (
                StoredRows(self.arrow, index[f"{side}_positions"], index[f"{side}_lengths"])
                for side in ("src", "tgt")
            )
        self.skipped_empty, self.dropped_long = meta["skipped_empty"], meta["dropped_long"]
        self.origin = meta["origin"]

    def __len__(self) -> int:
        return len(self.src)

    def references(self) -> list[str]:
        return _map_arrow(self.arrow)[0]["ref"].to_pylist()
