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
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from zoo.cli.common import add_device, add_model_source, load_model, write_stdout
from zoo.errors import UserError

if TYPE_CHECKING:
    from zoo.decoding import DecodeSettings


def decode_line(raw: bytes, number: int, origin: str) -> str:
    """A UTF-8 line without its line end.

    Raises:
        UserError: it is not UTF-8, naming it (1-based).
    """
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{origin}: line {number} is not UTF-8 (byte 0x{raw[err.start]:02x}); "
            "convert the input, e.g. with iconv -t UTF-8"
        ) from None


def read_windows(
    stream: BinaryIO, window: int, origin: str = "<stdin>", pause: float = 0.2
) -> Iterator[list[str]]:
    """The UTF-8 lines of ``stream`` in windows of at most ``window`` lines, each yielded as soon
    as it is full, the input ends, or the input pauses for ``pause`` seconds with lines waiting
    (so a line typed at a terminal, or sent by another program, is answered at once).

    Raises:
        UserError: a line that is not UTF-8, naming it.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream: it is all there
        fd = None
    buffer, lines, number, ended = b"", [], 0, False
    while not ended:
        if fd is None:
            chunk = stream.read()
            ready, ended = True, True
        else:
            waiting = pause if lines else None
            ready = bool(select.select([fd], [], [], waiting)[0])
            chunk = os.read(fd, 1 << 16) if ready else b""
            ended = ready and not chunk
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        if ended and buffer:  # the last line, without a final newline
            complete, buffer = [*complete, buffer], b""
        for raw in complete:
            number += 1
            line = decode_line(raw, number, origin)
            lines.append(line.removeprefix("\ufeff") if number == 1 else line)
        while len(lines) >= window or (lines and (ended or not ready)):
            yield lines[:window]
            lines = lines[window:]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo translate",
        description="Translate lines (stdin or --input) to stdout or --output, one line per line. "
        "Lines are translated as they come: a window of --window lines, or as soon as the input "
        "pauses, so interactive use answers each line.",
        epilog="With --n-best K every input line gives K lines 'translation<TAB>score', best "
        "first (score: length-normalised log-probability). Defaults for the search come from "
        "the checkpoint's training recipe.",
    )
    add_model_source(parser, "translation")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy search)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    parser.add_argument("--window", type=int, default=256, help="lines translated at a time")
    parser.add_argument("--input", type=Path, help="a UTF-8 text file (default: stdin)")
    parser.add_argument("--output", type=Path, help="written when complete (default: stdout)")
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
    parser.add_argument("--quiet", action="store_true", help="(no progress bar: lines stream)")
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
        flag = str(err).replace("beam_size", "beam").replace("_", "-")
        raise UserError(f"--{flag}") from None
    return settings.override(early_stopping=False) if args.exhaustive else settings


def _format(hyps: list[tuple[str, float]], n_best: int) -> list[str]:
    def clean(text: str) -> str:  # one line per hypothesis, whatever the detokeniser did
        return " ".join(text.replace("\t", " ").splitlines())

    if n_best == 1:
        return [clean(hyps[0][0]) if hyps else ""]
    if not hyps:  # an empty input line
        hyps = [("", 0.0)]
    hyps = hyps + [("", -math.inf)] * (n_best - len(hyps))
    return [f"{clean(text)}\t{_score(score)}" for text, score in hyps[:n_best]]


def _score(score: float) -> str:
    """Four decimals (``-1.2346``, ``0.0000``, ``-inf``), except for a score that they would print
    as ``-0.0000``: a large ``--length-penalty`` divides log-probabilities down to about 1e-9, and
    those get seven significant digits (``-3.402571e-09``) rather than all reading as zero."""
    text = f"{score:.4f}"
    return text if float(text) != 0 or score == 0 else f"{score:.6e}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.window < 1:
        raise UserError("--window must be at least 1")
    if args.input is not None and args.input.is_dir():
        raise UserError(f"{args.input}: a folder; --input takes a text file")
    if args.input is not None and not args.input.exists():  # a pipe, as <(...) gives, is read
        raise UserError(f"{args.input}: no such file for --input")
    plot = args.plot_attention
    if plot is not None or args.output is not None:  # checked before any work
        from zoo.files import check_folder
        from zoo.plots import check_figure_path

        if plot is not None:
            check_figure_path(plot)
        if args.output is not None:
            check_folder(args.output.parent, "--output")
            if args.input is not None and args.output.exists() and args.output.samefile(args.input):
                raise UserError(
                    f"{args.output}: --output is the --input file; write the translation to "
                    "another file"
                )
    translator = load_model(args, "translation")
    if plot is not None and getattr(translator.model, "attention", None) is None:
        origin = args.pretrained or args.checkpoint
        raise UserError(f"{origin}: a {type(translator.model).__name__} has no attention to plot")
    settings = _settings(args, translator.decoding)
    source = args.input.open("rb") if args.input else sys.stdin.buffer
    origin = str(args.input) if args.input else "<stdin>"
    if args.output is None:
        _translate(translator, settings, args, source, origin, write_stdout)
        return 0
    from zoo.files import atomic_path

    with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8") as out:

        def write(text: str) -> None:
            out.write(text)
            out.flush()

        _translate(translator, settings, args, source, origin, write)
    return 0


def _translate(
    translator, settings, args, source: BinaryIO, origin: str, write: Callable[[str], None]
) -> None:
    """Translate ``source`` window by window, writing (and flushing) each window's lines."""
    seen, plot = 0, args.plot_attention

    def warn(index: int, pieces: int) -> None:
        print(f"rnn-zoo: warning: {origin}: line {seen + index + 1} is over the length limit; "
              f"translated in {pieces} pieces", file=sys.stderr)  # fmt: skip

    unknown: list[int] = []  # the lines with source tokens outside the vocabulary, 1-based
    held: list[str] = []  # translations of blank lines read before the figure could be drawn

    def on_unknown(index: int) -> None:
        unknown.append(seen + index + 1)

    for lines in read_windows(source, args.window, origin):
        try:
            results = translator.search(
                lines,
                batch_size=args.batch_size,
                on_split=warn,
                on_unknown=on_unknown,
                **settings.to_dict(),
            )
        except ValueError as err:
            raise UserError(f"{origin}: {err}") from None
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if plot is not None and first is not None:  # drawn first: a failure leaves no output
            target = results[first][0][0] if results[first] else []
            try:
                translator.plot_attention(lines[first], target, plot)
            except ValueError as err:  # over the length limit: no single alignment to draw
                raise UserError(f"{origin}: --plot-attention: {err}") from None
            plot = None
        detokenize = translator.codec.detokenize
        texts = [[(detokenize(ids), score) for ids, score in hyps] for hyps in results]
        held.append(
            "".join(f"{line}\n" for hyps in texts for line in _format(hyps, settings.n_best))
        )
        if plot is None:  # held back until the figure is drawn: no output if it never is
            write("".join(held))
            held.clear()
        seen += len(lines)
    if unknown:  # one line at the end: a word-level shortlist gives <unk> in most real sentences
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        print(f"rnn-zoo: warning: {origin}: {len(unknown):,} of {seen:,} lines have source tokens "
              f"outside the model's vocabulary, read as <unk> (lines {shown})",
              file=sys.stderr)  # fmt: skip
    if plot is not None:  # asked for, never drawn: say so rather than end as if it were
        raise UserError(
            f"{origin}: --plot-attention: no non-empty input line, so {plot} is not drawn"
        )
