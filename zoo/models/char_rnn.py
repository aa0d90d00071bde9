"""Character-level language model (char-rnn); sampling from it is :mod:`zoo.predict.char_lm`."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from zoo.cores import LSTM, CoreFactory, State, build_core
from zoo.layers import Dropout, SequenceDropout


class CharRNN(nn.Module):
    """Character-level language model (Karpathy's char-rnn): embed -> recurrent core -> softmax.

    p(x_{t+1} | x_{<=t}) = softmax(W_hy h_t + b_y), with h_t from the core.

    Args:
        vocab_size: number of characters.
        core: builds the recurrent core given its input size (the embedding size), e.g.
            ``functools.partial(zoo.cores.GRU, hidden_size=512, num_layers=3)``.
        embedding_dim: size of the character embeddings (char-rnn used one-hot inputs; a learned
            embedding is the same thing multiplied by a matrix).
        dropout: on the embeddings and on the core's output (Zaremba et al. 2014).
        dropout_mask: ``"element"``, a new mask for every element (``nn.Dropout``); or
            ``"sequence"``, one mask per sequence and feature, the same at every time step of a
            window (Gal & Ghahramani 2016; AWD-LSTM's locked dropout). Its mask is T times
            smaller to draw; the element masks are :class:`zoo.layers.Dropout`'s, which draws a
            quarter of ``nn.Dropout``'s random numbers on the CPU.
        tie_weights: share the embedding matrix with the output layer (Press & Wolf 2017);
            needs ``core.output_size == embedding_dim``.
    """

    def __init__(
        self,
        vocab_size: int,
        core: CoreFactory = LSTM,
        embedding_dim: int = 64,
        dropout: float = 0.0,
        tie_weights: bool = False,
        dropout_mask: Literal["element", "sequence"] = "element",
    ) -> None:
        super().__init__()
        if dropout_mask not in ("element", "sequence"):
            raise ValueError(f"dropout_mask is {dropout_mask!r}: use 'element' or 'sequence'")
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.core = core(embedding_dim)
        if self.core.bidirectional:
            raise ValueError("a language model reads left to right: use bidirectional: false")
        self.drop = Dropout(dropout) if dropout_mask == "element" else SequenceDropout(dropout)
        self.head = nn.Linear(self.core.output_size, vocab_size)
        if tie_weights:
            if self.core.output_size != embedding_dim:
                raise ValueError(
                    f"tie_weights needs the core's output size ({self.core.output_size}) to equal "
                    f"embedding_dim ({embedding_dim})"
                )
            self.head.weight = self.embedding.weight
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.tie_weights = tie_weights
        self.dropout_mask = dropout_mask

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """tokens: (B, T) ids -> logits (B, T, V) and the final state."""
        x = self.drop(self.embedding(tokens))  # (B, T, E)
        output, state = self.core(x, state)  # (B, T, H)
        return self.head(self.drop(output)), state

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One step for generation: tokens (B,) -> logits (B, V)."""
        logits, state = self(tokens[:, None], state)
        return logits[:, 0], state

    def config(self) -> dict[str, Any]:
        """JSON-able hyperparameters that rebuild this model with :meth:`from_config`."""
        return {
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "dropout": self.dropout,
            "tie_weights": self.tie_weights,
            "dropout_mask": self.dropout_mask,
            "core": self.core.config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CharRNN:
        config = dict(config)
        core_config = config.pop("core")
        return cls(core=lambda size: build_core(core_config, size), **config)
