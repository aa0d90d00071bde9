"""Arguments several commands share: where the model comes from, and the device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_model_source(parser: argparse.ArgumentParser, task: str) -> None:
    """``--checkpoint PATH`` (a training checkpoint) or ``--pretrained NAME|FILE`` (a published
    model, by name or as a local ``.safetensors`` file), exactly one of them."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help=f"a {task} training checkpoint (.ckpt)")
    source.add_argument(
        "--pretrained",
        metavar="NAME|FILE",
        help="a published model (see: rnn-zoo pretrained list) or a .safetensors file",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def load_model(args: argparse.Namespace, task: str) -> Any:
    """The predictor that ``--checkpoint`` / ``--pretrained`` and ``--device`` name."""
    from zoo.predict import PREDICTORS, load, resolve_device

    device = resolve_device(args.device)  # a bad device is refused before any file is read
    if args.pretrained:
        return load(args.pretrained, device, task=task)
    return PREDICTORS[task].from_checkpoint(args.checkpoint, device)
