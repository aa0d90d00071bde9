"""Files, written and fetched safely: one atomic write, one digest, one verified download.

Every writer in rnn-zoo (checkpoints, published weights, figures, prepared corpora, downloads)
goes through :func:`atomic_path`: the data goes to a hidden temporary file beside the target, is
flushed to disk, and only then renamed onto the target, so a reader (or a crash) never sees a
half-written file under the final name. Every download goes through :func:`verified_download`,
which checks size and digests before the file takes its name.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from zoo.errors import DataError, UserError

CHUNK = 1 << 20  # bytes read or written at a time
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"
_TEMP_OWNER = re.compile(r"([A-Za-z0-9_]+)-(\d+)-[0-9a-f]+\.tmp")


def offline() -> bool:
    """Is ``RNN_ZOO_OFFLINE`` set (to anything but empty, 0, false or no)? Then nothing is
    downloaded: published weights, remote checkpoints, corpora and sacreBLEU's test sets."""
    return os.environ.get("RNN_ZOO_OFFLINE", "").lower() not in ("", "0", "false", "no")


def temp_beside(path: Path) -> Path:
    """A unique hidden name in ``path``'s folder (created if missing): write there, then
    ``os.replace`` onto ``path``, so a reader never sees a half-written file.

    The name carries this host and process (``.NAME.HOST-PID-RANDOM.tmp``), so that the
    leftovers of a process that was killed mid-write are recognised and removed here, by the
    next write of the same file (:func:`remove_leftovers`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def remove_leftovers(path: Path) -> list[Path]:
    """Remove temporary files that killed writes of ``path`` left beside it: ours of this host
    whose process is gone, and older schemes' (``.NAME.tmp``, downloads' ``*.partial``) once an
    hour old. Returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if _abandoned(tmp, path.name) and _unlink(tmp):
            removed.append(tmp)
    for partial in path.parent.glob(f"{glob.escape(path.name)}.*.partial"):
        if _older_than(partial, 3600) and _unlink(partial):
            removed.append(partial)
    return removed


def _abandoned(tmp: Path, name: str) -> bool:
    rest = tmp.name[len(name) + 2 :]  # after ".NAME."
    if rest not in ("tmp", "partial") and not rest.endswith((".tmp", ".partial")):
        return False
    owner = _TEMP_OWNER.fullmatch(rest)
    if owner is None:  # an older scheme: no owner to ask
        return _older_than(tmp, 3600)
    host, pid = owner.group(1), int(owner.group(2))
    return host == _HOST and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def few(items: list[str], limit: int = 4) -> str:
    """The first ``limit`` of ``items``, comma-separated, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def one_line(err: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), for one-line errors."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


@contextlib.contextmanager
def new_folders(path: str | Path) -> Iterator[Path]:
    """Make the folder ``path`` and its missing parents; if the block fails, remove those of them
    it left empty, so that a failed download or run leaves no empty folder behind."""
    path = Path(path)
    made = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty: the failure left something worth keeping in it
                break
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block succeeds it is synced to disk and
    renamed onto ``path``, on any error it is removed (the old ``path``, if any, stays).

    A device or a named pipe (``/dev/null``, ``/dev/full``, a FIFO), and any path under
    ``/dev`` or ``/proc`` (``/dev/stdout``), is yielded itself and written in place: a rename
    would replace it with a regular file. A symbolic link is replaced, and the file it pointed
    to is left as it was (a ``last.ckpt`` linked to a ``best.ckpt`` never overwrites it).

    Raises:
        UserError: the write failed (a read-only folder, a full disk): one line naming ``path``.
    """
    path = Path(path)
    special = path.absolute().parts[1:2] in (("dev",), ("proc",))
    if special or (path.exists() and not path.is_file() and not path.is_dir()):  # a device, a pipe
        try:
            yield path
        except OSError as err:
            raise UserError(
                f"{path}: could not be written ({err.strerror or one_line(err)})"
            ) from None
        return
    try:
        tmp = temp_beside(path)
    except OSError as err:
        raise UserError(f"{path}: cannot write here ({err.strerror or err})") from None
    try:
        yield tmp
        commit(tmp, path, mode)
    except OSError as err:
        raise UserError(
            f"{path}: could not be written ({err.strerror or one_line(err)}); nothing was left "
            "under that name"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, path: Path, mode: int = 0o644) -> None:
    """Sync ``tmp`` to disk, then rename it onto ``path``: the bytes are there before the name."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically, with ``\\n`` line ends."""
    write_bytes(path, text.encode("utf-8"))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    return file_digest(path, "sha256")


