"""What the translation data path costs as the corpus grows: preparation (tokenise once, in 1 and
2 processes) and the memory of a run that memory-maps the prepared corpus.

Synthetic WMT-format corpora: the bundled Bible's training split repeated to 0.1M, 0.4M and 1.6M
pairs, each copy's lines marked with its number (so no two lines are equal, and the tokeniser
really runs on every one); the Bible's valid and test splits as they are (also named newstest2013
and newstest2014, for the WMT'14 recipes). For each size:

- ``rnn-zoo prepare translation`` of the recipe (default: RNNsearch-50 on WMT'14, Moses words
  and 30k shortlists; ``--config translation/demo-bible`` for the demo's joint SentencePiece) with
  1 and with 2 workers, each into a fresh store: the seconds it reports (its imports not counted)
  and pairs/s (with ``--rounds N``, the worker counts alternate N times and the medians count);
- a fresh process that memory-maps the prepared store: seconds to the first training batch, then
  peak RSS (``ru_maxrss``) after reading ``--batches`` training batches.

    python benchmarks/data_scale.py [--sizes 100000 400000 1600000] [--workers 1 2]
        [--config translation/rnnsearch50-wmt14-enfr] [--batches 200] [--work /tmp/data-scale]
        [--rounds 1]

Prints a table, the RSS ratio largest / smallest and the 2-worker / 1-worker preparation rate.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIBLE = Path(__file__).resolve().parents[1] / "datamodules" / "data" / "bible-enfr"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def write_corpus(folder: Path, pairs: int) -> None:
    """``pairs`` training pairs from the Bible, copy ``k`` prefixed with ``k``; valid and test
    copied."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "fr"):
        lines = gzip.decompress((BIBLE / f"train.{lang}.gz").read_bytes()).decode().splitlines()
        with open(folder / f"train.{lang}", "w", encoding="utf-8") as out:
            for i in range(pairs):
                copy, line = divmod(i, len(lines))
                out.write(f"{copy} {lines[line]}\n" if copy else f"{lines[line]}\n")
        for split, wmt in (("valid", "newstest2013"), ("test", "newstest2014")):
            for name in (split, wmt):  # the demo's and the WMT recipes' names
                shutil.copy(BIBLE / f"{split}.{lang}.gz", folder / f"{name}.{lang}.gz")


def prepare(config: str, data: Path, cache: Path, workers: int) -> float:
    """Seconds of ``rnn-zoo prepare translation`` as it reports them (after its imports)."""
    shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "prepare", "translation", "--config", config,
         "--data-dir", str(data), "--cache-dir", str(cache), "--workers", str(workers), "--quiet"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(re.search(r" in ([0-9.]+) s$", out.stdout.strip()).group(1))


def read(config: str, data: Path, cache: Path, batches: int) -> dict:
    """In a fresh process: map the store, time the first batch, read ``batches``, peak RSS."""
    out = subprocess.run(
        [sys.executable, __file__, "--read", config, str(data), str(cache), str(batches)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _read_here(config: str, data: str, cache: str, batches: int) -> None:
    import yaml

    from datamodules.parallel_text import ParallelTextDataModule

    path = Path(config) if Path(config).is_file() else RECIPES / f"{config}.yaml"
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    init = {**recipe["data"]["init_args"], "data_dir": data, "cache_dir": cache}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    dm = ParallelTextDataModule(**init)
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    next(loader)
    first = time.perf_counter() - start
    tokens = 0
    for _ in range(batches - 1):
        batch = next(loader)
        tokens += int(batch.src_lengths.sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"first_batch_s": first, "peak_rss_mb": peak / 1024,
                      "rss_before_mb": rss_before / 1024, "pairs": dm.split_size("train"),
                      "src_tokens": tokens}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000, 1_600_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--config", default="translation/rnnsearch50-wmt14-enfr")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/data-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the corpora and stores")
    parser.add_argument("--rounds", type=int, default=1, help="preparations per worker count "
                        "(alternating; the table shows medians)")  # fmt: skip
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    rows = []
    for size in args.sizes:
        data = args.work / f"corpus-{size}"
        write_corpus(data, size)
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.rounds):  # worker counts alternate, round after round
            for w in args.workers:
                times[w].append(prepare(args.config, data, args.work / f"store-{size}-w{w}", w))
        prep = {w: statistics.median(t) for w, t in times.items()}
        if args.rounds > 1:
            print(f"{size:,} pairs, seconds per round: "
                  + "; ".join(f"{w} workers " + ", ".join(f"{t:.1f}" for t in ts)
                              for w, ts in times.items()), flush=True)  # fmt: skip
        got = read(args.config, data, args.work / f"store-{size}-w{args.workers[-1]}", args.batches)
        rows.append((size, prep, got))
        line = " | ".join(
            f"{w} workers {size / s:,.0f} pairs/s ({s:.0f} s)" for w, s in prep.items()
        )
        print(f"{size:,} pairs: {line} | first batch {got['first_batch_s']:.2f} s | "
              f"peak RSS {got['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
            for w in args.workers:
                shutil.rmtree(args.work / f"store-{size}-w{w}", ignore_errors=True)
    print()
    heads = " | ".join(f"prepare, {w} worker{'s' * (w > 1)} (pairs/s)" for w in args.workers)
    print(f"| pairs | {heads} | first batch (s) | peak RSS, {args.batches} batches (MB) |")
    print("|---:|" + "---:|" * (len(args.workers) + 2))
    for size, prep, got in rows:
        rates = " | ".join(f"{size / s:,.0f}" for s in prep.values())
        print(f"| {size:,} | {rates} | {got['first_batch_s']:.2f} | {got['peak_rss_mb']:.0f} |")
    if len(rows) > 1:
        print(f"\npeak RSS {rows[-1][0]:,} / {rows[0][0]:,} pairs: "
              f"{rows[-1][2]['peak_rss_mb'] / rows[0][2]['peak_rss_mb']:.3f}")  # fmt: skip
    if len(args.workers) > 1:
        w0, w1 = args.workers[0], args.workers[-1]
        for size, prep, _ in rows:
            print(
                f"{size:,} pairs: {w1} / {w0} workers preparation rate {prep[w0] / prep[w1]:.2f}x"
            )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--read":
        _read_here(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
