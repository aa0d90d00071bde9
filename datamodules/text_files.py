"""Reading text files: UTF-8 (``.gz`` transparently), with one-line errors that name the file and
line; line-aligned parallel files and ``source<TAB>target`` files."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
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
        raise DataError(f"{path}: file is empty; a character model needs text to read")
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
    return list(iter_lines(Path(path)))


def iter_lines(path: Path) -> Iterator[str]:
    """:func:`read_lines`, one line at a time: a corpus of any size in constant memory."""
    if not path.exists():
        raise DataError(f"{path}: no such file; pass an existing UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass a UTF-8 text file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        try:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"{path}: line {number} is not UTF-8 (byte 0x{raw[err.start]:02x}); "
                        "convert the file, e.g. with iconv -t UTF-8"
                    ) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                yield line.removesuffix("\n").removesuffix("\r")
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid gzip file ({err})") from None


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
        raise DataError(_unaligned(src_path, len(src), tgt_path, len(tgt)))
    return src, tgt


def iter_pairs(src: Path, tgt: Path | None) -> Iterator[tuple[str, str]]:
    """Stripped sentence pairs of two line-aligned files, or of one ``source<TAB>target`` file
    (``tgt`` None), read one line at a time.

    Raises:
        DataError: the sides have different numbers of lines (both counts named), or a TSV line
            without exactly one tab.
    """
    if tgt is None:
        for number, line in enumerate(iter_lines(src), 1):
            if line.count("\t") != 1:
                raise DataError(
                    f"{src}: line {number} has {line.count(chr(9))} tabs; "
                    "each line must be source<TAB>target"
                )
            source, target = line.split("\t")
            yield source.strip(), target.strip()
        return
    sources, targets, count = iter_lines(src), iter_lines(tgt), 0
    for source in sources:
        target = next(targets, None)
        if target is None:
            raise DataError(_unaligned(src, count + 1 + sum(1 for _ in sources), tgt, count))
        count += 1
        yield source.strip(), target.strip()
    rest = sum(1 for _ in targets)
    if rest:
        raise DataError(_unaligned(src, count, tgt, count + rest))


def _unaligned(src: Path, n_src: int, tgt: Path, n_tgt: int) -> str:
    return (
        f"{src} has {n_src:,} lines but {tgt} has {n_tgt:,}; "
        "the two sides must be aligned line by line"
    )


def drop_empty(src: list[str], tgt: list[str]) -> tuple[list[str], list[str], int]:
    """Strip both sides and skip pairs with an empty side; returns the number skipped."""
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    return [s for s, _ in kept], [t for _, t in kept], len(pairs) - len(kept)
