"""Neural machine translation: Seq2Seq (Sutskever et al. 2014), RNNSearch (Bahdanau et al. 2014)
and LuongNMT (Luong et al. 2015), plain ``nn.Module`` s with one interface::

    logits = model(src, src_lengths, tgt_in)   # teacher forcing: (B, S), (B,), (B, T) -> (B, T, V)
    state = model.encode(src, src_lengths)     # a DecoderState for B sentences
    logits, state = model.decode_step(tokens, state)   # one target step: (N,) -> (N, V)
    features = model.features(src, src_lengths, tgt_in)  # (B, T, F): logits = head(drop(features))
    state = model.reorder_state(state, index)  # rows ``index`` (N',), e.g. beam back-pointers
    state.attention_weights                    # (N, S) of the last step; None for Seq2Seq

so :mod:`zoo.decoding` runs on any of them::

    state = model.encode(src, src_lengths)
    hyps = beam_search(model.decode_step, model.reorder_state, state, bos, eos, max_len)

``forward`` is the same computation as ``encode`` followed by ``decode_step`` on ``tgt_in[:, t]``
for every ``t``; padding in ``src`` (past ``src_lengths``) does not change any result. ``head`` runs
once, after the time loop, on ``features``: a loss can fuse it with the cross-entropy.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from zoo.cores import GRU, LSTM, CoreFactory, RecurrentCore, State, build_core, state_parts
from zoo.layers import BahdanauAttention, Bridge, Dropout, FinalStateBridge, LuongAttention
from zoo.models.state import DecoderState, check_decoder

#: The state :mod:`zoo.decoding` carries for a translation model (the name before it was shared).
TranslationState = DecoderState


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of ``(B, S, ...)`` within its own length; padding stays in place."""
    positions = torch.arange(x.shape[1], device=x.device)  # (S,)
    lengths = lengths.to(x.device)[:, None]  # (B, 1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, S)
    index = index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x)
    return x.gather(1, index)


