"""Sampling from a language model: temperature, top-k and nucleus (top-p) filtering."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from zoo.decoding.common import StepFn, _score_dtype


def _check_filter_args(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Top-k, then nucleus (top-p) filtering (Holtzman et al., 2020).

    Masked entries are set to ``-inf``; the argmax is always kept. The nucleus is taken over the
    distribution left by top-k: the smallest set of most likely tokens whose mass is ``>= top_p``
    (up to float rounding). Exactly ``top_k`` tokens survive top-k; ties are broken arbitrarily.

    Args:
        logits: ``(..., V)`` unnormalised scores.
        top_k: Keep the ``top_k`` most likely tokens (``>= 1``); ``None`` keeps all.
        top_p: Nucleus mass in ``(0, 1]``; ``None`` or ``1`` keeps all.

    Returns:
        ``(..., V)`` logits of the same dtype with filtered entries at ``-inf``.
    """
    _check_filter_args(top_k, top_p)
    if top_k is not None and top_k < logits.shape[-1]:
        keep = logits.topk(top_k, dim=-1).indices  # (..., k)
        mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, keep, False)
        logits = logits.masked_fill(mask, -math.inf)
    if top_p is not None and top_p < 1.0:
        logits = logits.masked_fill(_outside_nucleus(logits, top_p), -math.inf)
    return logits


def _outside_nucleus(logits: Tensor, top_p: float) -> Tensor:
    """``(..., V)`` bool, True for tokens outside the top-p nucleus."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.to(_score_dtype(logits)).softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
    # A token is dropped once the tokens before it already reach top_p; the first one has
    # mass_before == 0 < top_p, so the argmax always stays.
    drop_sorted = mass_before >= top_p
    return torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)


def sample(
    step_fn: StepFn,
    state: Any,
    first_tokens: Tensor,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Any]:
    """Autoregressive sampling from a language model.

    Feeds ``first_tokens``, then each generated token back in. The returned state has consumed
    ``first_tokens`` and all generated tokens but the last, so
    ``sample(step_fn, state, out[:, -1], n)`` continues the text seamlessly.

    Args:
        step_fn: ``(tokens (B,), state) -> (logits (B, V), state)``.
        state: Model state for the ``B`` sequences (e.g. after priming on a prompt).
        first_tokens: ``(B,)`` long, the first input tokens.
        length: Number of tokens to generate (``>= 0``).
        temperature: Logits are divided by it before filtering; must be ``> 0`` unless greedy.
        top_k: See :func:`filter_logits`.
        top_p: See :func:`filter_logits`.
        greedy: Take the argmax instead of sampling (temperature and filters are then moot).
        generator: Random generator on the logits' device, for reproducible samples.

    Returns:
        ``(B, length)`` long generated ids and the final state.
    """
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or pass greedy=True), got {temperature}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    _check_filter_args(top_k, top_p)
    tokens = first_tokens
    out = torch.empty(first_tokens.shape[0], length, dtype=torch.long, device=tokens.device)
    for t in range(length):
        logits, state = step_fn(tokens, state)  # (B, V)
        if greedy:
            tokens = logits.argmax(-1)
        else:
            scaled = logits.to(_score_dtype(logits)) / temperature
            probs = filter_logits(scaled, top_k, top_p).softmax(-1)  # (B, V)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        out[:, t] = tokens
    return out, state