def mismatch(
    path: str | Path, size: int | None = None, digests: Mapping[str, str | None] | None = None
) -> str | None:
    """Why ``path`` is not the expected file, or None when its size and every known digest
    (``{"sha256": hex, "md5": hex}``; None entries are skipped) match."""
    found = Path(path).stat().st_size
    if size is not None and found != size:
        return f"{found:,} bytes, expected {size:,}"
    for algorithm, expected in (digests or {}).items():
        if expected is not None and (digest := file_digest(path, algorithm)) != expected:
            return f"{algorithm} {digest[:16]}..., expected {expected[:16]}..."
    return None


def fetch(
    url: str,
    dst: Path,
    *,
    max_bytes: int | None = None,
    progress: bool = True,
    error: type[UserError] = DataError,
) -> None:
    """Stream ``url`` into ``dst`` (a temporary path the caller owns), stopping as soon as the body
    passes ``max_bytes``; failures are one ``error`` line naming the URL (never a request with
    ``RNN_ZOO_OFFLINE``)."""
    if offline():
        raise error(f"{url}: not downloaded, RNN_ZOO_OFFLINE is set")
    try:
        with urlopen(Request(url, headers={"User-Agent": "rnn-zoo"}), timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if max_bytes is not None and total is not None and total > max_bytes:
                raise error(f"{url}: download rejected ({total:,} bytes, expected {max_bytes:,})")
            _copy(response, dst, url, max_bytes, total, progress, error)
    except HTTPError as err:
        raise error(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except URLError as err:
        raise error(f"{url}: download failed ({err.reason})") from None
    except (OSError, ValueError) as err:
        raise error(f"{url}: download failed ({one_line(err)})") from None


def _copy(response, dst: Path, url: str, max_bytes, total, progress: bool, error) -> None:
    from tqdm import tqdm  # tqdm comes with Lightning; imported here, where a bar is drawn

    done = 0
    show = progress and sys.stderr.isatty()
    with (
        open(dst, "wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, disable=not show) as bar,
    ):
        while chunk := response.read(CHUNK):
            done += len(chunk)
            if max_bytes is not None and done > max_bytes:
                raise error(
                    f"{url}: download rejected (more than the expected {max_bytes:,} bytes)"
                )
            out.write(chunk)
            bar.update(len(chunk))


@contextlib.contextmanager
def verified_download(
    url: str,
    dst: Path,
    *,
    size: int | None = None,
    digests: Mapping[str, str | None] | None = None,
    keep: bool = True,
    progress: bool = True,
    error: type[UserError] = DataError,
) -> Iterator[Path]:
    """Download ``url`` to a temporary file beside ``dst``, check its size and digests, and yield
    it; when the block succeeds it becomes ``dst`` (``keep``) or is removed. A download that fails
    or does not match never takes ``dst``'s name.

    Raises:
        ``error``: one line naming the URL (failed, or rejected with the reason).
    """
    if offline():
        raise error(
            f"{url}: not downloaded, RNN_ZOO_OFFLINE is set; unset it or put a copy at {dst}"
        )
    tmp = temp_beside(dst)
    try:
        fetch(url, tmp, max_bytes=size, progress=progress, error=error)
        if problem := mismatch(tmp, size, digests):
            raise error(f"{url}: download rejected ({problem})")
        yield tmp
        if keep:
            commit(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def reuse_or_download(
    url: str,
    path: Path,
    *,
    size: int | None = None,
    digests: Mapping[str, str | None] | None = None,
    keep: bool = True,
    progress: bool = True,
) -> Iterator[tuple[Path, str]]:
    """A verified archive to read: ``path`` when it is there and matches, else a download of
    ``url`` (:func:`verified_download`), kept at ``path`` once the block succeeds if ``keep``.

    Yields:
        The file to read, and how errors should name it (its path, or the URL).
    """
    if path.is_file() and mismatch(path, size, digests) is None:
        try:
            yield path, str(path)
        except DataError as err:  # with no checksum, reading it whole is the check
            raise DataError(f"{err}; delete it to download it again") from None
        if not keep:
            path.unlink(missing_ok=True)
        return
    with verified_download(
        url, path, size=size, digests=digests, keep=keep, progress=progress
    ) as tmp:
        yield tmp, url


def shipped(name: str) -> Path:
    """A folder shipped with rnn-zoo (``recipes``, ``checkpoints``): inside the installed package
    (a wheel puts it at ``zoo/<name>``), else at the top of the git checkout."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name


def check_folder(folder: str | Path, flag: str) -> Path:
    """``folder`` exists (or can be made) and takes new files.

    Raises:
        UserError: one line naming the folder.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"{existing}: {flag} needs a folder here, this is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: {flag} cannot write in this folder (permission denied)")
    return folder
