"""WMT'14 English-French: fetch the shared task's training corpora and news test sets from
statmt.org and write the layout :class:`~datamodules.parallel_text.ParallelTextDataModule` reads::

    data_dir/train.{en,fr}          Europarl v7, Common Crawl, UN, News Commentary v9, Giga
                                    fr-en: the training data of statmt.org/wmt14/translation-task
                                    (roughly 40M pairs, tens of GB of text), in that order
    data_dir/newstest2013.{en,fr}   validation (3,000 sentences)
    data_dir/newstest2014.{en,fr}   test: the full newstest2014 (3,003 sentences)
    data_dir/wmt14.json             written last: the corpora and pair counts of a finished run
    data_dir/downloads/             the archives, kept so a rerun fetches nothing

Train on it with ``--data.data_dir data/wmt14-enfr --data.download true --data.val newstest2013
--data.test newstest2014``, or first run ``rnn-zoo prepare wmt14 --out data/wmt14-enfr``.

Text is copied as it is: no cleaning, deduplication or length filter (the data module skips
pairs with an empty side and drops long training pairs). Invalid UTF-8 bytes become U+FFFD and a
trailing ``\\r`` is dropped, so every output is UTF-8 with ``\\n`` line ends. The test sets come
from sacreBLEU itself (:data:`TEST_SETS`: its ``wmt13`` and ``wmt14/full``, English-French): it
downloads them, checks the md5 it ships, converts the SGM and caches the text in ``$SACREBLEU``
(default ``~/.sacrebleu``), so ``newstest2014.fr`` is exactly what
``sacrebleu -t wmt14/full -l en-fr --echo ref`` prints and what BLEU is scored against.

Integrity. statmt.org publishes no checksums for the training archives. :data:`SOURCES` pins
what can be stated honestly: the size of ``training-giga-fren.tar`` recorded in older download
scripts. The four ``.tgz`` training
archives have no pinned checksum: they are checked by gzip's own CRC-32 and length trailer
while being extracted (which catches truncation and corruption, not a substituted file), and a
warning gives the sha256 of what was fetched, so it can be pinned. Every download goes to a
temporary file that is verified and extracted before it is renamed into place; every output is
written to a temporary file and renamed at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import copy
import functools
import gzip
import http.client
import json
import logging
import os
import sys
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from datamodules.text_files import read_lines
from zoo.errors import DataError, UserError
from zoo.files import (
    commit,
    file_digest,
    new_folders,
    offline,
    one_line,
    reuse_or_download,
    temp_beside,
)

STATMT = "https://www.statmt.org"
MIRROR_ENV = "RNN_ZOO_WMT_MIRROR"  # a base URL that replaces STATMT (a proxy, a local copy)
LANGS = ("en", "fr")
VALID, TEST = "newstest2013", "newstest2014"
MANIFEST = "wmt14.json"
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError)

T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """One archive on statmt.org and the English and French members taken from it.

    Attributes:
        path: under the host (:data:`STATMT` or a mirror), e.g. ``wmt14/test-full.tgz``.
        members: the English and the French member (``.gz`` members are decompressed).
        sha256, md5, size: what the download must match; ``None`` where nothing is published.
    """

    path: str
    members: tuple[str, str]
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


#: Training corpora, in the order they are concatenated. Member names as in fairseq's
#: ``examples/translation/prepare-wmt14en2fr.sh``.
SOURCES: dict[str, Source] = {
    "europarl": Source(
        "wmt13/training-parallel-europarl-v7.tgz",
        ("training/europarl-v7.fr-en.en", "training/europarl-v7.fr-en.fr"),
    ),
    "commoncrawl": Source(
        "wmt13/training-parallel-commoncrawl.tgz", ("commoncrawl.fr-en.en", "commoncrawl.fr-en.fr")
    ),
    "un": Source(
        "wmt13/training-parallel-un.tgz", ("un/undoc.2000.fr-en.en", "un/undoc.2000.fr-en.fr")
    ),
    "news-commentary": Source(
        "wmt14/training-parallel-nc-v9.tgz",
        ("training/news-commentary-v9.fr-en.en", "training/news-commentary-v9.fr-en.fr"),
    ),
    "giga": Source(
        "wmt10/training-giga-fren.tar",
        ("giga-fren.release2.fixed.en.gz", "giga-fren.release2.fixed.fr.gz"),
        size=2_595_102_720,  # as third-party download scripts record it; 253,428 tar records
    ),
}
CORPORA = ("europarl", "commoncrawl", "un", "news-commentary", "giga")
#: Validation and test sets by sacreBLEU's names: output prefix -> (test set, language pair).
TEST_SETS = {VALID: ("wmt13", "en-fr"), TEST: ("wmt14/full", "en-fr")}


def download_wmt14(
    data_dir: str | Path,
    mirror: str | None = None,
    corpora: Sequence[str] = CORPORA,
    *,
    archive_dir: str | Path | None = None,
    keep_archives: bool = True,
    progress: bool = True,
    sources: Mapping[str, Source] | None = None,
) -> dict[str, int]:
    """Download WMT'14 English-French into ``data_dir`` (see the module docstring).

    Resume-safe: a finished ``data_dir`` (its ``wmt14.json`` names the same corpora and every
    output exists) makes no request, and an archive already in ``archive_dir`` that matches its
    checksum (or, with none published, is there at all) is not fetched again.

    Args:
        data_dir: folder for the outputs (created if missing); existing outputs are replaced.
        mirror: base URL replacing ``https://www.statmt.org`` (default ``$RNN_ZOO_WMT_MIRROR``).
        corpora: training corpora to concatenate, a subset of :data:`CORPORA`, in this order.
        archive_dir: where archives go (default ``data_dir/downloads``).
        keep_archives: keep each archive once extracted (else a rebuild fetches it again).
        progress: progress bars and one line per archive on stderr.
        sources: the archive table (default :data:`SOURCES`).

    Returns:
        Pairs per training corpus, and per output prefix (``train``, ``newstest2013``,
        ``newstest2014``).

    Raises:
        DataError: one line naming the URL or file: a failed download (HTTP error, server down),
            a checksum or size mismatch, a truncated or unreadable archive, a missing member,
            or sides of different lengths.
        UserError: an unknown corpus.
    """
    sources = SOURCES if sources is None else sources
    unknown = [name for name in corpora if name not in CORPORA or name not in sources]
    if unknown or not corpora:
        raise UserError(f"corpora must be some of {', '.join(CORPORA)}; got {list(corpora)}")
    data_dir = Path(data_dir)
    archives = Path(archive_dir) if archive_dir else data_dir / "downloads"
    host = (mirror or os.environ.get(MIRROR_ENV) or STATMT).rstrip("/")
    if (done := _finished(data_dir, corpora)) is not None:
        return done
    with new_folders(archives):  # removed again where a failure leaves them empty
        fetch = _Fetcher(host, archives, keep_archives, progress)
        outputs = [f"{prefix}.{lang}" for prefix in ("train", VALID, TEST) for lang in LANGS]
        temps = {name: temp_beside(data_dir / name) for name in [*outputs, MANIFEST]}
        try:
            counts = _write_train(fetch, sources, corpora, temps["train.en"], temps["train.fr"])
            for prefix in (VALID, TEST):
                src, tgt = sacrebleu_test_set(*TEST_SETS[prefix], mirror=host)
                fetch.log(f"{prefix}: {len(src):,} pairs")
                counts[prefix] = len(src)
                _write_lines(temps[f"{prefix}.en"], src)
                _write_lines(temps[f"{prefix}.fr"], tgt)
            record = {"corpora": list(corpora), "pairs": counts}
            temps[MANIFEST].write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            for name in [*outputs, MANIFEST]:  # the manifest last: it marks a finished run
                commit(temps[name], data_dir / name)
        finally:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
    return counts


def _finished(data_dir: Path, corpora: Sequence[str]) -> dict[str, int] | None:
    """The pair counts of a finished run with the same corpora, else None."""
    try:
        record = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    outputs = [data_dir / f"{prefix}.{lang}" for prefix in ("train", VALID, TEST) for lang in LANGS]
    if not isinstance(record, dict) or record.get("corpora") != list(corpora):
        return None
    return record.get("pairs") if all(path.is_file() for path in outputs) else None


def _write_train(
    fetch: _Fetcher,
    sources: Mapping[str, Source],
    corpora: Sequence[str],
    en_path: Path,
    fr_path: Path,
) -> dict[str, int]:
    """Append each corpus's two sides to ``en_path`` and ``fr_path``; pairs per corpus."""
    counts: dict[str, int] = {}
    with (
        en_path.open("w", encoding="utf-8", newline="\n") as en,
        fr_path.open("w", encoding="utf-8", newline="\n") as fr,
    ):
        for name in corpora:
            source = sources[name]
            en_member, fr_member = source.members
            copy = functools.partial(_copy_lines, progress=fetch.progress)
            handlers = {
                en_member: functools.partial(copy, out=en, name=en_member),
                fr_member: functools.partial(copy, out=fr, name=fr_member),
            }
            with fetch(source) as (archive, origin):
                lines = _extract(archive, source, origin, handlers)
            if lines[en_member] != lines[fr_member]:
                raise DataError(
                    f"{origin}: {en_member} has {lines[en_member]:,} lines but {fr_member} has "
                    f"{lines[fr_member]:,}; the sides are not aligned"
                )
            counts[name] = lines[en_member]
            fetch.log(f"{name}: {counts[name]:,} pairs")
    counts["train"] = sum(counts[name] for name in corpora)
    return counts


