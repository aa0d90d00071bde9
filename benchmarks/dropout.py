"""CPU dropout: ``nn.Dropout`` against ``zoo.layers.Dropout``, forward + backward, alternated.

    python benchmarks/dropout.py [--shape 16 100 384] [--p 0.2] [--rounds 7]

Each round times both layers on the same (B, T, F) activations, in float32 and in bfloat16 (the
demo's bf16 autocast hands its LSTM output to the dropout in bfloat16), and prints the medians in
ms and their ratio (zoo / nn: below 1 is faster). Also prints one training step of the demo's
model (embedding 64, LSTM 384, bf16 autocast, Adam) with each layer, so the share of the step
that dropout costs can be read off. Not a test: record the machine and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import Dropout


def time_ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def layer_pass(layer: nn.Module, x: torch.Tensor):
    def run() -> None:
        leaf = x.detach().requires_grad_()
        layer(leaf).sum().backward()

    return run


def training_step(layer: nn.Module, batch: int, steps: int, vocab: int = 65):
    torch.manual_seed(0)
    embedding, lstm = nn.Embedding(vocab, 64), nn.LSTM(64, 384, batch_first=True)
    head = nn.Linear(384, vocab)
    params = [*embedding.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    x, y = torch.randint(0, vocab, (batch, steps)), torch.randint(0, vocab, (batch, steps))

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = lstm(layer(embedding(x)))
            logits = head(layer(output)).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 100, 384])
    parser.add_argument("--p", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    layers = {"nn.Dropout": nn.Dropout(args.p), "zoo Dropout": Dropout(args.p)}
    cases = {
        f"{dtype} {tuple(args.shape)} fwd+bwd": {
            name: layer_pass(layer, torch.randn(*args.shape, dtype=dtype))
            for name, layer in layers.items()
        }
        for dtype in (torch.float32, torch.bfloat16)
    }
    batch, steps = args.shape[:2]
    cases[f"demo training step, bf16, B={batch} T={steps}"] = {
        name: training_step(layer, batch, steps) for name, layer in layers.items()
    }
    for case, runs in cases.items():
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():  # alternated within every round
                times[name].append(time_ms(run, args.repeats))
        medians = {name: statistics.median(t) for name, t in times.items()}
        cells = "  ".join(f"{name} {ms:7.2f} ms" for name, ms in medians.items())
        print(f"{case:45s} {cells}  zoo/nn {medians['zoo Dropout'] / medians['nn.Dropout']:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