class TranslationModel(nn.Module):
    """Shared parts: embeddings, packed encoding, the teacher-forcing loop, reordering, config.

    Subclasses build ``encoder``, ``decoder`` and the output layer ``head`` (an ``nn.Linear`` onto
    the target vocabulary), and implement :meth:`_initial_state` and :meth:`decode_features`.
    Every ``__init__`` argument other than the two core factories is stored under its own name,
    so :meth:`config` can read it back.
    """

    encoder: RecurrentCore
    decoder: RecurrentCore
    head: nn.Linear

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embedding_dim: int,
        dropout: float,
        pad_id: int,
        reverse_source: bool,
    ) -> None:
        super().__init__()
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        self.drop = Dropout(dropout)
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.embedding_dim, self.dropout, self.pad_id = embedding_dim, dropout, pad_id
        self.reverse_source = reverse_source

    def _init_uniform(self, bound: float) -> None:
        """Every parameter ~ U(-bound, bound) (Sutskever et al. 2014, section 3.4); this also
        replaces the cores' own init (e.g. the LSTM forget bias). Padding embeddings stay zero."""
        with torch.no_grad():
            for param in self.parameters():
                param.uniform_(-bound, bound)
            for embedding in (self.src_embedding, self.tgt_embedding):
                embedding.weight[self.pad_id].zero_()

    def _encode_source(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, State, Tensor]:
        """Packed encoding: ``(B, S)`` ids -> memory ``(B, S, H_enc)`` in source order (zero past
        each length), the encoder's final state and the ``(B, S)`` mask of valid positions."""
        lengths = src_lengths.cpu()  # packing wants CPU lengths
        if src.shape[1] == 0:  # a batch of empty sources: keep one (masked) position
            src = src.new_full((src.shape[0], 1), self.pad_id)
        mask = torch.arange(src.shape[1], device=src.device) < lengths.to(src.device)[:, None]
        if self.reverse_source:  # Sutskever et al. 2014, section 3.3
            src = reverse_padded(src, lengths)
        x = self.drop(self.src_embedding(src))  # (B, S, E)
        # Packing needs length >= 1: an empty source is read as one padding token, and attention
        # then sees no valid position (zero context).
        memory, final = self.encoder(x, None, lengths.clamp(min=1))  # (B, S, H_enc)
        if self.reverse_source:  # back to source order: attention weights align with the source
            memory = reverse_padded(memory, lengths)
        return memory, final, mask

    def _initial_state(self, memory: Tensor, final: State, mask: Tensor) -> DecoderState:
        raise NotImplementedError

    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encode a batch: ``(B, S)`` ids and ``(B,)`` lengths -> the decoder's initial state."""
        return self._initial_state(*self._encode_source(src, src_lengths))

    def decode_features(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One target step: ``(N,)`` previous tokens -> ``(N, F)`` input of the output layer (before
        its dropout), new state."""
        raise NotImplementedError

    def decode_step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One target step: ``(N,)`` previous tokens -> ``(N, V)`` logits of the next, new state."""
        features, state = self.decode_features(tokens, state)
        return self.head(self.drop(features)), state

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Rows ``index`` (N',) of the state, e.g. beams after a step (``zoo.decoding``)."""
        return state.index_select(index)

    def reorder_beams(self, state: DecoderState, index: Tensor) -> DecoderState:
        """:meth:`reorder_state` for beam search's per-step reorders (``reorder_beams_fn``)."""
        return state.select_beams(index)

    def features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing up to the output layer: ``(B, S)`` source, ``(B,)`` lengths, ``(B, T)``
        target input (BOS first) -> ``(B, T, F)``, what ``head`` reads (before its dropout)."""
        state = self.encode(src, src_lengths)
        features = []
        for t in range(tgt_in.shape[1]):
            step_features, state = self.decode_features(tgt_in[:, t], state)  # (B, F)
            features.append(step_features)
        return torch.stack(features, dim=1)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``(B, S)`` source, ``(B,)`` lengths, ``(B, T)`` target input (BOS
        first) -> ``(B, T, V)`` logits of the next target tokens."""
        return self.head(self.drop(self.features(src, src_lengths, tgt_in)))

    def config(self) -> dict[str, Any]:
        """JSON-able hyperparameters that rebuild this model with :meth:`from_config`."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]  # without self
        config = {name: getattr(self, name) for name in names if name not in ("encoder", "decoder")}
        return {**config, "encoder": self.encoder.config(), "decoder": self.decoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TranslationModel:
        """Rebuild a model from :meth:`config` (weights are initialised afresh: load them after)."""
        config = dict(config)
        encoder, decoder = config.pop("encoder"), config.pop("decoder")
        return cls(
            encoder=lambda size: build_core(encoder, size),
            decoder=lambda size: build_core(decoder, size),
            **config,
        )


class Seq2Seq(TranslationModel):
    """Sequence to sequence learning with deep LSTMs (Sutskever et al. 2014), no attention.

    The encoder reads the reversed source (section 3.3); its final state initialises the decoder
    (through a :class:`FinalStateBridge`), which models p(y_t | v, y_1..y_{t-1}) with a softmax
    over its top layer (eq. 1).

    Args:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        encoder: builds the encoder core from its input size (``embedding_dim``); any core, uni- or
            bidirectional. None: the paper's LSTM, 4 layers of 1000 cells.
        decoder: builds the (unidirectional) decoder core from ``embedding_dim``. None: as encoder.
        embedding_dim: size of both word embeddings (1000 in the paper).
        dropout: on the embeddings and before the output layer (the paper used none).
        pad_id: padding id; its embeddings are zero.
        reverse_source: read the source backwards (section 3.3).
        init_uniform: initialise every parameter from U(-a, a) (section 3.4: a = 0.08); None keeps
            PyTorch's and the cores' init.

    Raises:
        ValueError: a bidirectional decoder.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        encoder: CoreFactory | None = None,
        decoder: CoreFactory | None = None,
        embedding_dim: int = 1000,
        dropout: float = 0.0,
        pad_id: int = 0,
        reverse_source: bool = True,
        init_uniform: float | None = 0.08,
    ) -> None:
        super().__init__(
            src_vocab_size, tgt_vocab_size, embedding_dim, dropout, pad_id, reverse_source
        )
        paper_lstm = partial(LSTM, hidden_size=1000, num_layers=4)
        self.encoder = (encoder or paper_lstm)(embedding_dim)
        self.decoder = check_decoder((decoder or paper_lstm)(embedding_dim))
        self.bridge = FinalStateBridge(self.encoder, self.decoder)
        self.head = nn.Linear(self.decoder.hidden_size, tgt_vocab_size)
        self.init_uniform = init_uniform
        if init_uniform is not None:
            self._init_uniform(init_uniform)

    def _initial_state(self, memory: Tensor, final: State, mask: Tensor) -> DecoderState:
        return DecoderState(rnn=self.bridge(final))  # the fixed-size vector v: no memory

    def decode_features(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One target step: ``(N,)`` previous tokens -> ``(N, H)`` top decoder state, new state."""
        x = self.drop(self.tgt_embedding(tokens))[:, None]  # (N, 1, E)
        output, rnn = self.decoder(x, state.rnn)  # (N, 1, H)
        return output[:, 0], state._replace(rnn=rnn)

    def features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """As :meth:`TranslationModel.features`, with the decoder run over all ``T`` steps at once
        (one fused kernel call; no attention feeds back into its input)."""
        state = self.encode(src, src_lengths)
        output, _ = self.decoder(self.drop(self.tgt_embedding(tgt_in)), state.rnn)  # (B, T, H)
        return output


class RNNSearch(TranslationModel):
    """Jointly learning to align and translate (Bahdanau et al. 2014, appendix A.2).

    Encoder: annotations h_j = [→h_j; ←h_j] of a bidirectional RNN (A.2.1). Decoder (A.2.2):
    s_0 = tanh(W_s ←h_1); at step i, the context c_i = sum_j alpha_ij h_j from additive
    attention on s_{i-1} (eq. 5-6), a deep output with maxout over [s_{i-1}, E y_{i-1}, c_i], and
    s_i = GRU([E y_{i-1}; c_i], s_{i-1}).

    Args:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        encoder: builds the encoder core from ``embedding_dim``; uni- or bidirectional (a
            unidirectional one initialises s_0 from its final state instead of ←h_1). None: the
            paper's bidirectional GRU, 1000 units per direction.
        decoder: builds the (unidirectional) decoder core from ``embedding_dim +
            encoder.output_size``; its top layer's ``h`` is s_i. None: the paper's GRU, 1000 units.
        embedding_dim: size of the word embeddings (620 in the paper).
        dropout: on the embeddings and before W_o (the paper used none).
        pad_id: padding id; its embeddings are zero.
        attention_size: hidden size n' of the alignment model (1000).
        maxout_size: size l of the maxout layer t_i (500).
        reverse_source: read the source backwards (moot for a bidirectional encoder).

    Raises:
        ValueError: a bidirectional decoder.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        encoder: CoreFactory | None = None,
        decoder: CoreFactory | None = None,
        embedding_dim: int = 620,
        dropout: float = 0.0,
        pad_id: int = 0,
        attention_size: int = 1000,
        maxout_size: int = 500,
        reverse_source: bool = False,
    ) -> None:
        super().__init__(
            src_vocab_size, tgt_vocab_size, embedding_dim, dropout, pad_id, reverse_source
        )
        self.encoder = (encoder or partial(GRU, hidden_size=1000, bidirectional=True))(
            embedding_dim
        )
        annotation_size = self.encoder.output_size  # 2n
        decoder = decoder or partial(GRU, hidden_size=1000)
        self.decoder = check_decoder(decoder(embedding_dim + annotation_size))  # [E y; c]
        hidden_size = self.decoder.hidden_size
        self.bridge = Bridge(self.encoder.hidden_size, self.decoder)  # W_s
        self.attention = BahdanauAttention(hidden_size, annotation_size, attention_size)
        # [U_o, V_o, C_o] as one matrix over [s_{i-1}; E y_{i-1}; c_i]
        self.readout = nn.Linear(hidden_size + embedding_dim + annotation_size, 2 * maxout_size)
        self.head = nn.Linear(maxout_size, tgt_vocab_size)  # W_o
        self.attention_size, self.maxout_size = attention_size, maxout_size

    def _initial_state(self, memory: Tensor, final: State, mask: Tensor) -> DecoderState:
        h = state_parts(final)[0]  # (L * D, B, H_enc)
        enc = self.encoder
        # Top layer, last direction: the right-to-left RNN after reading x_1, i.e. ←h_1 (A.2.2).
        backward_first = h.view(enc.num_layers, enc.num_directions, h.shape[1], -1)[-1, -1]
        return DecoderState(
            rnn=self.bridge(backward_first),  # s_0 = tanh(W_s ←h_1)
            memory=memory,
            keys=self.attention.precompute(memory),  # U_a h_j, once per sentence (A.1.2)
            mask=mask,
        )

    def decode_features(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One target step i: ``(N,)`` tokens y_{i-1} -> ``(N, l)`` maxout t_i (logits of y_i are
        ``head(t_i)``, W_o t_i), new state."""
        embedded = self.drop(self.tgt_embedding(tokens))  # (N, E): E y_{i-1}
        query = state_parts(state.rnn)[0][-1]  # (N, H): s_{i-1}, the top layer's h
        context, weights = self.attention(query, state.memory, state.mask, state.keys)  # c_i
        # Deep output (A.2.2): t~_i = U_o s_{i-1} + V_o E y_{i-1} + C_o c_i, then maxout over
        # pairs, t_i,j = max(t~_i,2j-1, t~_i,2j), and p(y_i) ∝ exp(y_i^T W_o t_i). The appendix
        # uses the state *before* this step's update, s_{i-1} (eq. 4 writes g(y_{i-1}, s_i, c_i)
        # and A.2.2's left-hand side p(y_i | s_i, ...), but its t~_i reads s_{i-1}); we follow t~_i.
        t_tilde = self.readout(torch.cat([query, embedded, context], dim=-1))  # (N, 2l)
        t = t_tilde.view(t_tilde.shape[0], -1, 2).amax(dim=-1)  # (N, l); W_o t_i is the head's
        step_input = torch.cat([embedded, context], dim=-1)[:, None]  # (N, 1, E + 2n)
        _, rnn = self.decoder(step_input, state.rnn)  # s_i = f(s_{i-1}, y_{i-1}, c_i)
        return t, state._replace(rnn=rnn, attention_weights=weights)


class LuongNMT(TranslationModel):
    """Global attention with input feeding (Luong et al. 2015, sections 3.1 and 3.3).

    Stacked LSTMs as in Sutskever et al. (reversed source, final state to the decoder). At each
    step the decoder's top state h_t attends over the source states (eq. 7-8); the attentional
    vector h~_t = tanh(W_c [c_t; h_t]) (eq. 5) gives p(y_t) = softmax(W_s h~_t) (eq. 6) and, with
    input feeding, is concatenated to the next step's input (section 3.3).

    Args:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        encoder: builds the encoder core from ``embedding_dim``; any core, uni- or bidirectional.
            None: the paper's LSTM, 4 layers of 1000 cells.
        decoder: builds the (unidirectional) decoder core from ``embedding_dim`` (+
            ``attentional_size`` with input feeding). None: as encoder.
        embedding_dim: size of both word embeddings (1000 in the paper).
        dropout: on the embeddings and on h~_t before the softmax (0.2 in the paper).
        pad_id: padding id; its embeddings are zero.
        score: "dot" or "general" (eq. 8). "dot" needs ``encoder.output_size`` equal to the
            decoder's ``hidden_size``; it was the better global score in Table 4, "general" works
            for any sizes.
        input_feed: feed h~_{t-1} to the decoder with y_{t-1} (section 3.3).
        attentional_size: size of h~_t; None: the decoder's ``hidden_size``, as in the paper.
        reverse_source: read the source backwards (Table 1, "reverse").
        init_uniform: every parameter from U(-a, a) (section 4.1: a = 0.1); None keeps the default.

    Raises:
        ValueError: a bidirectional decoder, or ``score="dot"`` with different sizes.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        encoder: CoreFactory | None = None,
        decoder: CoreFactory | None = None,
        embedding_dim: int = 1000,
        dropout: float = 0.0,
        pad_id: int = 0,
        score: Literal["dot", "general"] = "general",
        input_feed: bool = True,
        attentional_size: int | None = None,
        reverse_source: bool = True,
        init_uniform: float | None = 0.1,
    ) -> None:
        super().__init__(
            src_vocab_size, tgt_vocab_size, embedding_dim, dropout, pad_id, reverse_source
        )
        paper_lstm = partial(LSTM, hidden_size=1000, num_layers=4)
        self.encoder = (encoder or paper_lstm)(embedding_dim)
        decoder = decoder or paper_lstm
        if attentional_size is None:  # a throwaway core, only to read its hidden size
            attentional_size = decoder(embedding_dim).hidden_size
        input_size = embedding_dim + attentional_size if input_feed else embedding_dim
        self.decoder = check_decoder(decoder(input_size))
        hidden_size, memory_size = self.decoder.hidden_size, self.encoder.output_size
        self.bridge = FinalStateBridge(self.encoder, self.decoder)
        self.attention = LuongAttention(hidden_size, memory_size, score)
        self.combine = nn.Linear(memory_size + hidden_size, attentional_size, bias=False)  # W_c
        self.head = nn.Linear(attentional_size, tgt_vocab_size)  # W_s
        self.score, self.input_feed = score, input_feed
        self.attentional_size, self.init_uniform = attentional_size, init_uniform
        if init_uniform is not None:
            self._init_uniform(init_uniform)

    def _initial_state(self, memory: Tensor, final: State, mask: Tensor) -> DecoderState:
        feed = None
        if self.input_feed:  # h~_0 = 0
            feed = memory.new_zeros(memory.shape[0], self.attentional_size)
        return DecoderState(
            rnn=self.bridge(final),
            memory=memory,
            keys=self.attention.precompute(memory),  # h̄_s or W_a h̄_s, once per sentence
            mask=mask,
            feed=feed,
        )

    def decode_features(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One target step t: ``(N,)`` tokens y_{t-1} -> ``(N, H~)`` attentional vector h~_t (the
        logits of y_t are ``head(h~_t)``, W_s h~_t: eq. 6), new state."""
        x = self.drop(self.tgt_embedding(tokens))  # (N, E)
        if self.input_feed:
            x = torch.cat([x, state.feed], dim=-1)  # (N, E + H~): [y_{t-1}; h~_{t-1}]
        output, rnn = self.decoder(x[:, None], state.rnn)
        h = output[:, 0]  # (N, H): h_t, the top layer
        context, weights = self.attention(h, state.memory, state.mask, state.keys)  # c_t, a_t
        attentional = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))  # h~_t, eq. 5
        feed = attentional if self.input_feed else None
        return attentional, state._replace(rnn=rnn, feed=feed, attention_weights=weights)
