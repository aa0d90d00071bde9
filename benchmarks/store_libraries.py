"""Why the token store is Hugging Face ``datasets`` and not ``litdata``: the same preparation and
the same reads through each, on one corpus.

The corpus is the bundled Bible's training split repeated to ``--pairs`` pairs (each copy's lines
numbered, as in ``benchmarks/data_scale.py``), with RNNsearch-50's settings (Moses words, 30k
shortlists, max_len 50). The vocabularies are built first, through the store, and not timed. Then:

- **prepare**: Moses tokens -> ids of every pair, in ``--workers`` processes, written to disk:
  ``TokenStore.split`` (``datasets``: Arrow text, ``Dataset.map(num_proc)``, ``save_to_disk``)
  against ``litdata.optimize`` running the same tokenising function over the same pairs in
  chunks of 1,000 (``num_workers``), one sample a kept pair;
- **read**: a fresh process opens the prepared folder and reads ``--batches`` batches of 80 rows
  at random indices (what length buckets need: a batch is a set of rows anywhere in the split):
  seconds to open, seconds to read, and peak RSS. ``datasets`` is read through the store's own
  reader (:class:`datamodules.stored_split.StoredSplit`, a ``pread`` a row), ``litdata`` through
  ``StreamingDataset.__getitem__``.

    pip install litdata   # not a dependency of rnn-zoo
    python benchmarks/store_libraries.py [--pairs 100000] [--workers 2] [--rounds 2]

Rounds alternate the two libraries; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.data_scale import write_corpus  # noqa: E402

SETTINGS = {
    "tokenizer": "moses", "src_lang": "en", "tgt_lang": "fr", "lowercase": False, "max_len": 50,
    "reverse_source": False, "src_vocab_size": 30000, "tgt_vocab_size": 30000, "min_freq": 1,
    "sp_vocab_size": 8000, "sp_joint": True,
}  # fmt: skip
CHUNK = 1000


def _codec(store_root: Path, corpus: Path):
    from datamodules.token_store import SplitFiles, TokenStore

    files = SplitFiles(corpus / "train.en", corpus / "train.fr")
    return files, TokenStore(store_root).codec(files, SETTINGS)


def prepare_datasets(corpus: Path, out: Path, workers: int) -> tuple[float, str, int]:
    from datamodules.token_store import TokenStore

    files, codec = _codec(out, corpus)
    start = time.perf_counter()
    split = TokenStore(out, workers).split(files, codec, SETTINGS, train=True)
    seconds = time.perf_counter() - start
    return seconds, str(split.path), len(split)


def _litdata_rows(chunk: tuple[list[str], list[str]], codec=None):
    """One chunk of pairs -> a sample per kept pair (the store's ``_tokens`` then ``_ids``)."""
    from datamodules.token_store import _ids, _tokens

    src, tgt = chunk
    tokens = _tokens({"src": src, "tgt": tgt}, "moses", ("en", "fr"), False)
    ids = _ids(tokens, codec, SETTINGS["max_len"])
    import numpy as np

    for s, t, ref in zip(ids["src"], ids["tgt"], ids["ref"]):
        yield {"src": np.asarray(s, np.int32), "tgt": np.asarray(t, np.int32), "ref": ref}


def prepare_litdata(corpus: Path, out: Path, workers: int) -> tuple[float, str, int]:
    import functools

    from litdata import optimize

    from datamodules.text_files import iter_pairs

    files, codec = _codec(out / "codec", corpus)
    start = time.perf_counter()
    pairs = list(iter_pairs(files.src, files.tgt))
    chunks = [
        tuple(map(list, zip(*pairs[i : i + CHUNK]))) for i in range(0, len(pairs), CHUNK)
    ]  # fmt: skip
    optimize(
        fn=functools.partial(_litdata_rows, codec=codec), inputs=chunks,
        output_dir=str(out / "rows"), num_workers=workers, chunk_bytes="64MB",
        mode="overwrite",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    from litdata import StreamingDataset

    return seconds, str(out / "rows"), len(StreamingDataset(str(out / "rows")))


def _read_here(library: str, path: str, batches: int) -> None:
    import numpy as np

    if library == "datasets":  # imports before the clock: only opening is timed
        from datamodules.stored_split import StoredSplit

        start = time.perf_counter()
        split = StoredSplit(Path(path))
        rows, count = (lambda i: (split.src[i], split.tgt[i])), len(split)
    else:
        from litdata import StreamingDataset

        start = time.perf_counter()
        data = StreamingDataset(path)
        rows, count = (lambda i: (lambda row: (row["src"], row["tgt"]))(data[i])), len(data)
    opened = time.perf_counter() - start
    rng = np.random.default_rng(0)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        for i in rng.integers(0, count, 80):
            src, tgt = rows(int(i))
            tokens += len(src) + len(tgt)
    read = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"open_s": opened, "read_s": read, "peak_rss_mb": peak, "tokens": tokens}))


def read(library: str, path: str, batches: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--read", library, path, str(batches)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="store-libraries-"))
    try:
        corpus = work / "corpus"
        write_corpus(corpus, args.pairs)
        results: dict[str, list] = {"datasets": [], "litdata": []}
        for round_ in range(args.rounds):
            for library, prepare in (("datasets", prepare_datasets), ("litdata", prepare_litdata)):
                out = work / f"{library}-{round_}"
                seconds, path, kept = prepare(corpus, out, args.workers)
                got = read(library, path, args.batches)
                results[library].append({"prepare_s": seconds, "kept": kept, **got})
                print(f"round {round_}: {library}: prepared {kept:,} pairs in {seconds:.1f} s, "
                      f"opened in {got['open_s']:.2f} s, {args.batches} batches in "
                      f"{got['read_s']:.2f} s, peak RSS {got['peak_rss_mb']:.0f} MB, "
                      f"{got['tokens']:,} tokens", flush=True)  # fmt: skip
                shutil.rmtree(out, ignore_errors=True)
        print(f"\n| library | prepare, {args.workers} workers (pairs/s) | open (s) | "
              f"{args.batches} random batches of 80 (s) | peak RSS (MB) |")  # fmt: skip
        print("|---|---:|---:|---:|---:|")
        for library, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "kept"}
            print(f"| {library} | {args.pairs / med['prepare_s']:,.0f} | {med['open_s']:.2f} | "
                  f"{med['read_s']:.2f} | {med['peak_rss_mb']:.0f} |")  # fmt: skip
        kept = {library: {r["kept"] for r in runs} for library, runs in results.items()}
        print(f"\npairs kept: {kept} (the same pairs: litdata's workers may order them otherwise)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--read":
        _read_here(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
