"""Every figure rnn-zoo draws: translation alignments (Bahdanau et al. 2014, figure 3), captioning
attention overlays (Xu et al. 2015, figure 3) and the gradient flow through time of the lecture.

No pyplot: figures are ``matplotlib.figure.Figure`` objects on an Agg canvas, thread-safe and
independent of the display backend; :func:`save_figure` writes them atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from zoo.errors import UserError
from zoo.files import atomic_path, check_folder

ATTENTION_COLUMNS = 5  # subplots per row of a captioning attention figure
ATTENTION_SIDE = 224  # pixels of the picture shown under the attention maps


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A ``Figure`` of ``width`` x ``height`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def alignment_figure(
    weights: Tensor | np.ndarray,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    title: str | None = None,
):
    """A matplotlib ``Figure`` of ``(T, S)`` weights, source tokens on x, target tokens on y,
    white for 0 and black for 1 (as in Bahdanau et al., figure 3). No pyplot: thread-safe and
    independent of the display backend."""
    weights = np.asarray(weights, dtype=np.float32)
    rows, cols = weights.shape
    fig = new_figure(max(4.0, 0.35 * cols + 2), max(3.0, 0.3 * rows + 2))
    ax = fig.add_subplot()
    ax.imshow(weights, cmap="gray_r", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), list(src_tokens)[:cols], rotation=90, fontsize=8)
    ax.set_yticks(range(rows), list(tgt_tokens)[:rows], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_to_array(fig) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of a figure, e.g. for ``WandbLogger.log_image``."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


#: Figure formats by file suffix (what matplotlib's Agg canvas writes).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def check_figure_path(path: str | Path, flag: str = "--plot-attention") -> Path:
    """A figure can be written at ``path``: a known suffix, in a folder that exists and takes
    files. Checked before any work, so a bad path costs nothing.

    Raises:
        UserError: one line naming the path and what to do.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        known = ", ".join(FIGURE_SUFFIXES[:3])
        what = f"{path.suffix} is not one" if path.suffix else "add one"
        raise UserError(f"{path}: {flag} writes {known}, ... by the file's suffix; {what}")
    check_folder(path.parent, flag)
    return path


def save_figure(
    fig, path: str | Path, dpi: int | None = None, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a figure to ``path`` atomically (a temporary file, then a rename); the format comes
    from the suffix (:data:`FIGURE_SUFFIXES`); ``metadata`` goes into the file (PNG text
    chunks, PDF info, SVG metadata).

    Raises:
        UserError: an unknown suffix, or a write that fails (one line naming the path).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if f".{fmt}" not in FIGURE_SUFFIXES:
        raise UserError(f"{path}: unknown figure format .{fmt}; use .png, .pdf or .svg")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=dpi, metadata=metadata)


