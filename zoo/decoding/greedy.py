"""Greedy search: the most likely token at each step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zoo.decoding.common import (
    Hypotheses,
    StepFn,
    _candidates,
    _normalize,
    _prepare,
    _time_to_stop,
    _to_hypotheses,
)


def greedy_search(
    step_fn: StepFn,
    state: Any,
    bos: Tensor | int,
    eos: int,
    max_len: Tensor | int,
    *,
    batch_size: int | None = None,
    length_penalty: float = 1.0,
) -> Hypotheses:
    """Greedy decoding: the most likely token at each step, until EOS or ``max_len``.

    Args:
        step_fn: ``(tokens (B,), state) -> (logits (B, V), state)``.
        state: Model state for the ``B`` sentences.
        bos: ``(B,)`` or int, the first input token.
        eos: End-of-sequence id.
        max_len: ``(B,)`` or int, most tokens per hypothesis excluding EOS (module docstring).
        batch_size: ``B``, needed only when ``bos`` and ``max_len`` are both ints.
        length_penalty: Exponent of the reported score's length normalisation only (greedy
            choices do not depend on it); matches :func:`beam_search` with ``beam_size=1``.

    Returns:
        :class:`Hypotheses` with ``n_best = 1``.
    """
    tokens, max_len, n_steps = _prepare(state, bos, max_len, batch_size)
    out = torch.full((tokens.shape[0], n_steps), eos, dtype=torch.long, device=tokens.device)
    finished = torch.zeros_like(tokens, dtype=torch.bool)  # (B,)
    lengths = torch.zeros_like(tokens)  # (B,) tokens emitted, EOS included
    scores = torch.zeros(tokens.shape, device=tokens.device)  # (B,) sum of log-probs
    for t in range(n_steps):
        logits, state = step_fn(tokens, state)  # (B, V)
        best, tokens = _candidates(logits, finished, t >= max_len, eos, k=1)  # (B, 1) each
        best, tokens = best[:, 0], tokens[:, 0]  # finished rows: EOS at zero cost
        scores = scores + best
        lengths += ~finished
        finished = finished | (tokens == eos)
        out[:, t] = tokens
        if _time_to_stop(t, finished):
            break
    normalized = _normalize(scores, lengths, length_penalty)
    return _to_hypotheses(out[:, None], lengths[:, None], normalized[:, None])
