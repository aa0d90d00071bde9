"""``rnn-zoo sample``: generate text from a character language model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from datamodules.vocab import CharVocab
from zoo.checkpoint import read_checkpoint, submodule_state
from zoo.errors import CheckpointError, UserError
from zoo.models import CharRNN, generate_text


def load_char_model(path: str | Path, map_location: str = "cpu") -> tuple[CharRNN, CharVocab]:
    """A :class:`CharRNN` in eval mode and its vocabulary, from a training checkpoint."""
    checkpoint = read_checkpoint(path, "char_lm", map_location)
    if "vocab" not in checkpoint:
        raise CheckpointError(f"{path}: has no vocabulary; was it saved before training began?")
    try:
        model = CharRNN.from_config(checkpoint["hyper_parameters"]["model"])
        model.load_state_dict(submodule_state(checkpoint))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: config does not match the weights ({err})") from None
    return model.to(map_location).eval(), CharVocab(checkpoint["vocab"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnn-zoo sample", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a char_lm training checkpoint (.ckpt)")
    source.add_argument("--pretrained", help="a published model (see: rnn-zoo pretrained list)")
    parser.add_argument("--prime", default="\n", help="text to start from (default: newline)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest character")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.pretrained:
        from zoo.hub import load_pretrained

        loaded = load_pretrained(args.pretrained, map_location=args.device)
        if loaded.task != "char_lm":
            raise UserError(
                f"{args.pretrained} is a {loaded.task} model; rnn-zoo sample needs char_lm"
            )
        model, vocab = loaded.model, loaded.extras["vocab"]
    else:
        model, vocab = load_char_model(args.checkpoint, args.device)
    try:
        text = generate_text(
            model,
            vocab,
            args.prime,
            args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            greedy=args.greedy,
            seed=args.seed,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    sys.stdout.write(text + "\n")
    return 0
