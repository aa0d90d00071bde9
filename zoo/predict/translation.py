"""Using a translation model: translate lines in length-sorted batches, n-best lists, and the
attention behind a translation (forced alignment)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from datamodules.pairs import pad_rows
from datamodules.tokenizers import TextCodec
from datamodules.vocab import BOS, EOS, UNK, Vocab
from zoo.classpath import resolve_class
from zoo.decoding import DecodeSettings, Hypotheses, search
from zoo.errors import UserError
from zoo.models.translation import TranslationModel
from zoo.plots import alignment_figure, save_figure
from zoo.predict.base import Predictor
from zoo.published import load_state

WINDOW_BATCHES = 50  # batches per sorting window: lengths are sorted inside, order kept across
ENCODE_CHUNK = 1000  # lines tokenised at a time


class Codec(Protocol):
    """What translating needs of the text side: a :class:`TextCodec` (or a data module)."""

    src_vocab: Vocab
    tgt_vocab: Vocab

    def encode_source(self, lines: list[str]) -> tuple[Tensor, Tensor]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...


@torch.no_grad()
def decode_batch(
    model: TranslationModel,
    src: Tensor,
    src_lengths: Tensor,
    settings: DecodeSettings | None = None,
    **decoding: Any,
) -> Hypotheses:
    """Translate a batch: beam search, or greedy search for a beam of 1.

    Args:
        model: in eval mode, on ``src``'s device.
        src: ``(B, S)`` source ids; ``src_lengths`` ``(B,)``, on any device.
        settings: the search (default :class:`DecodeSettings`), ``decoding`` overriding it.
    """
    settings = (settings or DecodeSettings()).override(**decoding)
    state = model.encode(src, src_lengths)
    bos = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
    max_len = settings.max_lengths(src_lengths)  # on the CPU: read without a device sync
    return search(
        model.decode_step, model.reorder_state, state, bos, EOS, max_len, settings,
        reorder_beams_fn=model.reorder_beams,
    )  # fmt: skip


def encode_lines(codec: Codec, lines: Sequence[str]) -> list[np.ndarray]:
    """Source rows (ids, then ``</s>``) of every line, as the model reads them.

    Raises:
        ValueError: a line is over the length limit, naming the line (1-based in ``lines``).
    """
    return encode_or_split(codec, lines, split=False)[0]


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_long(codec: Codec, line: str) -> list[str]:
    """A line too long for the model as pieces that each fit: its sentences (at ``. ! ? ; :``),
    then halves by words. A single word over the limit stays whole (and fails)."""
    try:
        codec.encode_source([line])
        return [line]
    except ValueError:
        pass
    parts = [part for part in _SENTENCE_END.split(line) if part.strip()]
    if len(parts) == 1:
        words = line.split()
        if len(words) < 2:
            return [line]
        parts = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
    return [piece for part in parts for piece in split_long(codec, part)]


def encode_or_split(
    codec: Codec,
    lines: Sequence[str],
    split: bool = True,
    on_split: Callable[[int, int], Any] | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Source rows, and for each the index of the line it belongs to: a line over the length
    limit becomes several rows (:func:`split_long`; ``on_split(line index, pieces)`` is told),
    or, without ``split``, a ValueError naming it (1-based)."""
    rows: list[np.ndarray] = []
    owners: list[int] = []
    for start in range(0, len(lines), ENCODE_CHUNK):
        chunk = list(lines[start : start + ENCODE_CHUNK])
        try:
            encoded = [(start + k, line) for k, line in enumerate(chunk)]
            src, lengths = codec.encode_source(chunk)
        except ValueError:  # find the line(s), and name them by their number in the input
            encoded = []
            for index, line in enumerate(chunk, start):
                try:
                    codec.encode_source([line])
                    encoded.append((index, line))
                except ValueError as err:
                    if not split:
                        message = f"line {index + 1}" + str(err).removeprefix("line 1")
                        raise ValueError(message) from None
                    pieces = split_long(codec, line)
                    if on_split is not None:
                        on_split(index, len(pieces))
                    encoded += [(index, piece) for piece in pieces]
            src, lengths = codec.encode_source([line for _, line in encoded])
        rows.extend(src[i, :n].numpy() for i, n in enumerate(lengths.tolist()))
        owners.extend(index for index, _ in encoded)
    return rows, owners


