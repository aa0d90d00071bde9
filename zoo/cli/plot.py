"""``rnn-zoo plot RUN_DIR``: a run's logged curves (loss, bpc / BLEU / caption scores, learning
rate, gradient norms per layer) drawn to a PNG from the run folder's ``metrics.csv``, without
any account. RUN_DIR is a run folder, or a recipe's folder of runs (the latest one is drawn)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnn-zoo plot", description=__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    parser.add_argument(
        "--output", type=Path, default=None, help="image file (default: RUN_DIR/curves.png)"
    )
    args = parser.parse_args(argv)
    from zoo.plots import check_figure_path, run_curves_figure, save_figure
    from zoo.runlog import find_metrics, panels, read_metrics

    metrics = find_metrics(args.run_dir)
    output = check_figure_path(args.output or metrics.parent / "curves.png", "--output")
    drawn = panels(read_metrics(metrics))
    if not drawn:
        raise UserError(f"{metrics}: nothing logged yet that a panel draws (loss, bpc, BLEU...)")
    fig = run_curves_figure(drawn, title=str(metrics.parent))
    save_figure(fig, output, metadata={"Description": "panels: " + "; ".join(drawn)})
    print(f"{output}: {', '.join(drawn)}")
    return 0
