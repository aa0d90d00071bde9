"""Image captioning: Show and Tell (Vinyals et al. 2015) and Show, Attend and Tell (Xu et al.
2015, soft attention), plain ``nn.Module`` s with the translation models' decoder interface::

    logits = model(images, captions_in)        # teacher forcing: (B, 3, H, W), (B, T) -> (B, T, V)
    state = model.encode(images)               # a CaptionState for B pictures
    logits, state = model.decode_step(tokens, state)   # one step: (N,) -> (N, V)
    state = model.reorder_state(state, index)  # rows ``index`` (N',), e.g. beam back-pointers
    state.attention_weights                    # (N, S) over the feature grid; None for ShowAndTell

so :mod:`zoo.decoding` runs on them::

    hyps = beam_search(model.decode_step, model.reorder_state, model.encode(images), bos, eos, 20)

``images`` may also be ``(B, S, F)`` features the frozen encoder computed before (a data module's
feature cache): :meth:`CaptioningModel.image_features` then skips the CNN.

``forward`` is the same computation as ``encode`` followed by ``decode_step`` on
``captions_in[:, t]`` for every ``t``. :meth:`ShowAttendTell.forward_with_attention` also returns
the ``(B, T, S)`` attention weights, for the doubly stochastic penalty
(:func:`doubly_stochastic_penalty`) that the task adds with its own weight lambda.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from zoo.cores import LSTM, CoreFactory, RecurrentCore, build_core, state_parts
from zoo.layers import BahdanauAttention, Bridge, Dropout, ImageEncoder, build_encoder
from zoo.models.state import DecoderState, check_decoder

#: Decoder state: ``rnn`` (batch on dim 1), ``memory`` (N, S, F) feature grid, ``keys`` the
#: attention's precomputed U_a a_i, ``mask`` (N, S) all True, ``attention_weights`` (N, S).
CaptionState = DecoderState

__all__ = [
    "CaptionState",
    "CaptioningModel",
    "ImageEncoder",  # recipes and files name it here: zoo.models.captioning.ImageEncoder
    "ShowAndTell",
    "ShowAttendTell",
    "build_encoder",
    "doubly_stochastic_penalty",
]


def doubly_stochastic_penalty(weights: Tensor, mask: Tensor | None = None) -> Tensor:
    """Xu et al. 2015, eq. 14: sum_i (1 - sum_t alpha_ti)^2, averaged over the batch.

    Args:
        weights: ``(B, T, S)`` attention weights of every step.
        mask: ``(B, T)`` bool, True at real (non-padding) steps; None counts every step.
    """
    if mask is not None:
        weights = weights * mask[..., None]
    return ((1.0 - weights.sum(dim=1)) ** 2).sum(dim=-1).mean()


class CaptioningModel(nn.Module):
    """Shared parts: encoder, word embedding, reordering, teacher forcing, config."""

    encoder: ImageEncoder
    decoder: RecurrentCore

    def __init__(
        self,
        vocab_size: int,
        encoder: ImageEncoder | None,
        embedding_dim: int,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else ImageEncoder()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.drop = Dropout(dropout)
        self.vocab_size, self.embedding_dim = vocab_size, embedding_dim
        self.dropout, self.pad_id = dropout, pad_id

    def encode(self, images: Tensor) -> CaptionState:
        raise NotImplementedError

    def image_features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` pictures -> ``(B, S, F)`` through the encoder. ``(B, S, F)`` features
        this frozen encoder computed before (a data module's ``feature_cache``) pass through."""
        if images.dim() == 4:
            return self.encoder(images)
        if images.dim() != 3 or images.shape[-1] != self.encoder.output_size:
            raise ValueError(
                f"expected (B, 3, H, W) pictures or (B, S, {self.encoder.output_size}) features, "
                f"got {tuple(images.shape)}"
            )
        if not self.encoder.freeze:
            raise ValueError("precomputed features need a frozen encoder (freeze=True)")
        return images

    def decode_step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        raise NotImplementedError

    def reorder_state(self, state: CaptionState, index: Tensor) -> CaptionState:
        """Rows ``index`` (N',) of the state, e.g. beams after a step (``zoo.decoding``)."""
        return state.index_select(index)

    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        """Teacher forcing: ``(B, 3, H, W)``, ``(B, T)`` inputs (``<s>`` first) -> ``(B, T, V)``."""
        state = self.encode(images)
        logits = []
        for t in range(captions_in.shape[1]):
            step_logits, state = self.decode_step(captions_in[:, t], state)  # (B, V)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def config(self) -> dict[str, Any]:
        """JSON-able hyperparameters that rebuild this model with :meth:`from_config`."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        config = {name: getattr(self, name) for name in names if name not in ("encoder", "decoder")}
        return {**config, "encoder": self.encoder.config(), "decoder": self.decoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CaptioningModel:
        """Rebuild a model from :meth:`config` (weights initialised afresh: load them after)."""
        config = dict(config)
        encoder, decoder = config.pop("encoder"), config.pop("decoder")
        return cls(
            encoder=build_encoder(encoder), decoder=lambda size: build_core(decoder, size), **config
        )


class ShowAndTell(CaptioningModel):
    """Show and Tell (Vinyals et al. 2015, section 3.1, eq. 10-12).

    x_{-1} = W_e CNN(I) is the decoder's first input (once, at t = -1, from a zero state; that
    step's output is discarded), then x_t = W_e S_t; p_{t+1} = softmax(W_o h_t). The CNN's grid is
    averaged into one vector (global pooling). :meth:`encode` runs step -1, so the state it
    returns has seen the picture.

    ``image_norm`` batch-normalises x_{-1}, putting the picture in the words' space at their scale
    (``nn.Embedding`` rows are N(0, 1) per dimension). Without it a linear W_e on pooled features
    (about 0.4 each, varying far less between pictures) gives an input of about 0.2 that hardly
    moves the LSTM, and Adam grows W_e's output at a rate proportional to its input, so the
    decoder learns to read the picture very slowly. im2txt (the authors' release) needs no norm:
    its W_e reads 2048 Inception features, giving x_{-1} of about unit size. At inference the norm
    is a fixed affine map, so x_{-1} stays linear in CNN(I).

    Args:
        vocab_size: words, including ``<pad> <unk> <s> </s>``.
        encoder: the CNN; None: ResNet-101, random weights (the paper used GoogLeNet).
        decoder: builds the (unidirectional) core from ``embedding_dim``; None: LSTM, 512 units.
        embedding_dim: size of the word and image embeddings (512 in the paper).
        dropout: on the embeddings and before the output layer (the paper used dropout).
        pad_id: padding id; its embedding is zero.
        image_norm: batch-normalise the image embedding (see above); False: im2txt's plain W_e.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: ImageEncoder | None = None,
        decoder: CoreFactory | None = None,
        embedding_dim: int = 512,
        dropout: float = 0.0,
        pad_id: int = 0,
        image_norm: bool = True,
    ) -> None:
        super().__init__(vocab_size, encoder, embedding_dim, dropout, pad_id)
        self.decoder = check_decoder((decoder or partial(LSTM, hidden_size=512))(embedding_dim))
        self.image_embedding = nn.Linear(self.encoder.output_size, embedding_dim)  # W_e on I
        self.image_norm = image_norm
        self.image_bn = nn.BatchNorm1d(embedding_dim) if image_norm else None
        self.head = nn.Linear(self.decoder.hidden_size, vocab_size)  # W_o

    def encode(self, images: Tensor) -> CaptionState:
        """Step t = -1: the image embedding enters the decoder from a zero state."""
        pooled = self.image_features(images).mean(dim=1)  # (B, F)
        x = self.drop(self._embed_image(pooled))[:, None]  # (B, 1, E)
        _, rnn = self.decoder(x)  # the output of step -1 predicts nothing
        return CaptionState(rnn=rnn)

    def _embed_image(self, pooled: Tensor) -> Tensor:
        """``(B, F)`` pooled features -> ``(B, E)`` x_{-1}."""
        x = self.image_embedding(pooled)
        if self.image_bn is None:
            return x
        bn = self.image_bn
        if bn.training and x.shape[0] == 1:  # one picture has no batch statistics: use running ones
            return nn.functional.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps
            )
        return bn(x)

    def decode_step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        """One step: ``(N,)`` previous words -> ``(N, V)`` logits of the next, new state."""
        x = self.drop(self.embedding(tokens))[:, None]  # (N, 1, E)
        output, rnn = self.decoder(x, state.rnn)  # (N, 1, H)
        return self.head(self.drop(output[:, 0])), state._replace(rnn=rnn)

    def forward(self, images: Tensor, captions_in: Tensor) -> Tensor:
        """As :meth:`CaptioningModel.forward`, the decoder run over all ``T`` words at once."""
        state = self.encode(images)
        output, _ = self.decoder(self.drop(self.embedding(captions_in)), state.rnn)  # (B, T, H)
        return self.head(self.drop(output))


