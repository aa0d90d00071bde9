"""``rnn-zoo recipes``: the bundled recipes, by name, with the number each one targets.

A name is what ``--config`` takes (``rnn-zoo fit --config char_lm/demo``); the target is the
recipe's own ``Target: ...`` comment (a paper's number, or the demo's threshold), else the
first sentence of its header comment.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from zoo.cli.common import write_stdout
from zoo.cli.lightning import RECIPES


def header(path: Path) -> str:
    """The recipe's opening comment block, as one line of text."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("rnn-zoo "):  # a usage line, not prose
            continue
        lines.append(text)
    return " ".join(lines)


def first_sentence(text: str, limit: int = 110) -> str:
    """``text`` up to the first full stop (or ``;``) outside brackets, at most ``limit`` long."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth <= 0 and char in ".;" and (i + 1 == len(text) or text[i + 1] == " "):
            text = text[:i]
            break
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def target(path: Path) -> str:
    """What a recipe targets: its ``Target(s):`` sentence, else its first sentence."""
    text = header(path)
    found = re.search(r"Targets?(?: \([^)]*\))?:\s*", text)
    return first_sentence(text[found.end() :] if found else text)


def recipes(root: Path = RECIPES) -> list[tuple[str, str]]:
    """``(name, target)`` of every recipe under ``root``, sorted by name."""
    paths = sorted(root.glob("*/*.yaml"))
    return [(str(p.relative_to(root).with_suffix("")), target(p)) for p in paths]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="rnn-zoo recipes", description=__doc__).parse_args(argv)
    rows = recipes()
    width = max((len(name) for name, _ in rows), default=0)
    lines = [f"{name:<{width}}  {goal}\n" for name, goal in rows]
    write_stdout(
        f"{''.join(lines)}\n{len(rows)} recipes in {RECIPES}; run one: rnn-zoo fit --config NAME\n"
    )
    return 0
