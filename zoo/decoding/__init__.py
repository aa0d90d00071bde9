"""Decoding: sampling, greedy search and batched beam search over a step function, with one
:class:`DecodeSettings` for every task.

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

from zoo.decoding.beam import beam_search
from zoo.decoding.common import FINISHED_CHECK_EVERY, Hypotheses, ReorderFn, StepFn
from zoo.decoding.greedy import greedy_search
from zoo.decoding.sampling import filter_logits, sample
from zoo.decoding.settings import MAX_TOKENS, DecodeSettings, search

__all__ = [
    "FINISHED_CHECK_EVERY",
    "MAX_TOKENS",
    "DecodeSettings",
    "Hypotheses",
    "ReorderFn",
    "StepFn",
    "beam_search",
    "filter_logits",
    "greedy_search",
    "sample",
    "search",
]
