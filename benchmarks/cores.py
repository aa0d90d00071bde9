"""Forward + backward time of each core and backend, at one or more sequence lengths.

    python benchmarks/cores.py [--device cpu|cuda] [--batch 32 --steps 100 512 2048 --hidden 256]

Prints one row per length, cell and backend: the median time of a forward + backward pass over a
(B, T, I) batch, its ratio to the same cell's fused backend (RNN, LSTM, GRU) and its ratio to the
fused LSTM of the same length (below 1 is faster). Cells: the torch.nn ones (fused, the explicit
equations, and those compiled), minGRU / minLSTM (the chunked scan, the paper's log-space scan,
the step function in a loop) and sLSTM (explicit, and its whole loop compiled, which unrolls T
steps: only up to ``--compile-max-steps``).

Not a test: numbers depend on the machine and on what else runs on it; record them with the
machine and the load average, which the first and last lines print.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from zoo.cores import GRU, LSTM, RNN, SLSTM, MinGRU, MinLSTM

CELLS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU, "MinGRU": MinGRU, "MinLSTM": MinLSTM, "SLSTM": SLSTM}
TORCH_VARIANTS = {
    "fused": {},
    "explicit": {"backend": "explicit"},
    "explicit+compile": {"backend": "explicit", "compile": True},
}
MINIMAL_VARIANTS = {"scan": {}, "log": {"backend": "log"}, "explicit": {"backend": "explicit"}}
VARIANTS = {
    **dict.fromkeys(["RNN", "LSTM", "GRU"], TORCH_VARIANTS),
    **dict.fromkeys(["MinGRU", "MinLSTM"], MINIMAL_VARIANTS),
    "SLSTM": {"explicit": {}, "explicit+compile": {"compile": True}},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(core, x: torch.Tensor, repeats: int, warmup: int, budget: float = 1e9) -> float:
    """Median seconds of one forward + backward pass over x (at least 3 timed passes; no more
    once ``budget`` seconds have gone into timed ones)."""
    times = []
    for i in range(warmup + repeats):
        _sync(x.device)
        start = time.perf_counter()
        output, _ = core(x)
        output.sum().backward()
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            if len(times) >= 3 and sum(times) > budget:
                break
    return statistics.median(times)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _rows(cells: list[str]) -> list[tuple[str, str, dict]]:
    """(cell, backend, kwargs) to time: the fused LSTM first (the reference), then the rest."""
    rows = [("LSTM", "fused", {})]
    for name in cells:
        variants = VARIANTS[name].items()
        rows += [(name, label, kw) for label, kw in variants if (name, label) != rows[0][:2]]
    return rows


def bench_length(steps: int, args: argparse.Namespace, device: torch.device) -> None:
    """Print every row for sequences of ``steps`` steps."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, steps, args.input, device=device, requires_grad=True)
    fused: dict[str, float] = {}
    for name, label, kwargs in _rows(args.cells.split(",")):
        row = f"{steps:>5}  {name:<8}{label:<18}"
        if name == "SLSTM" and "compile" in label and steps > args.compile_max_steps:
            print(f"{row}  skipped: compiling unrolls the {steps}-step loop", flush=True)
            continue
        core = CELLS[name](args.input, args.hidden, **kwargs).to(device)
        warmup = 3 if "compile" in label else 2  # compiling happens in the first calls
        ms = 1000 * time_fwd_bwd(core, x, args.repeats, warmup, args.budget)
        if label == "fused":
            fused[name] = ms
        own = f"{ms / fused[name]:>9.2f}" if name in fused else " " * 9
        print(f"{row}{ms:>10.2f}{own}{ms / fused['LSTM']:>8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timing per row")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--compile-max-steps", type=int, default=128)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"B={args.batch} I={args.input} H={args.hidden}; {_load()}"
    )
    print(f"{'T':>5}  {'cell':<8}{'backend':<18}{'ms':>10}{'x fused':>9}{'x LSTM':>8}")
    for steps in args.steps:
        bench_length(steps, args, device)
    print(_load())


if __name__ == "__main__":
    main()