class ShowAttendTell(CaptioningModel):
    """Show, Attend and Tell with soft attention (Xu et al. 2015, sections 3.1.2, 4.2).

    Annotations a_i (i = 1..L) are the CNN's grid. At step t:
    e_ti = f_att(a_i, h_{t-1}) (additive, as Bahdanau et al.), alpha_t = softmax(e_t) (eq. 4-5);
    z_t = beta_t sum_i alpha_ti a_i with the gating scalar beta_t = sigmoid(f_beta(h_{t-1}))
    (section 4.2.1); the LSTM reads [E y_{t-1}; z_t] (eq. 1-3); the deep output
    p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)) (eq. 7). h_0 and c_0 come from the mean
    annotation (section 3.1.2: "predicted by an average of the annotation vectors fed through two
    separate MLPs"; one layer each here, tanh for h).

    Args:
        vocab_size: words, including ``<pad> <unk> <s> </s>``.
        encoder: the CNN; None: ResNet-101, random weights (the paper used VGG's conv5_4).
        decoder: builds the (unidirectional) core from ``embedding_dim + encoder.output_size``;
            None: LSTM with 1800 units (the paper's COCO model), 512 here to keep it practical.
        embedding_dim: word embedding size m (512).
        dropout: on the embeddings and before L_o (the paper used dropout).
        pad_id: padding id; its embedding is zero.
        attention_size: hidden size of f_att.
        gate: use beta_t (section 4.2.1); False fixes beta_t = 1.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: ImageEncoder | None = None,
        decoder: CoreFactory | None = None,
        embedding_dim: int = 512,
        dropout: float = 0.0,
        pad_id: int = 0,
        attention_size: int = 512,
        gate: bool = True,
    ) -> None:
        super().__init__(vocab_size, encoder, embedding_dim, dropout, pad_id)
        feature_size = self.encoder.output_size  # D
        core = decoder or partial(LSTM, hidden_size=512)
        self.decoder = check_decoder(core(embedding_dim + feature_size))
        hidden_size = self.decoder.hidden_size
        self.init_state = Bridge(feature_size, self.decoder)  # f_init,h and f_init,c
        self.attention = BahdanauAttention(hidden_size, feature_size, attention_size)  # f_att
        self.gate_layer = nn.Linear(hidden_size, 1) if gate else None  # f_beta
        self.hidden_out = nn.Linear(hidden_size, embedding_dim)  # L_h
        self.context_out = nn.Linear(feature_size, embedding_dim)  # L_z
        self.head = nn.Linear(embedding_dim, vocab_size)  # L_o
        self.attention_size, self.gate = attention_size, gate

    def encode(self, images: Tensor) -> CaptionState:
        """Pictures -> annotations a ``(B, L, D)`` and the initial state from their mean."""
        memory = self.image_features(images)  # (B, L, D)
        return CaptionState(
            rnn=self.init_state(memory.mean(dim=1)),
            memory=memory,
            keys=self.attention.precompute(memory),  # U_a a_i, once per picture
            mask=torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device),
        )

    def decode_step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        """One step t: ``(N,)`` words y_{t-1} -> ``(N, V)`` logits of y_t, new state."""
        embedded = self.drop(self.embedding(tokens))  # (N, E): E y_{t-1}
        query = state_parts(state.rnn)[0][-1]  # (N, H): h_{t-1}, the top layer
        context, weights = self.attention(query, state.memory, state.mask, state.keys)  # (N, D)
        if self.gate_layer is not None:
            context = torch.sigmoid(self.gate_layer(query)) * context  # z_t = beta_t * phi
        x = torch.cat([embedded, context], dim=-1)[:, None]  # (N, 1, E + D)
        output, rnn = self.decoder(x, state.rnn)
        h = output[:, 0]  # (N, H): h_t
        deep = embedded + self.hidden_out(h) + self.context_out(context)  # eq. 7
        logits = self.head(self.drop(deep))  # (N, V)
        return logits, state._replace(rnn=rnn, attention_weights=weights)

    def forward_with_attention(self, images: Tensor, captions_in: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`forward`, also returning the ``(B, T, S)`` weights of every step."""
        state = self.encode(images)
        logits, weights = [], []
        for t in range(captions_in.shape[1]):
            step_logits, state = self.decode_step(captions_in[:, t], state)
            logits.append(step_logits)
            weights.append(state.attention_weights)
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)