def length_batches(index: Sequence[int], lengths: Sequence[int], batch_size: int) -> Iterator:
    """Batches of ``index`` sorted by length within windows of ``WINDOW_BATCHES`` batches."""
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(index), window):
        part = sorted(index[start : start + window], key=lambda i: lengths[i])
        for first in range(0, len(part), batch_size):
            yield part[first : first + batch_size]


def search_lines(
    model: TranslationModel,
    codec: Codec,
    lines: Sequence[str],
    settings: DecodeSettings | None = None,
    *,
    batch_size: int = 32,
    progress: Callable[[int], Any] | None = None,
    split_too_long: bool = True,
    on_split: Callable[[int, int], Any] | None = None,
    on_unknown: Callable[[int], Any] | None = None,
    **decoding: Any,
) -> list[list[tuple[list[int], float]]]:
    """Up to ``n_best`` ``(target ids, score)`` pairs per line, best first; ``[]`` for an empty
    line. ``progress(n)`` is called after each batch of ``n`` sentences. A line over the length
    limit is translated in sentence-sized pieces whose best translations are joined (one
    hypothesis, scored by the pieces' mean), unless ``split_too_long`` is False.
    ``on_unknown(line index)`` is told of each line with source tokens outside the model's
    vocabulary (read as ``<unk>``), before any is translated.

    Raises:
        ValueError: a line over the length limit that cannot be split (or ``split_too_long`` is
            False), naming it.
    """
    settings = (settings or DecodeSettings()).override(**decoding)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    rows, owners = encode_or_split(codec, lines, split_too_long, on_split)
    if on_unknown is not None:
        for index in sorted({owner for row, owner in zip(rows, owners) if (row == UNK).any()}):
            on_unknown(index)
    found: list[list[tuple[list[int], float]]] = [[] for _ in rows]
    todo = [r for r, owner in enumerate(owners) if lines[owner].strip()]
    for batch in length_batches(todo, [len(r) for r in rows], batch_size):
        src, src_lengths = pad_rows([rows[r] for r in batch])
        hyps = decode_batch(model, src.to(device), src_lengths, settings)
        for r, tokens, scores in zip(batch, hyps.tokens, hyps.scores.tolist()):
            found[r] = list(zip(tokens, scores))
        if progress is not None:
            progress(len(batch))
    results: list[list[tuple[list[int], float]]] = [[] for _ in lines]
    pieces: dict[int, list[list[tuple[list[int], float]]]] = {}
    for r, owner in enumerate(owners):
        pieces.setdefault(owner, []).append(found[r])
    for owner, parts in pieces.items():
        if len(parts) == 1:
            results[owner] = parts[0]
        elif all(parts):  # a split line: the pieces' best, joined
            ids = [token for part in parts for token in part[0][0]]
            results[owner] = [(ids, sum(part[0][1] for part in parts) / len(parts))]
    return results


def translate_n_best(
    model: TranslationModel, codec: Codec, lines: Sequence[str], **kwargs: Any
) -> list[list[tuple[str, float]]]:
    """Up to ``n_best`` ``(translation, score)`` pairs per line, best first; ``[]`` for an empty
    line; ``kwargs`` as for :func:`search_lines`."""
    return [
        [(codec.detokenize(ids), score) for ids, score in hyps]
        for hyps in search_lines(model, codec, lines, **kwargs)
    ]


def translate(
    model: TranslationModel, codec: Codec, lines: Sequence[str], **kwargs: Any
) -> list[str]:
    """The best translation of each line (``""`` for an empty one); ``kwargs`` as for
    :func:`search_lines` (``beam_size``, ``n_best``, ``length_penalty``, ``batch_size``, ...)."""
    return [hyps[0][0] if hyps else "" for hyps in translate_n_best(model, codec, lines, **kwargs)]


