"""``rnn-zoo translate``: translate text with a trained translation checkpoint.

::

    rnn-zoo translate --checkpoint runs/translation/demo-bible/checkpoints/last.ckpt \\
        < input.en > output.fr

One output line per input line, in order. With ``--n-best K`` every input line gives ``K`` lines
``translation<TAB>score`` (best first; the score is the length-normalised log-probability of
:mod:`zoo.decoding`; a sentence with fewer than ``K`` possible hypotheses is padded with empty
ones scored ``-inf``). An empty input line gives an empty translation (score 0). Lines are
batched by length within windows, so similar lengths share a batch; the order is restored.

From Python::

    model, data, defaults = load_translator("last.ckpt")
    translate(model, data, ["In the beginning God created the heavens and the earth."])
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from datamodules.parallel_text import BOS, EOS, ParallelTextDataModule, pad_rows
from zoo.checkpoint import read_checkpoint, submodule_state
from zoo.decoding import Hypotheses, beam_search, greedy_search
from zoo.errors import CheckpointError, UserError
from zoo.models.translation import TranslationModel

WINDOW_BATCHES = 50  # batches per sorting window: lengths are sorted inside, order kept across
ENCODE_CHUNK = 1000  # lines tokenised at a time


# ------------------------------------------------------------------------------ decoding
def max_lengths(src_lengths: Tensor, a: float, b: int) -> Tensor:
    """``(B,)`` most target tokens per sentence, ``ceil(a * n) + b`` for ``n`` source tokens
    (``src_lengths`` counts the source's ``</s>``, which is not a token of the sentence)."""
    tokens = (src_lengths.cpu() - 1).clamp(min=0).double()
    return torch.ceil(a * tokens).long() + b


@torch.no_grad()
def decode_batch(
    model: TranslationModel,
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 5,
    n_best: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    max_len_a: float = 1.5,
    max_len_b: int = 5,
) -> Hypotheses:
    """Translate a batch: beam search, or greedy search when ``beam_size`` is 1.

    Args:
        model: in eval mode, on ``src``'s device.
        src: ``(B, S)`` source ids; ``src_lengths`` ``(B,)``, on any device.
    """
    state = model.encode(src, src_lengths)
    bos = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
    # The search takes its device from bos; a CPU max_len is read without a device sync.
    max_len = max_lengths(src_lengths, max_len_a, max_len_b)
    if beam_size == 1 and n_best == 1:
        return greedy_search(
            model.decode_step, state, bos, EOS, max_len, length_penalty=length_penalty
        )
    return beam_search(
        model.decode_step, model.reorder_state, state, bos, EOS, max_len,
        beam_size=beam_size, length_penalty=length_penalty, n_best=n_best,
        reorder_beams_fn=model.reorder_beams, early_stopping=early_stopping,
    )  # fmt: skip


# ------------------------------------------------------------------------------- loading
def load_translator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[TranslationModel, ParallelTextDataModule, dict[str, Any]]:
    """The model (eval mode, on ``device``), a data module that can encode sources and detokenise
    targets (no corpus needed), and the decoding settings the model was trained with.

    Raises:
        CheckpointError: not a translation checkpoint, or one without vocabularies.
    """
    checkpoint = read_checkpoint(path, "translation")
    if "data_state" not in checkpoint:
        raise CheckpointError(f"{path}: has no vocabularies; was it saved before training began?")
    try:
        model, data, decoding = build_translator(
            checkpoint["hyper_parameters"],
            checkpoint["data_state"],
            checkpoint.get("data_hparams", {}),
            load=lambda model: model.load_state_dict(submodule_state(checkpoint)),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: config does not match the weights ({err})") from None
    return model.to(device).eval(), data, decoding


def build_translator(
    hparams: dict[str, Any],
    data_state: dict[str, Any],
    data_hparams: dict[str, Any],
    load: Callable[[TranslationModel], Any],
) -> tuple[TranslationModel, ParallelTextDataModule, dict[str, Any]]:
    """Model, data module and decoding settings from what a checkpoint stores (also what a
    published file stores, see :mod:`zoo.hub_translation`); ``load`` fills in the weights.

    Raises:
        KeyError, TypeError, ValueError, RuntimeError: the config does not match the weights.
    """
    model = _model_class(hparams.get("model_class")).from_config(hparams["model"])
    load(model)
    data = ParallelTextDataModule(**_data_settings(data_hparams))
    data.load_state_dict(data_state)
    for side, found, size in (
        ("source", data.num_src_tokens, model.src_vocab_size),
        ("target", data.num_tgt_tokens, model.tgt_vocab_size),
    ):
        if found != size:
            raise ValueError(f"the {side} vocabulary has {found} entries, the model {size}")
    return model, data, dict(hparams.get("decoding", {}))


def _data_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """The saved data settings that :class:`ParallelTextDataModule` takes (tokeniser, languages,
    lowercasing, ``max_len``, ``reverse_source``, ...)."""
    import inspect

    names = inspect.signature(ParallelTextDataModule.__init__).parameters
    return {k: v for k, v in hparams.items() if k in names and k != "self"}


def _model_class(class_path: object) -> type[TranslationModel]:
    """The model class a checkpoint names; only classes under ``zoo.models`` are imported."""
    import importlib

    module, _, name = str(class_path).rpartition(".")
    if not module.startswith("zoo.models"):
        raise ValueError(f"unknown model class {class_path!r}")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, TranslationModel)):
        raise ValueError(f"{class_path!r} is not a translation model")
    return cls


