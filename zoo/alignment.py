"""Attention alignments of translation models: the weights behind a given translation, and the
matrix plot of Bahdanau et al. (2014, figure 3): source words on x, target words on y."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zoo.models.translation import TranslationModel


@torch.no_grad()
def forced_alignment(
    model: TranslationModel,
    src: Tensor,
    src_lengths: Tensor,
    targets: Sequence[Sequence[int]],
    bos: int,
    eos: int,
) -> list[Tensor] | None:
    """The attention weights a model puts on the source while it reads ``targets`` (forced
    decoding, e.g. of its own beam-search output).

    Args:
        model: any :class:`~zoo.models.translation.TranslationModel`.
        src: ``(B, S)`` source ids as the model reads them; ``src_lengths`` ``(B,)``.
        targets: ``B`` target id lists without BOS / EOS.
        bos, eos: the target's special ids.

    Returns:
        One ``(len(target) + 1, src_length)`` float CPU tensor per sentence: row ``t`` is the
        distribution over source positions when the model predicts target token ``t`` (the last
        row predicts EOS). None for a model without attention (Seq2Seq).
    """
    device = src.device
    width = max(len(t) for t in targets) + 1
    tgt_in = torch.full((len(targets), width), eos, dtype=torch.long)
    for row, target in zip(tgt_in, targets):
        row[: len(target) + 1] = torch.tensor([bos, *target], dtype=torch.long)
    tgt_in = tgt_in.to(device)
    state = model.encode(src, src_lengths)
    rows = []
    for t in range(width):
        _, state = model.decode_step(tgt_in[:, t], state)
        if state.attention_weights is None:
            return None
        rows.append(state.attention_weights.float())  # (B, S)
    weights = torch.stack(rows, dim=1).cpu()  # (B, T, S)
    lengths = src_lengths.tolist()
    return [weights[i, : len(t) + 1, : lengths[i]] for i, t in enumerate(targets)]


def alignment_figure(
    weights: Tensor | np.ndarray,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    title: str | None = None,
):
    """A matplotlib ``Figure`` of ``(T, S)`` weights, source tokens on x, target tokens on y,
    white for 0 and black for 1 (as in Bahdanau et al., figure 3). No pyplot: thread-safe and
    independent of the display backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, dtype=np.float32)
    rows, cols = weights.shape
    fig = Figure(figsize=(max(4.0, 0.35 * cols + 2), max(3.0, 0.3 * rows + 2)), dpi=100)
    FigureCanvasAgg(fig)
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


def save_figure(fig, path: str | Path) -> None:
    """Write a figure to ``path`` atomically (a temporary file, then a rename); the format comes
    from the suffix (``.png``, ``.pdf``, ``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=fmt, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
