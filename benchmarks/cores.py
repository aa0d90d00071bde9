"""Forward + backward time of each core: fused kernels vs the explicit equations (eager, compiled).

    python benchmarks/cores.py [--device cpu|cuda] [--batch 32 --steps 100 --hidden 256]

Prints one row per cell and backend with the median time over repeats and the ratio to fused.
Not a test: numbers depend on the machine; record them with the machine they came from.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoo.cores import GRU, LSTM, RNN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(core, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median seconds of one forward + backward pass over x."""
    times = []
    for i in range(warmup + repeats):
        _sync(x.device)
        start = time.perf_counter()
        output, _ = core(x)
        output.sum().backward()
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cells", default="RNN,LSTM,GRU")
    args = parser.parse_args()
    device = torch.device(args.device)
    cells = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"B={args.batch} T={args.steps} I={args.input} H={args.hidden}"
    )
    print(f"{'cell':<6}{'backend':<20}{'ms':>10}{'x fused':>10}")
    for name in args.cells.split(","):
        torch.manual_seed(0)
        x = torch.randn(args.batch, args.steps, args.input, device=device, requires_grad=True)
        variants = {
            "fused": dict(backend="fused"),
            "explicit": dict(backend="explicit"),
            "explicit+compile": dict(backend="explicit", compile=True),
        }
        fused_ms = None
        for label, kwargs in variants.items():
            core = cells[name](args.input, args.hidden, **kwargs).to(device)
            warmup = 3 if "compile" in label else 2  # compiling happens in the first calls
            ms = 1000 * time_fwd_bwd(core, x, args.repeats, warmup)
            fused_ms = fused_ms or ms
            print(f"{name:<6}{label:<20}{ms:>10.2f}{ms / fused_ms:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