# ----------------------------------------------------------------------------- translating
def encode_lines(data: ParallelTextDataModule, lines: Sequence[str]) -> list[np.ndarray]:
    """Source rows (ids, then ``</s>``) of every line, as the model reads them.

    Raises:
        ValueError: a line is over the length limit, naming the line (1-based in ``lines``).
    """
    rows: list[np.ndarray] = []
    for start in range(0, len(lines), ENCODE_CHUNK):
        chunk = list(lines[start : start + ENCODE_CHUNK])
        try:
            src, lengths = data.encode_source(chunk)
        except ValueError:  # find the line, and name it by its number in the whole input
            for offset, line in enumerate(chunk, start + 1):
                try:
                    data.encode_source([line])
                except ValueError as err:
                    raise ValueError(f"line {offset}" + str(err).removeprefix("line 1")) from None
            raise
        rows.extend(src[i, :n].numpy() for i, n in enumerate(lengths.tolist()))
    return rows


def length_batches(index: Sequence[int], lengths: Sequence[int], batch_size: int) -> Iterator:
    """Batches of ``index`` sorted by length within windows of ``WINDOW_BATCHES`` batches."""
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(index), window):
        part = sorted(index[start : start + window], key=lambda i: lengths[i])
        for first in range(0, len(part), batch_size):
            yield part[first : first + batch_size]


def search(
    model: TranslationModel,
    data: ParallelTextDataModule,
    lines: Sequence[str],
    *,
    beam_size: int = 5,
    n_best: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    max_len_a: float = 1.5,
    max_len_b: int = 5,
    batch_size: int = 32,
    progress: Callable[[int], Any] | None = None,
) -> list[list[tuple[list[int], float]]]:
    """Up to ``n_best`` ``(target ids, score)`` pairs per line, best first; ``[]`` for an empty
    line. ``progress(n)`` is called after each batch of ``n`` sentences.

    Raises:
        ValueError: a line is over the length limit (see :func:`encode_lines`).
    """
    device = next(model.parameters()).device
    rows = encode_lines(data, lines)
    results: list[list[tuple[list[int], float]]] = [[] for _ in lines]
    todo = [i for i, line in enumerate(lines) if line.strip()]
    for batch in length_batches(todo, [len(r) for r in rows], batch_size):
        src, src_lengths = pad_rows([rows[i] for i in batch])
        hyps = decode_batch(
            model, src.to(device), src_lengths, beam_size=beam_size, n_best=n_best,
            length_penalty=length_penalty, early_stopping=early_stopping,
            max_len_a=max_len_a, max_len_b=max_len_b,
        )  # fmt: skip
        for i, tokens, scores in zip(batch, hyps.tokens, hyps.scores.tolist()):
            results[i] = list(zip(tokens, scores))
        if progress is not None:
            progress(len(batch))
    return results


def translate_n_best(
    model: TranslationModel, data: ParallelTextDataModule, lines: Sequence[str], **kwargs: Any
) -> list[list[tuple[str, float]]]:
    """Up to ``n_best`` ``(translation, score)`` pairs per line, best first; ``[]`` for an empty
    line; ``kwargs`` as for :func:`search`."""
    return [
        [(data.detokenize(ids), score) for ids, score in hyps]
        for hyps in search(model, data, lines, **kwargs)
    ]


def translate(
    model: TranslationModel, data: ParallelTextDataModule, lines: Sequence[str], **kwargs: Any
) -> list[str]:
    """The best translation of each line (``""`` for an empty one); ``kwargs`` as for
    :func:`search` (``beam_size``, ``n_best``, ``length_penalty``, ``batch_size``, ...)."""
    return [hyps[0][0] if hyps else "" for hyps in translate_n_best(model, data, lines, **kwargs)]


def plot_attention(
    model: TranslationModel,
    data: ParallelTextDataModule,
    line: str,
    target: Sequence[int],
    path: str | Path,
) -> None:
    """Draw the attention matrix of the model reading ``target`` (ids, e.g. its translation of
    ``line``) to ``path``: source tokens on x, target tokens on y."""
    from zoo.alignment import alignment_figure, forced_alignment, save_figure

    device = next(model.parameters()).device
    (row,) = encode_lines(data, [line])
    src, src_lengths = pad_rows([row])
    weights = forced_alignment(model, src.to(device), src_lengths, [list(target)], BOS, EOS)
    if weights is None:
        raise UserError(f"{type(model).__name__} has no attention to plot")
    vocab_src, vocab_tgt = data.src_vocab.tokens, data.tgt_vocab.tokens
    fig = alignment_figure(
        weights[0], [vocab_src[i] for i in row], [vocab_tgt[i] for i in target] + ["</s>"]
    )
    save_figure(fig, path)


