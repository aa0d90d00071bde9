"""Moses words in Arrow, for the token store (:mod:`datamodules.token_store`): how often each
word occurs (the shortlists) and each word's id (its place in a shortlist), computed batch by
batch in Arrow's C++ kernels rather than word by word in Python.

The tokenised text is space-joined Moses tokens, which never contain whitespace
(:func:`datamodules.tokenizers.moses_words`), so splitting on " " gives exactly the words
``str.split`` gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datamodules.tokenizers import TextCodec
from datamodules.vocab import UNK

COUNT_MERGE = 1 << 22  # words counted per Arrow batch before their counts are merged


def moses_ids(rows: Any, codec: TextCodec, max_len: int | None, path: Path) -> Any:
    """The ids of the tokenised pairs (pairs over ``max_len`` words a side dropped), one Arrow
    batch at a time into ``path``: each word's place in its shortlist (``pc.index_in``), ``<unk>``
    where it has none; what ``Vocab.encode`` gives for each line's words."""
    import datasets

    schema = pa.schema([("src", pa.list_(pa.int32())), ("tgt", pa.list_(pa.int32())),
                        ("ref", pa.string())])  # fmt: skip
    shortlists = {side: pa.array(vocab.to_list()) for side, vocab in
                  (("src", codec.src_vocab), ("tgt", codec.tgt_vocab))}  # fmt: skip
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in rows.data.table.to_batches():
            sides = [word_ids(batch[side], shortlists[side]) for side in ("src", "tgt")]
            out = pa.record_batch([*sides, batch["ref"]], schema=schema)
            if max_len is not None:
                fits = [pc.less_equal(pc.list_value_length(ids), max_len) for ids in sides]
                out = out.filter(pc.and_(*fits))
            writer.write_batch(out)
    return datasets.Dataset.from_file(str(path))


def word_ids(lines: pa.Array, shortlist: pa.Array) -> pa.ListArray:
    """Space-joined words -> a list of ids a line (an empty line: no ids)."""
    words = pc.split_pattern(pc.if_else(pc.equal(lines, ""), pa.scalar(None, pa.string()), lines),
                             " ")  # fmt: skip
    lengths = pc.fill_null(pc.list_value_length(words), 0)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths.to_numpy())]), pa.int32())
    ids = pc.fill_null(pc.index_in(pc.list_flatten(words), value_set=shortlist), UNK)
    return pa.ListArray.from_arrays(offsets, ids.cast(pa.int32()))


def fitting(rows: Any, max_len: int) -> Iterator[pa.RecordBatch]:
    """The tokenised pairs of at most ``max_len`` words a side, one Arrow batch at a time (the
    table stays mapped; only a batch is ever copied)."""
    for batch in rows.data.table.to_batches():
        counts = [
            pc.add(
                pc.count_substring(batch[side], " "), pc.if_else(pc.equal(batch[side], ""), 0, 1)
            )
            for side in ("src", "tgt")
        ]
        yield batch.filter(pc.and_(*(pc.less_equal(c, max_len) for c in counts)))


def word_counts(rows: Any, side: str, max_len: int) -> dict[str, int]:
    """How often each word of one side of the pairs that fit (:func:`fitting`) occurs."""
    parts, pending = [], 0
    for batch in fitting(rows, max_len):
        words = pc.list_flatten(pc.split_pattern(batch[side], " "))
        parts.append(_counted(pc.value_counts(words)))
        pending += len(words)
        if pending > COUNT_MERGE:  # keep one table of distinct words, not one a batch
            parts, pending = [_merged(parts)], 0
    table = _merged(parts) if parts else pa.table({"values": pa.array([], pa.string()),
                                                   "counts": pa.array([], pa.int64())})  # fmt: skip
    counts = dict(zip(table["values"].to_pylist(), table["counts"].to_pylist()))
    counts.pop("", None)  # an empty line splits into one empty string
    return counts


def _counted(value_counts: pa.StructArray) -> pa.Table:
    return pa.table(
        {"values": value_counts.field("values"), "counts": value_counts.field("counts")}
    )


def _merged(parts: list[pa.Table]) -> pa.Table:
    summed = pa.concat_tables(parts).group_by("values").aggregate([("counts", "sum")])
    return pa.table({"values": summed["values"], "counts": summed["counts_sum"]})
