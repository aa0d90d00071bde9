"""Runs read back and summed up: a run's logged curves from its folder's ``metrics.csv`` (the
CSV logger that ``rnn-zoo fit`` runs beside W&B, :mod:`zoo.tasks.runs`), grouped into the panels
that ``rnn-zoo plot`` draws (loss, bpc, BLEU / chrF, caption scores, learning rate, gradient
norms); and the table of an ``rnn-zoo compare`` (one row per core, its seeds averaged)."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, fields
from pathlib import Path

from zoo.errors import UserError

METRICS_FILE = "metrics.csv"

#: Panel title -> pattern of the logged names it shows, in drawing order.
PANELS: dict[str, re.Pattern] = {
    "loss": re.compile(r"^(train|val|test)/loss$"),
    "bits per character": re.compile(r"^(val|test)/bpc$"),
    "BLEU / chrF": re.compile(r"^(val|test)/(bleu|chrf)(_\w+)?$"),
    "caption scores": re.compile(r"^(val|test)/(bleu4|cider|meteor|rouge_l)$"),
    "learning rate": re.compile(r"^lr-"),
    "gradient norm": re.compile(r"^grad_norm/"),
}

Series = tuple[list[int], list[float]]  # steps, values


def find_metrics(folder: str | Path) -> Path:
    """The ``metrics.csv`` of a run folder; given a folder of runs (a recipe's
    ``default_root_dir``), the latest run's (run folders are named by their start time).

    Raises:
        UserError: no such folder, or no logged run in it.
    """
    folder = Path(folder)
    if folder.is_file() and folder.name == METRICS_FILE:
        return folder
    if not folder.is_dir():
        what = (
            f"a file, not a run folder or a {METRICS_FILE}"
            if folder.exists()
            else "no such run folder"
        )
        raise UserError(f"{folder}: {what}")
    if (folder / METRICS_FILE).is_file():
        return folder / METRICS_FILE
    runs = sorted(p.parent for p in folder.glob(f"*/{METRICS_FILE}"))
    if not runs:
        raise UserError(
            f"{folder}: no {METRICS_FILE} here or in a run folder below; was the run logged? "
            "(a recipe with 'logger: false' logs nothing)"
        )
    return runs[-1] / METRICS_FILE


def read_metrics(path: str | Path) -> dict[str, Series]:
    """Every logged name's ``(steps, values)``, from a CSV logger's file (blank cells skipped;
    where a resumed run logged a step again, its value).

    Raises:
        UserError: the file is not a CSV logger's (no ``step`` column) or a value is not a number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; not a CSV logger's metrics file") from None
    if text and not text.endswith("\n"):  # a row cut short (a run killed mid-write): left out
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if rows and "step" not in rows[0]:
        raise UserError(f"{path}: no 'step' column; not a CSV logger's metrics file")
    points: dict[str, dict[int, float]] = {}
    for line, row in enumerate(rows, start=2):
        for name, cell in row.items():
            if name in ("step", "epoch") or cell in ("", None):
                continue
            try:
                step, value = int(float(row["step"])), float(cell)
            except ValueError:
                raise UserError(f"{path}:{line}: {name} = {cell!r} is not a number") from None
            if math.isfinite(value):  # a resumed run's rows replace those of the same step
                points.setdefault(name, {})[step] = value
    return {name: (sorted(p), [p[k] for k in sorted(p)]) for name, p in points.items()}


def panels(series: dict[str, Series]) -> dict[str, dict[str, Series]]:
    """The series grouped by :data:`PANELS`; panels with nothing logged are left out."""
    out: dict[str, dict[str, Series]] = {}
    for title, pattern in PANELS.items():
        chosen = {name: s for name, s in sorted(series.items()) if pattern.search(name)}
        if chosen:
            out[title] = chosen
    return out


@dataclass(frozen=True)
class Trained:
    """One run of ``rnn-zoo compare``: a core, a seed, what it cost and what it reached."""

    core: str
    seed: int
    params: int
    steps: int
    chars_per_s: float
    best_val: float
    test: float
    seconds: float


def compare_rows(runs: list[Trained]) -> list[dict[str, float | str]]:
    """One row per core, the mean over its seeds (and the seeds' spread of the best val)."""
    rows = []
    for core in dict.fromkeys(r.core for r in runs):
        mine = [r for r in runs if r.core == core]
        best = [r.best_val for r in mine]
        rows.append(
            {
                "core": core,
                "seeds": len(mine),
                "params": mine[0].params,
                "steps": statistics.mean(r.steps for r in mine),
                "chars_per_s": statistics.mean(r.chars_per_s for r in mine),
                "best_val": statistics.mean(best),
                "spread": max(best) - min(best),
                "test": statistics.mean(r.test for r in mine),
                "seconds": statistics.mean(r.seconds for r in mine),
            }
        )
    return rows


def compare_markdown(runs: list[Trained], metric: str = "bpc") -> str:
    """The comparison as a markdown table, best val first."""
    rows = sorted(compare_rows(runs), key=lambda r: r["best_val"])
    seeds = max(r["seeds"] for r in rows)
    spread = f" (range over {seeds} seeds)" if seeds > 1 else ""
    lines = [
        f"| core | params | chars/s | steps | best val {metric}{spread} | test {metric} | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        best = f"{r['best_val']:.3f}" + (f" ± {r['spread'] / 2:.3f}" if seeds > 1 else "")
        lines.append(
            f"| {r['core']} | {r['params']:,} | {r['chars_per_s']:,.0f} | {r['steps']:,.0f} "
            f"| {best} | {r['test']:.3f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def compare_csv(runs: list[Trained]) -> str:
    """Every run (core, seed) as a CSV row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [f.name for f in fields(Trained)]
    writer.writerow(names)
    for run in runs:
        writer.writerow([getattr(run, name) for name in names])
    return out.getvalue()
