"""The translation loss at the WMT recipes' sizes: head + cross-entropy against ``chunked_loss``.

    python benchmarks/translation_loss.py [--device cpu|cuda] [--rounds 3] [--tokens-per-row 30]

For each paper recipe, the output layer and its loss over one batch of target tokens (the
recipe's batch x ``--tokens-per-row``), forward and backward, with random features and targets:

- ``plain``: ``F.cross_entropy(head(x).float(), y)``, what ``TranslationTask`` does by default;
- ``chunked``: ``F.linear_cross_entropy(x, W, y, options=LinearCrossEntropyOptions())``, what it
  does with ``chunked_loss: true`` (the ``(N, V)`` logits never exist whole).

Each measurement runs in a fresh process (peak memory: ``ru_maxrss`` on the CPU, the CUDA
allocator's peak on a GPU), plain and chunked alternating for ``--rounds`` rounds; median
milliseconds of 3 timed steps after a warm-up, in float32 on the CPU and bf16 autocast on a GPU.
The loss values of the two are printed side by side as a check.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# recipe -> (sentences a batch, features into the head, target vocabulary)
SIZES = {
    "rnnsearch50-wmt14-enfr": (80, 500, 30_000),  # maxout t_i of 500 -> the 30k shortlist
    "sutskever-wmt14-enfr": (128, 1000, 80_000),  # the top LSTM's 1000 -> 80k French words
}


def one(mode: str, recipe: str, tokens_per_row: int, device: str) -> dict:
    batch, features, vocab = SIZES[recipe]
    n = batch * tokens_per_row
    torch.manual_seed(0)  # the head's initialisation
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # what the decoder hands on
    x = torch.randn(n, features, generator=g).to(device, dtype).requires_grad_()
    head = torch.nn.Linear(features, vocab).to(device)
    y = torch.randint(1, vocab, (n,), generator=g).to(device)
    y[::9] = 0  # some padding

    def step() -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            if mode == "plain":
                loss = F.cross_entropy(head(x).float(), y, ignore_index=0)
            else:
                loss = F.linear_cross_entropy(
                    x, head.weight, y, linear_bias=head.bias, ignore_index=0,
                    options=torch.nn.LinearCrossEntropyOptions(),
                )  # fmt: skip
        loss.backward()
        return loss.detach()

    loss = step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms": statistics.median(times) * 1000, "peak_mb": peak, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens-per-row", type=int, default=30)
    parser.add_argument("--recipes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--one", nargs=2, metavar=("MODE", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.tokens_per_row, args.device)))
        return
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads")
    print("| recipe | tokens | plain ms | chunked ms | plain peak MB | chunked peak MB | loss |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for recipe in args.recipes:
        runs: dict[str, list[dict]] = {"plain": [], "chunked": []}
        for _ in range(args.rounds):
            for mode in runs:  # alternating, each in its own process
                cmd = [sys.executable, __file__, "--one", mode, recipe, "--device", args.device,
                       "--tokens-per-row", str(args.tokens_per_row)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[mode].append(json.loads(out.splitlines()[-1]))
        med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
        p, c = med["plain"], med["chunked"]
        tokens = SIZES[recipe][0] * args.tokens_per_row
        print(f"| {recipe} | {tokens:,} | {p['ms']:.0f} | {c['ms']:.0f} ({c['ms'] / p['ms']:.2f}x) "
              f"| {p['peak_mb']:,.0f} | {c['peak_mb']:,.0f} | {p['loss']:.4f} / {c['loss']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
