"""Reading text files: UTF-8 (``.gz`` transparently), with one-line errors that name the file and
line; line-aligned parallel files and ``source<TAB>target`` files."""

from __future__ import annotations

import gzip
from pathlib import Path

from zoo.errors import DataError


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it ends in ``.gz``; one-line errors naming the file."""
    if not path.exists():
        raise DataError(f"{path}: no such file; pass an existing UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass a UTF-8 text file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid gzip file ({err})") from None
    return raw


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file (``.gz`` transparently), with one-line errors naming the file."""
    path = Path(path)
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(f"{path}: file is empty; a character model needs text to learn from")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path}: looks like a binary file (NUL bytes); pass UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "convert it, e.g. with iconv -t UTF-8"
        ) from None


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` transparently), without their line ends.

    Lines are split on ``\\n`` only (a trailing ``\\r`` is removed), not on the other Unicode breaks
    that ``str.splitlines`` knows, so line numbers agree with ``wc -l`` and sides stay aligned.

    Raises:
        DataError: one line naming the file: missing, not gzip, or a line that is not UTF-8.
    """
    path = Path(path)
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[err.start]:02x}); "
            "convert the file, e.g. with iconv -t UTF-8"
        ) from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def find_file(data_dir: Path, prefix: str, lang: str) -> Path:
    """``data_dir / f"{prefix}.{lang}"``, or the same with ``.gz``."""
    plain = data_dir / f"{prefix}.{lang}"
    for path in (plain, plain.with_name(plain.name + ".gz")):
        if path.is_file():
            return path
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory; set data_dir to the corpus folder")
    raise DataError(f"{plain}: no such file (nor {plain.name}.gz) in {data_dir}")


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    """The two sides of a corpus, checked to have the same number of lines."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}; "
            "the two sides must be aligned line by line"
        )
    return src, tgt


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    """A file of ``source<TAB>target`` lines, split into the two sides."""
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), 1):
        if line.count("\t") != 1:
            raise DataError(
                f"{path}: line {number} has {line.count(chr(9))} tabs; "
                "each line must be source<TAB>target"
            )
        source, target = line.split("\t")
        src.append(source)
        tgt.append(target)
    return src, tgt


def drop_empty(src: list[str], tgt: list[str]) -> tuple[list[str], list[str], int]:
    """Strip both sides and skip pairs with an empty side; returns the number skipped."""
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    return [s for s, _ in kept], [t for _, t in kept], len(pairs) - len(kept)
