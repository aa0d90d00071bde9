"""``rnn-zoo sample``: generate text from a character language model."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.common import add_device, add_model_source, load_model
from zoo.errors import UserError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-zoo sample", description=__doc__)
    add_model_source(parser, "char_lm")
    parser.add_argument("--prime", default="\n", help="text to start from (default: newline)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest character")
    parser.add_argument("--seed", type=int, default=None)
    add_device(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lm = load_model(args, "char_lm")
    try:
        text = lm.generate(
            args.prime, args.length, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, greedy=args.greedy, seed=args.seed,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    sys.stdout.write(text + "\n")
    return 0
