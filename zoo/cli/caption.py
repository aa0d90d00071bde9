"""``rnn-zoo caption``: describe pictures with a trained captioning model.

::

    rnn-zoo caption --checkpoint runs/captioning/tiny/checkpoints/last.ckpt a.jpg b.png
    rnn-zoo caption --pretrained captioning-showattendtell-shapes-v1 --beam 5 photos/*.png | cut -f2

One line ``path<TAB>caption`` per picture, in the order given (the path as it was typed). Pictures
are read the way the training data were (:func:`datamodules.images.load_image`), resized to the
training ``image_size`` and normalised with the training statistics, then decoded in batches (beam
search; greedy with ``--beam 1``). Every picture is captioned before anything is printed or drawn,
so a bad one stops the command with one line naming it and leaves no partial output.

``--plot-attention DIR`` (Show, Attend and Tell only) draws, for every picture, the attention map
behind each word of its caption over the picture, as in Xu et al. (2015), figures 2-3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.cli.common import add_device, add_model_source, load_model, write_stdout
from zoo.errors import DataError, UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo caption",
        description="Caption pictures (JPEG, PNG, ... of any size) with a captioning model.",
        epilog="Prints one line 'path<TAB>caption' per picture, in the order given (cut -f2 keeps "
        "the captions). Pictures are preprocessed as in training (image size and normalisation "
        "from the model); defaults for the search come from the training recipe. A picture that "
        "cannot be read stops the command before anything is printed. --plot-attention DIR "
        "writes DIR/<name>.png per picture (a repeated name gets -2, -3, ...).",
    )
    add_model_source(parser, "captioning")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="pictures")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy search)")
    parser.add_argument("--max-len", type=int, default=None, help="most words per caption")
    parser.add_argument("--batch-size", type=int, default=32, help="pictures per batch")
    parser.add_argument(
        "--plot-attention", type=Path, default=None, metavar="DIR",
        help="draw each word's attention map over its picture (Show, Attend and Tell only)",
    )  # fmt: skip
    add_device(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, top in (("--beam", args.beam, 1000), ("--max-len", args.max_len, 10_000)):
        if value is not None and not 1 <= value <= top:
            raise UserError(f"{flag} must be between 1 and {top:,}, got {value:,}")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    plot = args.plot_attention
    if plot is not None and plot.exists() and not plot.is_dir():
        raise UserError(f"{plot}: --plot-attention needs a directory, this is a file")
    if plot is not None:
        from zoo.files import check_folder

        check_folder(plot, "--plot-attention")
    for path in map(Path, args.images):  # the cheap checks first, before loading a model
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a picture")
        if not path.exists():
            raise DataError(f"{path}: picture not found")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_args(args)
    captioner = load_model(args, "captioning")
    source = args.pretrained or args.checkpoint
    plot = args.plot_attention
    if plot is not None and not hasattr(captioner.model, "forward_with_attention"):
        name = type(captioner.model).__name__
        raise UserError(f"{source}: a {name} has no attention to plot; it needs ShowAttendTell")
    from tqdm import tqdm

    disable = True if args.quiet else None  # None: only on a terminal
    with tqdm(total=len(args.images), unit="img", file=sys.stderr, disable=disable) as bar:
        captions = captioner.captions(
            args.images, beam_size=args.beam, max_len=args.max_len, batch_size=args.batch_size,
            with_attention=plot is not None, progress=bar.update,
        )  # fmt: skip
    if plot is not None:  # drawn first: a failure leaves no output that looks complete
        captioner.plot_attention(args.images, captions, plot)
    lines = (f"{path}\t{caption.text}\n" for path, caption in zip(args.images, captions))
    write_stdout("".join(lines))
    return 0
