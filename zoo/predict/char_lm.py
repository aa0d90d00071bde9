"""Using a character language model: sample text from it, score text with it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.char_text import StreamLoader
from datamodules.vocab import CharVocab
from zoo.cores import State
from zoo.decoding import sample
from zoo.models.char_rnn import CharRNN
from zoo.predict.base import Predictor
from zoo.published import load_state

LN2 = math.log(2.0)


@torch.no_grad()
def generate_text(
    model: CharRNN,
    vocab,
    prime: str = "\n",
    length: int = 500,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int | None = None,
) -> str:
    """Sample ``length`` characters after ``prime`` (which is returned first, as char-rnn does).

    Raises:
        ValueError: the prime is empty or has characters outside the vocabulary.
    """
    if not prime:
        raise ValueError("prime text is empty; give at least one character, e.g. a newline")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = vocab.encode(prime, strict=True).to(device)[None]  # (1, P)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    state = None
    if ids.shape[1] > 1:  # warm the state on all but the last character
        _, state = model(ids[:, :-1])

    def step(tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        logits, state = model.step(tokens, state)
        return logits.index_fill(-1, unknown, float("-inf")), state  # never emit <unk>

    unknown = torch.tensor([0], device=device)
    tokens, _ = sample(
        step,
        state,
        ids[:, -1],
        length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        generator=generator,
    )
    model.train(was_training)
    return prime + vocab.decode(tokens[0])


@torch.no_grad()
def evaluate(model: CharRNN, loader: Iterable, device: str | torch.device | None = None) -> dict:
    """Mean NLL per character over a split with the state carried, as the task's eval does.

    ``loader`` yields ``(x, y)`` windows, e.g. an evaluation
    :class:`~datamodules.char_text.StreamLoader`; the numbers depend on its stream layout (eval
    batch size), so report them with it.

    Returns:
        ``{"loss": nats per character, "ppl": exp(loss), "bpc": loss / ln 2}``.
    """
    device = device or next(model.parameters()).device
    model = model.to(device).eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = None
    for x, y in loader:
        logits, state = model(x.to(device), state)
        total += F.cross_entropy(
            logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum"
        )
        count += y.numel()
    nll = (total / count).item()  # one host sync, at the end
    return {"loss": nll, "ppl": math.exp(nll), "bpc": nll / LN2}


class CharLM(Predictor):
    """A :class:`~zoo.models.CharRNN` and its vocabulary::

    lm = zoo.load("char_lm-lstm-shakespeare-v1")
    print(lm.generate("ROMEO:", 200, temperature=0.8))
    lm.evaluate(open("hamlet.txt").read())["bpc"]
    """

    task = "char_lm"
    extras = ("vocab",)
    required = ("vocab",)

    def __init__(self, model: CharRNN, vocab: CharVocab, meta: dict[str, Any] | None = None):
        super().__init__(model, meta)
        self.vocab = vocab

    @classmethod
    def build(cls, config: Any, state: dict[str, Tensor], extras: dict[str, Any]) -> CharLM:
        model = CharRNN.from_config(config)
        vocab = CharVocab(extras["vocab"])
        if len(vocab) != model.vocab_size:
            raise ValueError(f"vocab has {len(vocab)} characters, vocab_size is {model.vocab_size}")
        load_state(model, state)
        return cls(model, vocab)

    def generate(self, prime: str = "\n", length: int = 500, **sampling: Any) -> str:
        """``prime`` and ``length`` characters sampled after it; ``sampling`` as for
        :func:`generate_text` (``temperature``, ``top_k``, ``top_p``, ``greedy``, ``seed``)."""
        return generate_text(self.model, self.vocab, prime, length, **sampling)

    def evaluate(self, text: str, batch_size: int = 1, seq_len: int = 256) -> dict[str, float]:
        """Loss, perplexity and bits per character of ``text`` (the state carried through it in
        ``batch_size`` streams; characters the model never saw count as its unknown symbol).

        Raises:
            ValueError: text too short for the streams.
        """
        ids = self.vocab.encode(text)
        loader = StreamLoader(ids, batch_size, seq_len, drop_last=False)
        return evaluate(self.model, loader)