@torch.no_grad()
def forced_alignment(
    model: TranslationModel, src: Tensor, src_lengths: Tensor, targets: Sequence[Sequence[int]]
) -> list[Tensor] | None:
    """The attention weights a model puts on the source while it reads ``targets`` (forced
    decoding, e.g. of its own beam-search output).

    Args:
        src: ``(B, S)`` source ids as the model reads them; ``src_lengths`` ``(B,)``.
        targets: ``B`` target id lists without BOS / EOS.

    Returns:
        One ``(len(target) + 1, src_length)`` float CPU tensor per sentence: row ``t`` is the
        distribution over source positions when the model predicts target token ``t`` (the last
        row predicts EOS). None for a model without attention (Seq2Seq).
    """
    width = max(len(t) for t in targets) + 1
    tgt_in = torch.full((len(targets), width), EOS, dtype=torch.long)
    for row, target in zip(tgt_in, targets):
        row[: len(target) + 1] = torch.tensor([BOS, *target], dtype=torch.long)
    tgt_in = tgt_in.to(src.device)
    state = model.encode(src, src_lengths)
    rows = []
    for t in range(width):
        _, state = model.decode_features(tgt_in[:, t], state)  # the weights only: no output layer
        if state.attention_weights is None:
            return None
        rows.append(state.attention_weights.float())  # (B, S)
    weights = torch.stack(rows, dim=1).cpu()  # (B, T, S)
    lengths = src_lengths.tolist()
    return [weights[i, : len(t) + 1, : lengths[i]] for i, t in enumerate(targets)]


def alignment_plot(model: TranslationModel, codec: Codec, src: Tensor, lengths: Tensor, targets):
    """One Bahdanau-style figure per sentence of a batch and the ``targets`` it was given (ids
    without BOS / EOS), or None for a model without attention."""
    weights = forced_alignment(model, src, lengths, targets)
    if weights is None:
        return None
    src_vocab, tgt_vocab = codec.src_vocab.tokens, codec.tgt_vocab.tokens
    figures = []
    for i, (w, target) in enumerate(zip(weights, targets)):
        source = [src_vocab[t] for t in src[i, : int(lengths[i])].tolist()]
        figures.append(alignment_figure(w, source, [tgt_vocab[t] for t in target] + ["</s>"]))
    return figures


class Translator(Predictor):
    """A :class:`~zoo.models.translation.TranslationModel`, its :class:`TextCodec` and the
    decoding settings of its recipe::

        translator = zoo.load("translation-rnnsearch-bible-v1")
        translator.translate(["In the beginning God created the heavens and the earth."])
    """

    task = "translation"
    extras = ("hyper_parameters", "data_state", "data_hparams")
    required = ("data_state",)

    def __init__(
        self,
        model: TranslationModel,
        codec: TextCodec,
        decoding: DecodeSettings | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, meta)
        self.codec = codec
        self.decoding = decoding or DecodeSettings()

    @classmethod
    def build(cls, config: Any, state: dict[str, Tensor], extras: dict[str, Any]) -> Translator:
        hparams = extras["hyper_parameters"]
        model_class = resolve_class(hparams.get("model_class"), TranslationModel, "zoo.models.")
        model = model_class.from_config(config)
        load_state(model, state)
        codec = TextCodec.from_state(extras["data_state"], extras.get("data_hparams") or {})
        for side, found, size in (
            ("source", len(codec.src_vocab), model.src_vocab_size),
            ("target", len(codec.tgt_vocab), model.tgt_vocab_size),
        ):
            if found != size:
                raise ValueError(f"the {side} vocabulary has {found} entries, the model {size}")
        return cls(model, codec, DecodeSettings.from_dict(hparams.get("decoding")))

    def translate(self, lines: Sequence[str], **decoding: Any) -> list[str]:
        """The best translation of each line; ``decoding`` overrides the recipe's settings
        (``beam_size``, ``length_penalty``, ...) and may set ``batch_size``."""
        return translate(self.model, self.codec, lines, settings=self.decoding, **decoding)

    def translate_n_best(self, lines: Sequence[str], **decoding: Any) -> list:
        """Up to ``n_best`` ``(translation, score)`` pairs per line, best first."""
        return translate_n_best(self.model, self.codec, lines, settings=self.decoding, **decoding)

    def search(self, lines: Sequence[str], **decoding: Any) -> list:
        """Up to ``n_best`` ``(target ids, score)`` pairs per line (:func:`search_lines`)."""
        return search_lines(self.model, self.codec, lines, settings=self.decoding, **decoding)

    def plot_attention(self, line: str, target: Sequence[int], path: Any) -> None:
        """Draw the attention matrix of the model reading ``target`` (ids, e.g. its translation
        of ``line``) to ``path``: source tokens on x, target tokens on y."""
        (row,) = encode_lines(self.codec, [line])
        src, lengths = pad_rows([row])
        figures = alignment_plot(self.model, self.codec, src.to(self.device), lengths, [target])
        if figures is None:
            raise UserError(f"{type(self.model).__name__} has no attention to plot")
        save_figure(figures[0], path)
