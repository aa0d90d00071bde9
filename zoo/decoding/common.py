"""What the searches share: the step-function types, :class:`Hypotheses`, the constrained
candidates and the host-sync schedule (conventions in :mod:`zoo.decoding`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]
ReorderFn = Callable[[Any, Tensor], Any]

FINISHED_CHECK_EVERY = 4
"""Steps between the host-side "has every beam ended?" checks."""


@dataclass
class Hypotheses:
    """Decoded hypotheses of a batch, best first.

    Attributes:
        tokens: ``B x n x len`` token ids with EOS stripped. A sentence with fewer than ``n_best``
            possible hypotheses (tiny vocabulary or ``max_len``) has fewer lists.
        scores: ``(B, n_best)`` length-normalised log-probabilities, sorted in descending order,
            ``-inf`` where a sentence has no such hypothesis. On the decoding device.
    """

    tokens: list[list[list[int]]]
    scores: Tensor  # (B, n_best)

    @property
    def best(self) -> list[list[int]]:
        """The best hypothesis of each sentence, ``B x len``."""
        return [hyps[0] if hyps else [] for hyps in self.tokens]

    def padded(self, pad: int) -> tuple[Tensor, Tensor]:
        """The hypotheses as one padded CPU tensor.

        Args:
            pad: Id written after the end of each hypothesis (and in missing ones).

        Returns:
            ``(B, n_best, L)`` token ids and ``(B, n_best)`` lengths, ``L`` the longest length.
        """
        n_best = self.scores.shape[1]
        width = max((len(h) for hyps in self.tokens for h in hyps), default=0)
        rows = [hyps + [[]] * (n_best - len(hyps)) for hyps in self.tokens]
        tokens = [[h + [pad] * (width - len(h)) for h in hyps] for hyps in rows]
        lengths = [[len(h) for h in hyps] for hyps in rows]
        return (
            torch.tensor(tokens, dtype=torch.long).view(len(rows), n_best, width),
            torch.tensor(lengths, dtype=torch.long).view(len(rows), n_best),
        )


def _score_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half / bfloat16 / float32 logits, float64 for float64."""
    return torch.promote_types(logits.dtype, torch.float32)


def _normalize(scores: Tensor, lengths: Tensor, length_penalty: float) -> Tensor:
    """``scores / lengths ** length_penalty``, lengths counting EOS (module docstring)."""
    return scores / lengths.to(scores.dtype) ** length_penalty


def _find_device(obj: Any) -> torch.device | None:
    """Device of the first tensor in a (nested) tuple / list / dict, if any."""
    if isinstance(obj, Tensor):
        return obj.device
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for item in obj:
            device = _find_device(item)
            if device is not None:
                return device
    return None


def _prepare(
    state: Any, bos: Tensor | int, max_len: Tensor | int, batch_size: int | None
) -> tuple[Tensor, Tensor, int]:
    """Resolves the batch: ``(B,)`` BOS ids, ``(B,)`` max lengths, number of decoding steps.

    The device is that of ``bos``, else ``max_len``, else the first tensor in ``state``, else CPU.
    """
    sizes = {x.shape[0] for x in (bos, max_len) if isinstance(x, Tensor) and x.dim() > 0}
    if batch_size is not None:
        sizes.add(batch_size)
    if len(sizes) != 1:
        raise ValueError(
            f"cannot tell the batch size from bos / max_len / batch_size (sizes {sorted(sizes)});"
            " pass batch_size= when bos and max_len are ints, and keep them consistent"
        )
    (size,) = sizes
    device = _find_device((bos, max_len, state)) or torch.device("cpu")
    if isinstance(max_len, Tensor):
        lowest, longest = torch.stack([max_len.min(), max_len.max()]).tolist()  # one host sync
    else:
        lowest = longest = max_len
    if lowest < 0:
        raise ValueError(f"max_len must be >= 0, got {lowest}")
    bos = torch.as_tensor(bos, dtype=torch.long, device=device).expand(size).contiguous()
    max_len = torch.as_tensor(max_len, dtype=torch.long, device=device).expand(size)
    return bos, max_len, int(longest) + 1


def _candidates(
    logits: Tensor, finished: Tensor, at_max_len: Tensor, eos: int, k: int
) -> tuple[Tensor, Tensor]:
    """The ``k`` best next tokens of each row and their log-probabilities, constraints applied.

    Rows at their ``max_len`` may only emit EOS, at its real log-probability; finished rows only
    emit EOS, at zero cost, so their score stays put. Their other candidates are ``-inf``.

    Two passes over ``(N, V)``, a fused log-softmax and a top-k: the constraints touch the
    ``(N, k)`` candidates, not ``(N, V)`` masks, which were most of beam search's own cost.

    Args:
        logits: ``(N, V)``.
        finished: ``(N,)`` bool, rows that have emitted EOS.
        at_max_len: ``(N,)`` bool, rows whose step index has reached their ``max_len``.
        eos: EOS id.
        k: Candidates per row; more than ``V`` gives ``-inf`` surplus candidates.

    Returns:
        ``(N, k)`` log-probabilities in descending order (float32, or float64 for float64
        logits) and ``(N, k)`` token ids.
    """
    rows, vocab_size = logits.shape
    if not 0 <= eos < vocab_size:
        raise ValueError(f"eos={eos} is outside the vocabulary of size {vocab_size}")
    log_probs = logits.to(_score_dtype(logits)).log_softmax(-1)  # (N, V)
    values, ids = log_probs.topk(min(k, vocab_size), dim=-1)  # (N, k')
    if k > vocab_size:  # surplus slots: impossible candidates
        values = torch.cat([values, values.new_full((rows, k - vocab_size), -math.inf)], -1)
        ids = torch.cat([ids, ids.new_full((rows, k - vocab_size), eos)], -1)
    eos_value = torch.where(finished, 0.0, log_probs[:, eos])  # (N,)
    blocked = (finished | at_max_len)[:, None]  # (N, 1): EOS first, nothing else
    first = torch.where(blocked, eos_value[:, None], values[:, :1])
    values = torch.cat([first, values[:, 1:].masked_fill(blocked, -math.inf)], dim=-1)
    ids = torch.cat([torch.where(blocked, eos, ids[:, :1]), ids[:, 1:]], dim=-1)
    return values, ids


def _time_to_stop(t: int, done: Tensor) -> bool:
    """Every FINISHED_CHECK_EVERY steps, one host sync: has every row ended?"""
    return (t + 1) % FINISHED_CHECK_EVERY == 0 and bool(done.all())


def _to_hypotheses(tokens: Tensor, lengths: Tensor, scores: Tensor) -> Hypotheses:
    """Lists from ``(B, n, T)`` tokens, ``(B, n)`` lengths (with EOS), ``(B, n)`` sorted scores.

    Hypotheses scored ``-inf`` (impossible ones) are dropped. One host transfer.
    """
    lengths = lengths.masked_fill(~scores.isfinite(), 0)
    packed = torch.cat([lengths[..., None], tokens], dim=-1).tolist()  # (B, n, 1 + T)
    # row[0] is the length with EOS: the tokens are row[1 : row[0]].
    hyps = [[row[1 : row[0]] for row in sentence if row[0] > 0] for sentence in packed]
    return Hypotheses(tokens=hyps, scores=scores)
