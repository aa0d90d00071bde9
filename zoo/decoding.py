"""Decoding: sampling, greedy search and batched beam search over a step function.

Every decoder here is a pure function of a *step function* and never touches a model::

    step_fn(tokens, state) -> (logits, new_state)   # tokens (N,) long -> logits (N, V)
    reorder_fn(state, index) -> state               # gather / repeat the state's batch entries

so the char language model, translation and captioning share one implementation; only they know
where the batch dimension of their state lies ((L, N, H) RNN states, (N, S, H) encoder memory).

Loops run over time steps only: sentences and beams are batched as ``N = B`` or ``N = B * K``
rows (sentence-major, ``row = b * K + k``).

Conventions (shared by :func:`greedy_search` and :func:`beam_search`):

* ``max_len`` counts output tokens *excluding* EOS, as fairseq's ``max_len_b`` does: a hypothesis
  has at most ``max_len`` tokens. At step ``max_len`` only EOS may be emitted, and it is scored
  with its real log-probability, so every hypothesis is a complete sequence with a proper score.
  ``max_len = 0`` (an empty source) gives the empty hypothesis scored ``log p(EOS | BOS)``.
* Score: ``sum(log p) / len ** length_penalty`` where ``len`` counts the EOS token (fairseq's
  ``lenpen``); ``length_penalty = 0`` is the raw log-probability. GNMT's
  ``((5 + len) / 6) ** alpha`` (Wu et al., 2016, eq. 14) is not used.
* A finished beam keeps its score and only extends with EOS at zero cost, so it keeps its slot and
  competes with the open beams. Candidates are ranked by the score above, an open one's ``len``
  being the number of tokens emitted so far.
* Host syncs, none per step: at the start, reading the loop bound ``max(max_len) + 1`` from a
  ``max_len`` tensor (free for a CPU tensor, which then costs one copy to the GPU); one every
  :data:`FINISHED_CHECK_EVERY` steps to stop once every sentence is over (beam search also drops
  the sentences that are over from the batch then); one at the end to turn the hypotheses into
  lists. Checking every step would stall CUDA each step; checking every few steps wastes at most
  ``FINISHED_CHECK_EVERY - 1`` steps of EOS padding, which cannot change the result because
  ended hypotheses never change.
* Log-probabilities and scores are computed in float32, or float64 for float64 logits.
"""

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


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- shared search parts


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


# --------------------------------------------------------------------------- greedy search


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


# --------------------------------------------------------------------------- beam search


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
