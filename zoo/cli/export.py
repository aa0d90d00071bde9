"""``rnn-zoo export --checkpoint RUN.ckpt --name NAME [--out DIR] [--fp16] [--force]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.cli.common import write_stdout
from zoo.cli.pretrained import as_yaml
from zoo.errors import PretrainedError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo export",
        description="Publish a training checkpoint as NAME.safetensors; print its manifest entry.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt from rnn-zoo fit")
    parser.add_argument("--name", required=True, help="e.g. char_lm-lstm-shakespeare-v1")
    parser.add_argument("--out", type=Path, help="directory (default: the manifest's)")
    parser.add_argument("--fp16", action="store_true", help="store float16, load as float32")
    parser.add_argument("--force", action="store_true", help="replace an existing NAME.safetensors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from zoo.files import check_folder
    from zoo.hub import list_pretrained, manifest_path
    from zoo.predict import export_checkpoint

    published = list_pretrained() if manifest_path().is_file() else []  # a new zoo has none yet
    if args.name in published:  # its file would pass for a damaged copy of the published one
        raise PretrainedError(
            f"--name {args.name}: already a published model's name, and published weights never "
            "change; new weights get a new name (bump -v<N>)"
        )
    out_dir = check_folder(args.out or manifest_path().parent, "--out")
    out = out_dir / f"{args.name}.safetensors"
    if (out.exists() or out.is_symlink()) and not args.force:  # a published file never changes
        raise PretrainedError(
            f"{out}: already exists; new weights get a new name (bump -v<N>), "
            "or pass --force to replace an unpublished file"
        )
    entry = export_checkpoint(args.checkpoint, out, args.name, fp16=args.fp16)
    hint = "fill in recipe, data, licence and metrics, then add it under 'checkpoints:'"
    print(f"wrote {out}; {hint}", file=sys.stderr)
    write_stdout(as_yaml([entry]))
    return 0
