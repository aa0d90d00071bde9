"""``rnn-zoo diagnose gradient-flow``: the vanishing gradient, measured at initialisation.

For a freshly initialised core and a loss on the last step only, the gradient norm
``||dL_T/dh_t||`` is drawn against the distance ``T - t`` for the Elman RNN, the GRU, the LSTM
(forget bias 1 and 0), minGRU, minLSTM and the sLSTM (and ``||dC_T/dC_t||`` for the cell
states of the LSTM and the sLSTM); see :mod:`zoo.diagnostics`. With
``--checkpoint`` or ``--pretrained``, a trained char model's core is measured beside them.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from zoo.cli.common import write_stdout
from zoo.errors import UserError

# Every step of every core is kept for the backward pass, in float64: beyond these the measure
# runs for hours or out of memory, and the curves are flat long before.
MAX_STEPS, MAX_HIDDEN = 10_000, 4096


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
    trained = parser.add_mutually_exclusive_group()
    trained.add_argument("--checkpoint", type=Path, help="also measure a trained char_lm's core")
    trained.add_argument("--pretrained", metavar="NAME|FILE", help="... or a published one's")
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from zoo.diagnostics import default_cores, gradient_flow, table, write_csv
    from zoo.files import check_folder
    from zoo.plots import gradient_flow_figure, save_figure

    if not 2 <= args.steps <= MAX_STEPS or not 1 <= args.hidden_size <= MAX_HIDDEN:
        raise UserError(
            f"--steps must be 2 to {MAX_STEPS:,} and --hidden-size 1 to {MAX_HIDDEN:,}"
            f" (got {args.steps} and {args.hidden_size})"
        )
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    check_folder(args.out, "--out")  # before the measurement, not after it
    cores = default_cores(args.hidden_size, seed=args.seed)
    if args.checkpoint or args.pretrained:  # the trained core beside the fresh ones
        from zoo.cli.common import load_model

        lm = load_model(args, "char_lm")
        label = f"{type(lm.model.core).__name__} {lm.model.core.hidden_size} (trained)"
        cores[label] = copy.deepcopy(lm.model.core)  # measured in float64: a copy
    results = {
        name: gradient_flow(core, args.steps, seed=args.seed) for name, core in cores.items()
    }
    write_csv(results, args.out / "gradient_flow.csv")
    save_figure(gradient_flow_figure(results), args.out / "gradient_flow.png")
    heading = "||dL_T/dh_t||, mean over the batch (fresh cores at initialisation; a trained one as "
    wrote = f"wrote {args.out / 'gradient_flow.png'} and {args.out / 'gradient_flow.csv'}"
    write_stdout(f"{heading}loaded):\n{table(results)}\n{wrote}\n")
    return 0