def attention_figure(picture: Any, words: Sequence[str], weights: Tensor | np.ndarray):
    """A ``Figure``: the picture, then one subplot per word with its attention map upsampled over
    the picture, which is darkened where the model did not look (as in Xu et al. 2015, figure 3;
    each map is scaled to its own maximum).

    Args:
        picture: the RGB ``PIL.Image`` (shown squashed to a square, as the model sees it).
        words: the caption's words and ``</s>``, one per row of ``weights``.
        weights: ``(len(words), S)``, ``S`` a square grid (rows x columns of the CNN's features).
    """
    from PIL import Image

    weights = np.asarray(weights, dtype=np.float32)
    side = math.isqrt(weights.shape[1])
    if side * side != weights.shape[1]:
        raise UserError(f"{weights.shape[1]} attention weights do not form a square grid")
    size = (ATTENTION_SIDE, ATTENTION_SIDE)
    pixels = np.asarray(picture.convert("RGB").resize(size, Image.BICUBIC))
    panels = len(words) + 1
    columns = min(ATTENTION_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    fig = new_figure(2.2 * columns, 2.4 * rows)
    extent = (0, ATTENTION_SIDE, ATTENTION_SIDE, 0)
    for panel in range(rows * columns):
        ax = fig.add_subplot(rows, columns, panel + 1)
        ax.set_axis_off()
        if panel >= panels:
            continue
        ax.imshow(pixels, extent=extent)
        if panel == 0:
            continue
        grid = weights[panel - 1].reshape(side, side)  # (rows, cols) of the feature grid
        shade = np.zeros((side, side, 4), dtype=np.float32)  # black, opaque where unattended
        shade[..., 3] = 0.8 * (1.0 - grid / max(float(grid.max()), 1e-8))
        ax.imshow(shade, extent=extent, interpolation="bilinear")
        ax.set_title(words[panel - 1], fontsize=10)
    fig.tight_layout()
    return fig


def gradient_flow_figure(results: Mapping[str, Any]):
    """Gradient norms against the distance back in time, one line per core (and a dashed one
    for an LSTM's cell state): the vanishing gradient, and the LSTM's way around it.

    Args:
        results: name -> :class:`zoo.diagnostics.GradientFlow`.
    """
    fig = new_figure(7, 4.5, dpi=120)
    ax = fig.add_subplot()
    for name, flow in results.items():
        (line,) = ax.semilogy(flow.hidden.clamp_min(1e-30), label=f"{name}: ||dL/dh_t||")
        if flow.cell_state is not None:
            ax.semilogy(
                flow.cell_state.clamp_min(1e-30),
                "--",
                color=line.get_color(),
                label=f"{name}: ||dC_T/dC_t||",
            )
    ax.set_xlabel("distance T - t (steps back in time)")
    ax.set_ylabel("gradient norm (log scale)")
    ax.set_title("Gradient flow through time at initialisation")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_curves_figure(panels: Mapping[str, Mapping[str, tuple[list, list]]], title: str = ""):
    """One subplot per panel (:func:`zoo.runlog.panels`), each logged name a line against the
    training step (a single value, such as a test score, a marker); gradient norms on a log
    scale, the learning rate too when it spans more than a factor of 10.

    Args:
        panels: title -> name -> ``(steps, values)``.
        title: the figure's title (the run's folder).
    """
    columns = min(len(panels), 2) or 1
    rows = math.ceil(len(panels) / columns) or 1
    fig = new_figure(6.5 * columns, 3.6 * rows, dpi=110)
    first = None
    for index, (panel, series) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(rows, columns, index, sharex=first)  # one step axis for all
        first = first or ax
        for name, (steps, values) in series.items():
            style = "o" if len(steps) == 1 else "-"
            ax.plot(steps, values, style, label=name, linewidth=1.2, markersize=4)
        spread = [v for _, values in series.values() for v in values if v > 0]
        logscale = panel == "gradient norm" or (
            panel == "learning rate" and spread and max(spread) > 10 * min(spread)
        )
        if logscale and spread:
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7 if len(series) > 4 else 8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def compare_figure(curves: Mapping[str, Sequence[tuple[int, float, float]]], metric: str):
    """Validation ``metric`` against wall-clock seconds (left) and training steps (right), one
    line per core (``rnn-zoo compare``): who learns fastest for the time, and per update.

    Args:
        curves: core -> ``(step, seconds, value)`` points of one run, in order.
        metric: the name on the y axes, e.g. ``val/bpc``.
    """
    fig = new_figure(12, 4.5, dpi=110)
    by_time, by_step = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2, sharey=None)
    for core, points in curves.items():
        if not points:
            continue
        steps, seconds, values = zip(*points)
        (line,) = by_time.plot(seconds, values, "-o", markersize=2.5, linewidth=1.3, label=core)
        by_step.plot(steps, values, "-o", markersize=2.5, linewidth=1.3, color=line.get_color())
    by_step.sharey(by_time)
    for ax, label in ((by_time, "wall-clock seconds of training"), (by_step, "training step")):
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    by_time.legend(fontsize=8)
    by_time.set_title(f"{metric} against time (equal budget)")
    by_step.set_title(f"{metric} against steps")
    fig.tight_layout()
    return fig
