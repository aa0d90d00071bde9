"""Attention over a source sentence: additive (Bahdanau et al. 2014) and multiplicative (Luong et
al. 2015).

Both share one interface. The decoder's query ``(B, Q)`` scores every source annotation
``(B, S, K)``; a softmax over the valid positions gives the alignment weights ``(B, S)``, and the
context is the weighted sum of the annotations ``(B, K)``::

    attention = BahdanauAttention(query_size=1000, key_size=2000, attention_size=1000)
    projected = attention.precompute(memory)            # once per source sentence
    context, weights = attention(query, memory, mask, projected)

Masking: positions where ``mask`` is False (padding) get exactly 0 weight. A row with no valid
position at all (an empty source sentence) gets all-zero weights and a zero context, never NaN:
there is nothing to attend to, so nothing is read. Its weights therefore sum to 0, not 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over source positions that gives exactly 0 to masked ones.

    Args:
        scores: ``(B, S)`` unnormalised alignment scores.
        mask: ``(B, S)`` bool, True at valid source positions.

    Returns:
        ``(B, S)`` weights summing to 1 over the valid positions of each row; a row with no valid
        position is all zeros (and its gradients are zero, not NaN).
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=-1, keepdim=True)  # (B, 1)
    # An all -inf row would give 0 / 0 = NaN; score it uniformly, then zero it below.
    weights = scores.masked_fill(empty, 0.0).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0)


class Attention(nn.Module):
    """Base class: score the keys against a query, mask, normalise, average the keys.

    Subclasses implement :meth:`precompute` (the query-independent part of the score, computed
    once per source sentence) and :meth:`score`.
    """

    def precompute(self, keys: Tensor) -> Tensor:
        """Query-independent part of the score: ``(B, S, K)`` keys -> ``(B, S, *)``."""
        raise NotImplementedError

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """Alignment scores: ``(B, Q)`` query and precomputed keys -> ``(B, S)``."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, projected_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend over the source annotations.

        Args:
            query: ``(B, Q)`` decoder state.
            keys: ``(B, S, K)`` source annotations, also averaged into the context.
            mask: ``(B, S)`` bool, True at valid source positions.
            projected_keys: ``precompute(keys)``, to skip recomputing it at every decoder step.

        Returns:
            ``(B, K)`` context and ``(B, S)`` weights (zero at masked positions; all zero, with a
            zero context, for a row without valid positions).
        """
        if projected_keys is None:
            projected_keys = self.precompute(keys)
        weights = masked_softmax(self.score(query, projected_keys), mask)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1).to(keys.dtype), keys).squeeze(1)  # (B, K)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al. 2014, eq. 5-6 and appendix A.1.2).

    e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)        alignment model, A.1.2
    alpha_ij = exp(e_ij) / sum_k exp(e_ik)          eq. 6
    c_i = sum_j alpha_ij h_j                         eq. 5

    ``U_a h_j`` does not depend on the decoder step ``i``: :meth:`precompute` computes it once per
    source sentence, as A.1.2 itself suggests. Biases are omitted, as in the paper's equations.

    Args:
        query_size: size of the decoder state ``s_{i-1}``.
        key_size: size of the annotations ``h_j`` (``2n`` for a bidirectional encoder).
        attention_size: hidden size ``n'`` of the alignment model.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)  # W_a
        self.key_layer = nn.Linear(key_size, attention_size, bias=False)  # U_a
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)  # v_a

    def precompute(self, keys: Tensor) -> Tensor:
        """``U_a h_j`` for every source position: ``(B, S, K) -> (B, S, A)``."""
        return self.key_layer(keys)

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j): ``(B, Q), (B, S, A) -> (B, S)``."""
        hidden = torch.tanh(self.query_layer(query).unsqueeze(1) + projected_keys)  # (B, S, A)
        return self.energy_layer(hidden).squeeze(-1)


class LuongAttention(Attention):
    """Global multiplicative attention (Luong et al. 2015, eq. 7-8).

    score(h_t, h̄_s) = h_t^T h̄_s           "dot"
    score(h_t, h̄_s) = h_t^T W_a h̄_s       "general"
    a_t(s) = softmax_s(score(h_t, h̄_s))   eq. 7
    c_t = sum_s a_t(s) h̄_s                 (section 3.1)

    For "general", ``W_a h̄_s`` is independent of ``t``: :meth:`precompute` computes it once.

    Args:
        query_size: size of the decoder's top hidden state ``h_t``.
        key_size: size of the source hidden states ``h̄_s``; must equal ``query_size`` for "dot".
        score: "dot" or "general" (eq. 8; "concat" and location-based scores are not included).

    Raises:
        ValueError: ``score="dot"`` with different query and key sizes.
    """

    def __init__(
        self, query_size: int, key_size: int, score: Literal["dot", "general"] = "general"
    ) -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                "score='dot' needs equal query and key sizes (a decoder's hidden_size and its "
                f"encoder's output_size), got {query_size} and {key_size}; use score='general', "
                "which learns W_a"
            )
        self.score_name = score
        # W_a: (Q, K); stored as a (K -> Q) map so that it applies to the keys once.
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if score == "general" else None

    def extra_repr(self) -> str:
        return f"score={self.score_name}"

    def precompute(self, keys: Tensor) -> Tensor:
        """``h̄_s`` (dot) or ``W_a h̄_s`` (general): ``(B, S, K) -> (B, S, Q)``."""
        return keys if self.key_layer is None else self.key_layer(keys)

    def score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """h_t^T (W_a) h̄_s for every ``s``: ``(B, Q), (B, S, Q) -> (B, S)``."""
        return torch.bmm(projected_keys, query.unsqueeze(-1)).squeeze(-1)
