"""``rnn-zoo diagnose gradient-flow``: the vanishing gradient, measured at initialisation.

For a freshly initialised core and a loss on the last step only, the gradient norm
``||dL_T/dh_t||`` is drawn against the distance ``T - t`` for the Elman RNN, the GRU and the
LSTM (and ``||dC_T/dC_t||`` for the LSTM's cell state); see :mod:`zoo.diagnostics`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo diagnose",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["gradient-flow"])
    parser.add_argument("--out", type=Path, default=Path("runs/diagnostics"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from zoo.diagnostics import default_cores, gradient_flow, table, write_csv
    from zoo.plots import gradient_flow_figure, save_figure

    cores = default_cores(args.hidden_size, seed=args.seed)
    results = {
        name: gradient_flow(core, args.steps, seed=args.seed) for name, core in cores.items()
    }
    write_csv(results, args.out / "gradient_flow.csv")
    save_figure(gradient_flow_figure(results), args.out / "gradient_flow.png")
    print("||dL_T/dh_t|| at initialisation (mean over the batch):")
    print(table(results))
    print(f"wrote {args.out / 'gradient_flow.png'} and {args.out / 'gradient_flow.csv'}")
    return 0
