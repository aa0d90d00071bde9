"""``rnn-zoo pretrained list | info NAME | download NAME``: the published weights."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zoo.cli.common import write_stdout


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-zoo pretrained", description="Published weights.")
    parser.add_argument("--manifest", type=Path, default=None, help="default: the shipped one")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="names of the published models")
    commands.add_parser("info", help="print a model's manifest entry").add_argument("name")
    commands.add_parser("download", help="fetch and verify; print the path").add_argument("name")
    return parser


def as_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from zoo import hub

    if args.command == "list":
        names = "\n".join(hub.list_pretrained(args.manifest))
        write_stdout(f"{names or '(no published models yet)'}\n")
    elif args.command == "info":
        write_stdout(as_yaml(hub.pretrained_info(args.name, args.manifest)))
    else:
        write_stdout(f"{hub.download(args.name, args.manifest)}\n")
    return 0
