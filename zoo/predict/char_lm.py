"""Using a character language model: sample text from it, score text with it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
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


#: The most characters one call may generate (a typo of a few zeros would run for days).
MAX_LENGTH = 1_000_000


def check_sampling(
    length: int, temperature: float, top_k: int | None, top_p: float | None, greedy: bool
) -> None:
    """The sampling settings, checked where they enter.

    Raises:
        ValueError: one line naming the setting that is out of range.
    """
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be between 0 and {MAX_LENGTH:,}, got {length:,}")
    if not greedy and not (math.isfinite(temperature) and 1e-3 <= temperature <= 1e3):
        raise ValueError(
            f"temperature must be between 0.001 and 1000 (or sample greedily), got {temperature}"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def stream_text(
    model: CharRNN,
    vocab: CharVocab,
    prime: str = "\n",
    length: int = 500,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int | None = None,
    chunk: int = 64,
) -> Iterator[str]:
    """``prime``, then ``length`` sampled characters in pieces of ``chunk`` as they are made
    (the text is the same whatever the chunk: the state and the random stream carry on).

    Raises:
        ValueError: an empty prime, characters outside the vocabulary, or settings out of range.
    """
    if not prime:
        raise ValueError("prime text is empty; give at least one character, e.g. a newline")
    check_sampling(length, temperature, top_k, top_p, greedy)
    device = next(model.parameters()).device
    ids = vocab.encode(prime, strict=True).to(device)[None]  # (1, P)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    unknown = torch.tensor([0], device=device)

    def step(tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        logits, state = model.step(tokens, state)
        return logits.index_fill(-1, unknown, float("-inf")), state  # never emit <unk>

    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "greedy": greedy}
    was_training = model.training
    model.eval()
    try:
        state = model(ids[:, :-1])[1] if ids.shape[1] > 1 else None  # all but the last char
        yield prime
        tokens, done, decode = ids[:, -1], 0, vocab.stream_decoder()
        while done < length:
            n = min(chunk, length - done)
            out, state = sample(step, state, tokens, n, generator=generator, **settings)
            tokens, done = out[:, -1], done + n
            yield decode(out[0], final=done >= length)  # one host sync per chunk
    finally:
        model.train(was_training)


def generate_text(
    model: CharRNN, vocab: CharVocab, prime: str = "\n", length: int = 500, **kw
) -> str:
    """Sample ``length`` characters after ``prime`` (which is returned first, as char-rnn does);
    ``kw`` as for :func:`stream_text` (``temperature``, ``top_k``, ``top_p``, ``greedy``,
    ``seed``).

    Raises:
        ValueError: the prime is empty or has characters outside the vocabulary.
    """
    return "".join(stream_text(model, vocab, prime, length, chunk=max(length, 1), **kw))


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
    extras = ("vocab", "vocab_unit")
    required = ("vocab",)

    def __init__(self, model: CharRNN, vocab: CharVocab, meta: dict[str, Any] | None = None):
        super().__init__(model, meta)
        self.vocab = vocab

    @classmethod
    def build(cls, config: Any, state: dict[str, Tensor], extras: dict[str, Any]) -> CharLM:
        model = CharRNN.from_config(config)
        vocab = CharVocab(extras["vocab"], extras.get("vocab_unit") or "char")
        if len(vocab) != model.vocab_size:
            raise ValueError(f"vocab has {len(vocab)} characters, vocab_size is {model.vocab_size}")
        load_state(model, state)
        return cls(model, vocab)

    def generate(self, prime: str = "\n", length: int = 500, **sampling: Any) -> str:
        """``prime`` and ``length`` characters sampled after it; ``sampling`` as for
        :func:`generate_text` (``temperature``, ``top_k``, ``top_p``, ``greedy``, ``seed``)."""
        return generate_text(self.model, self.vocab, prime, length, **sampling)

    def stream(self, prime: str = "\n", length: int = 500, **sampling: Any) -> Iterator[str]:
        """:meth:`generate`'s text in pieces, as it is made (:func:`stream_text`)."""
        return stream_text(self.model, self.vocab, prime, length, **sampling)

    def evaluate(self, text: str, batch_size: int = 1, seq_len: int = 256) -> dict[str, float]:
        """Loss, perplexity and bits per character of ``text`` (the state carried through it in
        ``batch_size`` streams; characters the model never saw count as its unknown symbol).

        Raises:
            ValueError: text too short for the streams.
        """
        ids = self.vocab.encode(text)
        loader = StreamLoader(ids, batch_size, seq_len, drop_last=False)
        return evaluate(self.model, loader)
