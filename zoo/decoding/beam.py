"""Batched beam search: all B * K beams decoded as one flat batch, ended sentences leave it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from zoo.decoding.common import (
    FINISHED_CHECK_EVERY,
    Hypotheses,
    ReorderFn,
    StepFn,
    _candidates,
    _normalize,
    _prepare,
    _to_hypotheses,
)


@dataclass
class _Beam:
    """The K open or finished hypotheses of each of B sentences."""

    tokens: Tensor  # (B, K, T) emitted ids, EOS after the end
    last: Tensor  # (B, K) the next input token
    scores: Tensor  # (B, K) sum of log-probs; -inf for dead slots
    lengths: Tensor  # (B, K) tokens emitted, EOS included
    finished: Tensor  # (B, K) bool

    @classmethod
    def start(cls, bos: Tensor, beam_size: int, n_steps: int) -> _Beam:
        """Only slot 0 is alive at first, so step 0 expands one hypothesis, not K copies."""
        size, device = bos.shape[0], bos.device
        scores = torch.full((size, beam_size), -math.inf, device=device)
        scores[:, 0] = 0.0
        return cls(
            tokens=torch.zeros(size, beam_size, n_steps, dtype=torch.long, device=device),
            last=bos[:, None].expand(size, beam_size).contiguous(),
            scores=scores,
            lengths=torch.zeros(size, beam_size, dtype=torch.long, device=device),
            finished=torch.zeros(size, beam_size, dtype=torch.bool, device=device),
        )

    def select(self, index: Tensor) -> _Beam:
        """The beams of sentences ``index`` (B',)."""
        return _Beam(*(x.index_select(0, index) for x in vars(self).values()))

    def put(self, result: _Beam | None, index: Tensor, size: int) -> _Beam:
        """Writes these sentences into rows ``index`` (B',) of ``result``, B sentences (created
        on first use, with the scores' final dtype)."""
        if result is None:
            result = _Beam(*(x.new_zeros((size, *x.shape[1:])) for x in vars(self).values()))
        for name, x in vars(result).items():
            x.index_copy_(0, index, getattr(self, name))
        return result

    def done(self, n_best: int, early_stopping: bool) -> Tensor:
        """``(B,)`` bool: sentences whose search is over (see :func:`beam_search`)."""
        ended = self.finished | self.scores.isneginf()  # (B, K), slots sorted best first
        return ended[:, :n_best].all(-1) if early_stopping else ended.all(-1)


def _advance(
    beam: _Beam, values: Tensor, ids: Tensor, t: int, eos: int, length_penalty: float
) -> tuple[_Beam, Tensor]:
    """Keeps the K best extensions of each sentence.

    A beam's extensions share its length, so normalising its scores keeps their order: the K
    best overall are among the K best of each beam, and only ``K x K`` candidates per sentence
    are ranked (:func:`_candidates`), not ``K x V``.

    Args:
        beam: Beams before step ``t``.
        values: ``(B, K, K)`` constrained log-probabilities of each beam's K best tokens.
        ids: ``(B, K, K)`` their token ids.
        t: Step index.
        eos: End-of-sequence id.
        length_penalty: Ranking uses the length-normalised score.

    Returns:
        The new beams and ``(B, K)`` back-pointers into the old slots.
    """
    size, beam_size, k = values.shape
    scores = (beam.scores[..., None] + values).view(size, -1)  # (B, K*K)
    lengths = beam.lengths + (~beam.finished).long()  # (B, K) a finished beam does not grow
    ranked = _normalize(scores.view(size, beam_size, k), lengths[..., None], length_penalty)
    chosen = ranked.view(size, -1).topk(beam_size, dim=-1).indices  # (B, K)
    backptr, token = chosen // k, ids.view(size, -1).gather(1, chosen)
    history = beam.tokens.gather(1, backptr[..., None].expand_as(beam.tokens))  # (B, K, T)
    history[:, :, t] = token
    new = _Beam(
        tokens=history,
        last=token,
        scores=scores.gather(1, chosen),
        lengths=lengths.gather(1, backptr),
        finished=token == eos,  # finished beams only ever extend with EOS
    )
    return new, backptr


def _n_best(beam: _Beam, n_best: int, length_penalty: float) -> Hypotheses:
    """The ``n_best`` highest scoring beams of each sentence, as :class:`Hypotheses`."""
    scores = _normalize(beam.scores, beam.lengths, length_penalty)  # (B, K)
    top, order = scores.topk(n_best, dim=-1)  # (B, n), sorted
    tokens = beam.tokens.gather(1, order[..., None].expand(-1, -1, beam.tokens.shape[-1]))
    return _to_hypotheses(tokens, beam.lengths.gather(1, order), top)


def beam_search(
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    state: Any,
    bos: Tensor | int,
    eos: int,
    max_len: Tensor | int,
    *,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    n_best: int = 1,
    batch_size: int | None = None,
    reorder_beams_fn: ReorderFn | None = None,
    early_stopping: bool = True,
) -> Hypotheses:
    """Batched beam search, all ``B * K`` beams decoded as one flat batch.

    ``beam_size`` may exceed the vocabulary: the surplus slots stay dead (score ``-inf``) until
    there are enough hypotheses to fill them, and dead ones are never returned.

    A sentence's search is over when its ``n_best`` best beams have ended (``early_stopping``,
    the rule of OpenNMT-py and Joey NMT), or else when all ``K`` have. Every
    :data:`FINISHED_CHECK_EVERY` steps the sentences that are over leave the batch, so the rows
    decoded shrink as sentences end. With ``length_penalty = 0`` early stopping loses nothing (an
    open beam's score only falls); with length normalisation an open beam could in principle
    still overtake an ended one, which only the exhaustive rule rules out.

    Args:
        step_fn: ``(tokens (N,), state) -> (logits (N, V), state)``, ``N = B' * K`` for the
            ``B'`` sentences still being decoded.
        reorder_fn: ``(state, index (N',)) -> state`` gathering the state's batch entries; used
            to repeat each sentence's state K times, after every step with back-pointers, and to
            drop the rows of sentences whose search is over.
        state: Model state for the ``B`` sentences.
        bos: ``(B,)`` or int, the first input token.
        eos: End-of-sequence id.
        max_len: ``(B,)`` or int, most tokens per hypothesis excluding EOS (module docstring).
        beam_size: Hypotheses kept per sentence, K.
        length_penalty: Exponent of the length normalisation (module docstring).
        n_best: Hypotheses returned per sentence, ``1 <= n_best <= beam_size``.
        batch_size: ``B``, needed only when ``bos`` and ``max_len`` are both ints.
        reorder_beams_fn: like ``reorder_fn``, for the per-step reorders only, whose index
            never moves a row to another sentence's beams. Parts of the state that are the same
            for every beam of a sentence (an encoder's memory) need no copy then, so a model may
            pass a cheaper function that leaves them alone. Defaults to ``reorder_fn``.
        early_stopping: End a sentence once its ``n_best`` best beams have ended (above).

    Returns:
        :class:`Hypotheses`, ``n_best`` per sentence, best first.
    """
    reorder_beams_fn = reorder_beams_fn or reorder_fn
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got {n_best=} and {beam_size=}")
    bos, max_len, n_steps = _prepare(state, bos, max_len, batch_size)
    size, device = bos.shape[0], bos.device
    slots = torch.arange(beam_size, device=device)  # (K,)
    active = torch.arange(size, device=device)  # (B',) the sentences still searched
    # expand, not repeat_interleave, which syncs with the host to size its output
    state = reorder_fn(state, active[:, None].expand(size, beam_size).reshape(-1))  # B -> B*K
    beam = _Beam.start(bos, beam_size, n_steps)
    result = None  # (B, K, ...) the beams of sentences whose search is over
    for t in range(n_steps):
        logits, state = step_fn(beam.last.reshape(-1), state)  # (B'*K, V)
        at_max_len = (t >= max_len)[:, None].expand(-1, beam_size).reshape(-1)  # (B'*K,)
        values, ids = _candidates(logits, beam.finished.view(-1), at_max_len, eos, beam_size)
        shape = (-1, beam_size, beam_size)
        beam, backptr = _advance(beam, values.view(shape), ids.view(shape), t, eos, length_penalty)
        offsets = torch.arange(backptr.shape[0], device=device)[:, None] * beam_size  # (B', 1)
        state = reorder_beams_fn(state, (backptr + offsets).view(-1))  # (B'*K,)
        if (t + 1) % FINISHED_CHECK_EVERY and t + 1 < n_steps:
            continue
        done = beam.done(n_best, early_stopping).tolist()  # one host sync every few steps
        if all(done):
            break
        if any(done):  # those sentences leave the batch
            ended, going = (
                torch.tensor([i for i, d in enumerate(done) if d == flag], device=device)
                for flag in (True, False)
            )
            result = beam.select(ended).put(result, active[ended], size)
            beam, active, max_len = beam.select(going), active[going], max_len[going]
            state = reorder_fn(state, (going[:, None] * beam_size + slots).view(-1))
    return _n_best(beam.put(result, active, size), n_best, length_penalty)
