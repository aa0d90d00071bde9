"""``rnn-zoo translate``: translate text with a translation model.

::

    rnn-zoo translate --checkpoint runs/translation/demo-bible/checkpoints/last.ckpt \\
        < input.en > output.fr

One output line per input line, in order. With ``--n-best K`` every input line gives ``K`` lines
``translation<TAB>score`` (best first; the score is the length-normalised log-probability of
:mod:`zoo.decoding`; a sentence with fewer than ``K`` possible hypotheses is padded with empty
ones scored ``-inf``). An empty input line gives an empty translation (score 0). Lines are
batched by length within windows, so similar lengths share a batch; the order is restored.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from zoo.cli.common import add_device, add_model_source, load_model
from zoo.errors import UserError

if TYPE_CHECKING:
    from zoo.decoding import DecodeSettings


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
    add_model_source(parser, "translation")
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
    add_device(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _settings(args: argparse.Namespace, defaults: DecodeSettings) -> DecodeSettings:
    """The recipe's search with the flags given on top; one line naming a bad value."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    try:
        settings = defaults.override(
            beam_size=args.beam, n_best=args.n_best, length_penalty=args.length_penalty,
            max_len_a=args.max_len_a, max_len_b=args.max_len_b,
        )  # fmt: skip
    except ValueError as err:  # the dataclass names the setting; the flag is its --spelling
        raise UserError(f"--{str(err).replace('_', '-')}") from None
    return settings.override(early_stopping=False) if args.exhaustive else settings


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
    plot = args.plot_attention
    if plot is not None:
        from zoo.plots import check_figure_path

        check_figure_path(plot)
    translator = load_model(args, "translation")
    if plot is not None and getattr(translator.model, "attention", None) is None:
        origin = args.pretrained or args.checkpoint
        raise UserError(f"{origin}: a {type(translator.model).__name__} has no attention to plot")
    settings = _settings(args, translator.decoding)
    lines = read_input(sys.stdin.buffer)
    from tqdm import tqdm

    total = sum(1 for line in lines if line.strip())
    disable = True if args.quiet else None  # None: only on a terminal
    with tqdm(total=total, unit="sent", file=sys.stderr, disable=disable) as bar:
        try:
            results = translator.search(
                lines, progress=bar.update, batch_size=args.batch_size, **settings.to_dict()
            )
        except ValueError as err:
            raise UserError(f"<stdin>: {err}") from None
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if plot is not None and first is not None:  # drawn first: a failure leaves no output
        target = results[first][0][0] if results[first] else []
        translator.plot_attention(lines[first], target, plot)
    detokenize = translator.codec.detokenize
    texts = [[(detokenize(ids), score) for ids, score in hyps] for hyps in results]
    out = [line for hyps in texts for line in _format(hyps, settings.n_best)]
    sys.stdout.write("".join(f"{line}\n" for line in out))
    sys.stdout.flush()
    return 0