def sacrebleu_test_set(
    name: str, langpair: str, mirror: str | None = None
) -> tuple[list[str], list[str]]:
    """The source and reference lines of sacreBLEU's test set ``name`` (e.g. ``wmt14/full``,
    ``en-fr``): downloaded, md5-checked, converted and cached by sacreBLEU (``$SACREBLEU``).

    Args:
        mirror: a base URL that replaces statmt.org in sacreBLEU's URLs (same paths).

    Raises:
        DataError: one line naming the URL: a failed download or a checksum mismatch (the bad
            archive is removed, so the next try downloads again), or sides of different lengths.
    """
    from sacrebleu.dataset import DATASETS

    dataset = copy.copy(DATASETS[name])
    if mirror and mirror.rstrip("/") != STATMT:
        dataset.data = [f"{mirror.rstrip('/')}/{url.split('/', 3)[3]}" for url in dataset.data]
    missing = [
        url for url in dataset.data
        if not Path(dataset._rawdir, dataset._get_tarball_filename(url)).is_file()
    ]  # fmt: skip
    if missing and offline():
        raise DataError(
            f"{', '.join(missing)}: not downloaded, RNN_ZOO_OFFLINE is set and sacreBLEU has no "
            f"copy in {dataset._rawdir}; unset it, or fetch the test set once online"
        )
    said: list[str] = []  # sacreBLEU's own error lines, kept for our one line
    try:
        with _sacrebleu_errors(said):
            src_path = dataset.get_source_file(langpair)
            ref_path = dataset.get_reference_files(langpair)[0]
    except (SystemExit, OSError, http.client.HTTPException, tarfile.TarError) as err:
        # sacreBLEU exits (SystemExit) on a wrong md5 sum or an SSL error, after logging why
        for url in dataset.data:
            Path(dataset._rawdir, dataset._get_tarball_filename(url)).unlink(missing_ok=True)
        why = one_line(err) if not isinstance(err, SystemExit) else "it exited"
        why = one_line(said[0]).removeprefix("Fatal: ") if said else why
        raise DataError(
            f"{', '.join(dataset.data)}: sacreBLEU could not fetch its test set {name} ({why})"
        ) from None
    src, ref = read_lines(src_path), read_lines(ref_path)
    if len(src) != len(ref):
        raise DataError(
            f"sacreBLEU's {name} ({langpair}): {src_path} has {len(src):,} lines but {ref_path} "
            f"has {len(ref):,}"
        )
    return src, ref