# ------------------------------------------------------------------------------------ CLI
def read_input(stream: BinaryIO) -> list[str]:
    """UTF-8 lines of ``stream`` without their line ends.

    Raises:
        UserError: a line that is not UTF-8, naming it.
    """
    lines = []
    for number, raw in enumerate(stream.read().split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as err:
            raise UserError(
                f"<stdin>: line {number} is not UTF-8 (byte 0x{raw[err.start]:02x}); "
                "convert the input, e.g. with iconv -t UTF-8"
            ) from None
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start another
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo translate",
        description="Translate stdin to stdout, one line per line, with a translation checkpoint.",
        epilog="With --n-best K every input line gives K lines 'translation<TAB>score', best "
        "first (score: length-normalised log-probability). Defaults for the search come from "
        "the checkpoint's training recipe.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a translation training checkpoint (.ckpt)")
    source.add_argument("--pretrained", help="a published model (see: rnn-zoo pretrained list)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy search)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    parser.add_argument("--n-best", type=int, default=1, help="hypotheses per line (<= beam)")
    parser.add_argument("--length-penalty", type=float, default=None, help="score / len ** A")
    parser.add_argument("--max-len-a", type=float, default=None, help="max len = ceil(a * n) + b")
    parser.add_argument("--max-len-b", type=int, default=None)
    parser.add_argument(
        "--exhaustive", action="store_true",
        help="search each sentence until all its beams end, not just its best (slower)",
    )  # fmt: skip
    parser.add_argument(
        "--plot-attention", type=Path, default=None, metavar="OUT.png",
        help="draw the attention matrix of the first non-empty input line",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _settings(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    def pick(value: Any, key: str, fallback: Any) -> Any:
        return value if value is not None else defaults.get(key, fallback)

    settings = {
        "beam_size": pick(args.beam, "beam_size", 5),
        "n_best": args.n_best,
        "length_penalty": pick(args.length_penalty, "length_penalty", 1.0),
        "early_stopping": not args.exhaustive and defaults.get("early_stopping", True),
        "max_len_a": pick(args.max_len_a, "max_len_a", 1.5),
        "max_len_b": pick(args.max_len_b, "max_len_b", 5),
        "batch_size": args.batch_size,
    }
    if settings["beam_size"] < 1 or settings["batch_size"] < 1:
        raise UserError("--beam and --batch-size must be at least 1")
    if not 1 <= args.n_best <= settings["beam_size"]:
        raise UserError(f"--n-best must be between 1 and the beam size ({settings['beam_size']})")
    return settings


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available; use --device cpu")
    return device


def _format(hyps: list[tuple[str, float]], n_best: int) -> list[str]:
    def clean(text: str) -> str:  # one line per hypothesis, whatever the detokeniser did
        return " ".join(text.replace("\t", " ").splitlines())

    if n_best == 1:
        return [clean(hyps[0][0]) if hyps else ""]
    if not hyps:  # an empty input line
        hyps = [("", 0.0)]
    hyps = hyps + [("", -math.inf)] * (n_best - len(hyps))
    return [f"{clean(text)}\t{score:.4f}" for text, score in hyps[:n_best]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = _device(args.device)
    plot = args.plot_attention
    if plot is not None and not plot.parent.resolve().is_dir():
        raise UserError(f"{plot.parent}: no such directory for --plot-attention")
    if args.pretrained:
        from zoo.hub import load_pretrained

        loaded = load_pretrained(args.pretrained, map_location=device, task="translation")
        model, data, defaults = loaded.model, loaded.extras["data"], loaded.extras["decoding"]
    else:
        model, data, defaults = load_translator(args.checkpoint, device)
    if plot is not None and getattr(model, "attention", None) is None:
        origin = args.pretrained or args.checkpoint
        raise UserError(f"{origin}: a {type(model).__name__} has no attention to plot")
    settings = _settings(args, defaults)
    lines = read_input(sys.stdin.buffer)
    from tqdm import tqdm

    total = sum(1 for line in lines if line.strip())
    disable = True if args.quiet else None  # None: only on a terminal
    with tqdm(total=total, unit="sent", file=sys.stderr, disable=disable) as bar:
        try:
            results = search(model, data, lines, progress=bar.update, **settings)
        except ValueError as err:
            raise UserError(f"<stdin>: {err}") from None
    texts = [[(data.detokenize(ids), score) for ids, score in hyps] for hyps in results]
    out = [line for hyps in texts for line in _format(hyps, args.n_best)]
    sys.stdout.write("".join(f"{line}\n" for line in out))
    sys.stdout.flush()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if plot is not None and first is not None:
        target = results[first][0][0] if results[first] else []
        plot_attention(model, data, lines[first], target, plot)
    return 0
