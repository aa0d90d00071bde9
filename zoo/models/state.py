"""The decoder state that translation and captioning models share, and its checks."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from zoo.cores import RecurrentCore, State, select_state


class DecoderState(NamedTuple):
    """Decoder state of N sentences, beams or pictures (a tuple, so :mod:`zoo.decoding` finds its
    device). Translation and captioning models share it.

    Attributes:
        rnn: decoder recurrent state, ``(L, N, H)`` or an LSTM pair ``(h, c)``; batch on dim 1.
        memory: ``(N, S, H_enc)`` encoder outputs in source order, or a picture's ``(N, S, F)``
            feature grid (None without attention).
        keys: ``(N, S, *)`` the attention's precomputed, query-independent part of the score.
        mask: ``(N, S)`` bool, True at valid source positions.
        feed: ``(N, H~)`` Luong's attentional vector h~_{t-1}, for input feeding.
        attention_weights: ``(N, S)`` weights of the last step (None before it, and for Seq2Seq).
    """

    rnn: State
    memory: Tensor | None = None
    keys: Tensor | None = None
    mask: Tensor | None = None
    feed: Tensor | None = None
    attention_weights: Tensor | None = None

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows ``index`` (N',) of every part, each along its own batch dim."""
        rest = (None if x is None else x.index_select(0, index) for x in self[1:])
        return DecoderState(select_state(self.rnn, index), *rest)

    def select_beams(self, index: Tensor) -> DecoderState:
        """Like :meth:`index_select` for an index that keeps every row within its sentence's
        beams: the source memory, keys and mask are the same for all of them and stay as they
        are (no (B*K, S, H) copies per decoding step)."""
        pick = (
            None if x is None else x.index_select(0, index)
            for x in (self.feed, self.attention_weights)
        )
        return self._replace(
            rnn=select_state(self.rnn, index), **dict(zip(("feed", "attention_weights"), pick))
        )


def check_decoder(decoder: RecurrentCore) -> RecurrentCore:
    if decoder.bidirectional:
        raise ValueError(
            "decoder must be unidirectional: it generates the target left to right, one token at "
            "a time; set the decoder core's bidirectional: false"
        )
    return decoder