@contextmanager
def _sacrebleu_errors(said: list[str]) -> Iterator[None]:
    """While sacreBLEU fetches, its error log lines go into ``said`` instead of the terminal: the
    first says what went wrong (a wrong md5 sum, an SSL error) and goes into our one line."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger, keep = logging.getLogger("sacrebleu"), Keep(logging.ERROR)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(keep)
    try:
        yield
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate


# --------------------------------------------------------------------------------- downloads
class _Fetcher:
    """Verified archives: reused when present and matching, else downloaded to a temporary file
    that becomes the archive only once the caller has extracted it without error."""

    def __init__(self, host: str, archives: Path, keep: bool, progress: bool) -> None:
        self.host, self.archives, self.keep, self.progress = host, archives, keep, progress

    def log(self, message: str) -> None:
        if self.progress:
            print(f"wmt14: {message}", file=sys.stderr)

    @contextmanager
    def __call__(self, source: Source) -> Iterator[tuple[Path, str]]:
        """Yields the archive to read and how to name it in errors (its URL or its path)."""
        url = f"{self.host}/{source.path}"
        path = self.archives / Path(source.path).name
        digests = {"sha256": source.sha256, "md5": source.md5}
        if not path.is_file():
            self.log(f"downloading {url}")
        with reuse_or_download(
            url, path, size=source.size, digests=digests, keep=self.keep, progress=self.progress
        ) as (archive, origin):
            if origin == url and source.sha256 is None and source.md5 is None:
                warnings.warn(
                    f"{url}: no published checksum; checked by "
                    f"{'its size and ' if source.size else ''}gzip CRC only (sha256 of this "
                    f"download: {file_digest(archive, 'sha256')})",
                    stacklevel=2,
                )
            yield archive, origin


# -------------------------------------------------------------------------------- extraction
def _extract(
    archive: Path, source: Source, origin: str, handlers: dict[str, Callable[[IO[bytes]], T]]
) -> dict[str, T]:
    """``handlers[name](member bytes)`` for each wanted member, in one pass over the archive;
    then the rest is read so that gzip checks its CRC and length (a truncated download fails)."""
    results: dict[str, T] = {}
    compressed = source.path.endswith((".tgz", ".gz"))
    try:
        opener = gzip.open if compressed else open
        with opener(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in handlers and member.isfile():
                    data = tar.extractfile(member)
                    if name.endswith(".gz"):  # Giga's sides; read to the end, CRC checked
                        with gzip.GzipFile(fileobj=data) as unzipped:
                            results[name] = handlers[name](unzipped)
                    else:
                        results[name] = handlers[name](data)
            while raw.read(1 << 20):
                pass
    except READ_ERRORS as err:
        raise DataError(f"{origin}: not a complete, readable archive ({one_line(err)})") from None
    if missing := [name for name in handlers if name not in results]:
        raise DataError(f"{origin}: has no member {', '.join(missing)}")
    return results


def _copy_lines(member: IO[bytes], out: IO[str], name: str, progress: bool) -> int:
    """Append ``member``'s lines to ``out`` (see the module docstring); returns the count.

    Lines end at ``\\n`` only, as ``wc -l`` counts them (not at the other Unicode breaks).
    """
    from tqdm import tqdm

    count = 0
    with tqdm(desc=name, unit=" lines", unit_scale=True, disable=not progress) as bar:
        for count, raw in enumerate(member, 1):
            line = raw.decode("utf-8", errors="replace")
            if count == 1:
                line = line.removeprefix("\ufeff")
            out.write(line.removesuffix("\n").removesuffix("\r") + "\n")
            if count % 65536 == 0:
                bar.update(65536)
        bar.update(count % 65536)
    return count


# ------------------------------------------------------------------------------------ helpers
def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{line}\n" for line in lines)
