"""Tokenisers for parallel text: Moses words (sacremoses) and SentencePiece pieces, and the
:class:`TextCodec` that turns sentences into a translation model's ids and its ids back into text,
exactly as in training, with no corpus and no DataModule (what a predictor needs)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from datamodules.pairs import pad_rows, source_row
from datamodules.vocab import BOS, EOS, PAD, SPECIALS, Vocab
from zoo.errors import UserError
from zoo.files import write_bytes

SOURCE_LIMIT = 3  # encode_source refuses lines over SOURCE_LIMIT * max_len tokens
Tokenizer = Literal["moses", "sentencepiece"]

_MEMORY: dict[str, bytes] = {}  # per-process cache: SentencePiece models


def _digest(*parts: str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return sha.hexdigest()[:24]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{package} is not installed; pip install {package}") from None


def _file_cached(path: Path | None, compute: Callable[[], bytes]) -> bytes:
    """``compute()``, stored at ``path`` (written atomically) and read from there next time."""
    if path is not None and path.is_file():
        return path.read_bytes()
    data = compute()
    if path is not None:
        write_bytes(path, data)  # ranks racing to write the same entry cannot corrupt it
    return data


@cache
def _moses_tokenizer(lang: str) -> Any:
    _version("sacremoses")
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang)


@cache
def _moses_detokenizer(lang: str) -> Any:
    _version("sacremoses")
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang)


def train_sentencepiece(lines: list[str], vocab_size: int, cache_dir: str | None = None) -> bytes:
    """Serialized unigram SentencePiece model trained on ``lines``, with our special ids.

    Deterministic: every sentence is used and training runs on one thread (the model differs
    with the thread count). Cached per process and, if given, in ``cache_dir`` (written
    atomically) under a hash of the lines, the vocabulary size and the sentencepiece version.
    """
    key = "spm-" + _digest(str(vocab_size), _version("sentencepiece"), "\n".join(lines))
    if key not in _MEMORY:
        import sentencepiece as spm

        def compute() -> bytes:
            model = io.BytesIO()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus yields fewer pieces instead of failing
                character_coverage=1.0,
                input_sentence_size=0,
                num_threads=1,
                minloglevel=2,
                **{f"{name}_id": i for i, name in enumerate(("pad", "unk", "bos", "eos"))},
                **{f"{name}_piece": s for name, s in zip(("pad", "unk", "bos", "eos"), SPECIALS)},
            )
            return model.getvalue()

        path = Path(cache_dir) / f"{key}.model" if cache_dir else None
        _MEMORY[key] = _file_cached(path, compute)
    return _MEMORY[key]


def _as_bytes(model: Tensor | Sequence[int] | bytes) -> bytes:
    """A serialized model stored as a uint8 tensor or a list of ints -> bytes."""
    if isinstance(model, Tensor):
        return model.to(torch.uint8).numpy().tobytes()
    return bytes(model)


@lru_cache(maxsize=8)
def _sp_processor(model: bytes) -> Any:
    _version("sentencepiece")
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model)


def sentencepiece_vocab(model: bytes) -> Vocab:
    """The pieces of a serialized SentencePiece model, in id order."""
    processor = _sp_processor(model)
    return Vocab([processor.id_to_piece(i) for i in range(processor.get_piece_size())])


@dataclass
class TextCodec:
    """Sentences <-> ids, laid out as a translation model reads and writes them.

    Attributes:
        tokenizer: ``"moses"`` (words; ``src_vocab`` / ``tgt_vocab`` are the shortlists) or
            ``"sentencepiece"`` (``sp_models`` hold the serialized models, side -> bytes).
        src_lang, tgt_lang: Moses rules.
        lowercase: lowercase before tokenising.
        max_len: the training length limit; :meth:`encode_source` refuses lines over
            ``SOURCE_LIMIT * max_len`` tokens.
        reverse_source: reverse the source tokens (Sutskever et al. 2014); ``</s>`` stays last.
    """

    tokenizer: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_lang: str = "en"
    tgt_lang: str = "fr"
    lowercase: bool = False
    max_len: int = 50
    reverse_source: bool = False
    sp_models: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_sentencepiece(cls, models: Mapping[str, bytes], **settings: Any) -> TextCodec:
        """A codec over SentencePiece models (``{"src": bytes, "tgt": bytes}``)."""
        vocabs = sentencepiece_vocab(models["src"]), sentencepiece_vocab(models["tgt"])
        return cls("sentencepiece", *vocabs, sp_models=dict(models), **settings)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], settings: Mapping[str, Any]) -> TextCodec:
        """The codec a checkpoint or published file stores: its data module's ``state_dict`` and
        settings (``hparams``; keys other than the codec's are ignored).

        Raises:
            KeyError, TypeError, ValueError: a state that does not hold vocabularies or models.
        """
        names = ("src_lang", "tgt_lang", "lowercase", "max_len", "reverse_source")
        kwargs = {name: settings[name] for name in names if name in settings}
        tokenizer = state.get("tokenizer", settings.get("tokenizer", "moses"))
        if tokenizer == "sentencepiece":
            models = {side: _as_bytes(state[f"{side}_sp_model"]) for side in ("src", "tgt")}
            return cls.from_sentencepiece(models, **kwargs)
        if tokenizer != "moses":
            raise ValueError(f"unknown tokenizer {tokenizer!r}")
        vocabs = Vocab.from_list(state["src_vocab"]), Vocab.from_list(state["tgt_vocab"])
        return cls("moses", *vocabs, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Vocabularies (token lists) and SentencePiece models (uint8 tensors), in types that
        ``torch.load(weights_only=True)`` accepts."""
        state: dict[str, Any] = {
            "tokenizer": self.tokenizer,
            "src_vocab": self.src_vocab.to_list(),
            "tgt_vocab": self.tgt_vocab.to_list(),
        }
        for side, model in self.sp_models.items():
            state[f"{side}_sp_model"] = torch.frombuffer(bytearray(model), dtype=torch.uint8)
        return state

    def normalize(self, lines: list[str]) -> list[str]:
        return [line.lower() for line in lines] if self.lowercase else lines

    def encode(self, lines: list[str], side: str) -> list:
        """Lines of one side (``"src"`` or ``"tgt"``) -> ids, without specials."""
        if self.tokenizer == "sentencepiece":
            return _sp_processor(self.sp_models[side]).encode(self.normalize(lines))
        vocab, lang = (
            (self.src_vocab, self.src_lang) if side == "src" else (self.tgt_vocab, self.tgt_lang)
        )
        words = moses_words(self.normalize(lines), lang)
        return [vocab.encode(tokens.split()) for tokens in words]

    def encode_source(self, lines: list[str]) -> tuple[Tensor, Tensor]:
        """Source sentences -> ``(B, S)`` padded ids and ``(B,)`` lengths, laid out as in training.

        Unknown words become ``<unk>``; an empty line becomes just ``</s>``.

        Raises:
            ValueError: a line has more than ``3 * max_len`` tokens (naming the line, 1-based).
        """
        limit = SOURCE_LIMIT * self.max_len
        rows = self.encode(lines, "src")
        for number, ids in enumerate(rows, 1):
            if len(ids) > limit:
                raise ValueError(
                    f"line {number} has {len(ids)} tokens, more than {limit} "
                    f"({SOURCE_LIMIT} x max_len); split it into shorter sentences"
                )
        return pad_rows([source_row(ids, self.reverse_source) for ids in rows])

    def detokenize(self, ids: Sequence[int] | Tensor) -> str:
        """Target ids (e.g. a decoder's output) -> text, stopping at ``</s>``; for scoring.

        Moses' French rules put a space before ``: ; ! ?`` (French typography) and unbalanced
        quotes may come out spaced differently from the source text; BLEU's ``13a``
        tokenisation and chrF do not see the difference.
        """
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.tokenizer == "sentencepiece":
            ids = ids[: ids.index(EOS)] if EOS in ids else ids
            pieces = [i for i in ids if i not in (PAD, BOS)]
            return _sp_processor(self.sp_models["tgt"]).decode(pieces)
        return _moses_detokenizer(self.tgt_lang).detokenize(self.tgt_vocab.decode(ids))


def moses_words(lines: list[str], lang: str) -> list[str]:
    """Moses tokens of each line, space-joined (tokens never contain whitespace)."""
    tokenizer = _moses_tokenizer(lang)
    return [" ".join(tokenizer.tokenize(line, escape=False)) for line in lines]
