"""``rnn-zoo sample``: generate text from a character language model."""

from __future__ import annotations

import argparse

from zoo.cli.common import add_device, add_model_source, load_model, write_stdout
from zoo.errors import UserError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-zoo sample", description=__doc__)
    add_model_source(parser, "char_lm")
    parser.add_argument("--prime", default="\n", help="text to start from (default: newline)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=None, help="default 0.8")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest character")
    parser.add_argument("--seed", type=int, default=None)
    add_device(parser)
    return parser


def check(args: argparse.Namespace) -> None:
    """The cheap checks first, before a model is read: one line naming the flag."""
    from zoo.predict.char_lm import check_sampling

    given = [
        f"--{name.replace('_', '-')}"
        for name in ("temperature", "top_k", "top_p")
        if getattr(args, name) is not None
    ]
    if args.greedy and given:  # they shape a distribution that greedy decoding never draws from
        raise UserError(f"--greedy takes the likeliest character; drop {' and '.join(given)}")
    if args.temperature is None:
        args.temperature = 0.8
    try:
        check_sampling(args.length, args.temperature, args.top_k, args.top_p, args.greedy)
    except ValueError as err:
        raise UserError(f"--{str(err).replace('_', '-')}") from None
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check(args)
    lm = load_model(args, "char_lm")
    settings = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    pieces = lm.stream(args.prime, args.length, greedy=args.greedy, seed=args.seed, **settings)
    written = False
    try:
        for piece in pieces:  # written as it is made; Ctrl-C keeps what was written
            write_stdout(piece)
            written = True
    except ValueError as err:  # the prime: empty, or characters the model never saw
        raise UserError(f"--prime: {err}") from None
    finally:
        if written:  # the text ends its line, also when Ctrl-C cut it short
            write_stdout("\n")
    return 0
