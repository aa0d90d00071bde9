"""MS-COCO captions: fetch the official archives and lay them out for
:class:`~datamodules.coco_captions.CocoCaptionsDataModule`::

    rnn-zoo prepare coco --out data/coco [--year 2014|2017] [--mirror URL] [--keep-archives]

    out/train2014/, out/val2014/          the pictures, as in the archives
    out/annotations/captions_{train,val}2014.json   the caption files, as in the archive
    out/annotations/captions_{train,val}.json       the same with each ``file_name`` prefixed by
                                                    its folder ("train2014/COCO_train2014_...jpg")
    out/coco.json                          written last: the year and counts of a finished run
    out/downloads/                         archives, kept only with ``keep_archives``

Train with ``--data.data_dir data/coco --data.image_dir .`` (COCO's val as the validation split;
COCO publishes no test captions, so there is no test split), or on Karpathy's splits with
``--data.data_dir data/coco --data.karpathy_split dataset_coco.json`` (his file, from
``caption_datasets.zip``, is not fetched here). 2017 has the same pictures and captions as 2014,
split differently (val2017 is 5k of val2014's pictures).

Every archive is downloaded (:func:`zoo.files.verified_download`) to a temporary file, checked
against :data:`SOURCES` (the md5 sums the COCO site's archives have, as recorded by many download
scripts, e.g. PaddleDetection's; the size where known) and extracted into a temporary folder that
is renamed into place once complete, so a failure leaves nothing half-written and a rerun skips
every part already there. Zip members are CRC-checked as they are extracted; a member path that
leaves its folder is refused. ``$RNN_ZOO_COCO_MIRROR`` (or ``mirror``) replaces the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zoo.errors import DataError, UserError
from zoo.files import new_folders, one_line, reuse_or_download, temp_beside, write_text

HOST = "http://images.cocodataset.org"
MIRROR_ENV = "RNN_ZOO_COCO_MIRROR"  # a base URL replacing HOST (a proxy, a local copy)
MANIFEST = "coco.json"


@dataclass(frozen=True)
class Archive:
    """One archive under the host, e.g. ``zips/train2014.zip``; what it must match (None where
    unknown): its md5 and its size in bytes."""

    path: str
    md5: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


#: year -> the training pictures, validation pictures and annotations archives.
SOURCES: dict[str, dict[str, Archive]] = {
    "2014": {
        "train": Archive("zips/train2014.zip", md5="0da8c0bd3d6becc4dcb32757491aca88"),
        "val": Archive("zips/val2014.zip", md5="a3d79f5ed8d289b7a7554ce06a5782b3"),
        "annotations": Archive(
            "annotations/annotations_trainval2014.zip",
            md5="0a379cfc70b0e71301e0f377548639bd",
            size=252_872_794,
        ),
    },
    "2017": {
        "train": Archive("zips/train2017.zip", md5="cced6f7f71b7629ddf16f17bbcfab6b2"),
        "val": Archive("zips/val2017.zip", md5="442b8da7639aecaf257c1dceb8ba8c80"),
        "annotations": Archive(
            "annotations/annotations_trainval2017.zip", md5="f4bbac642086de4f52a3fdda2de5fa2c"
        ),
    },
}


def download_coco(
    out_dir: str | Path,
    year: str = "2014",
    mirror: str | None = None,
    *,
    keep_archives: bool = False,
    progress: bool = True,
    sources: Mapping[str, Mapping[str, Archive]] | None = None,
) -> dict[str, int]:
    """Download and extract COCO ``year`` into ``out_dir`` (see the module docstring).

    Returns:
        Pictures and captions per split: ``{"train_images": ..., "train_captions": ..., ...}``.

    Raises:
        DataError: one line naming the URL or file: a failed download, a size or checksum
            mismatch, an unreadable or unsafe archive, or a caption file missing from it.
        UserError: an unknown year.
    """
    sources = SOURCES if sources is None else sources
    if year not in sources:
        raise UserError(f"year must be one of {', '.join(sources)}, not {year!r}")
    out, archives = Path(out_dir), sources[year]
    if (done := _finished(out, year)) is not None:
        return done
    fetch = _Fetcher((mirror or os.environ.get(MIRROR_ENV) or HOST).rstrip("/"), out, progress)
    with new_folders(fetch.downloads):  # removed again where a failure leaves them empty
        for split in ("train", "val"):
            folder = out / f"{split}{year}"
            if not folder.is_dir():  # renamed into place only once complete
                with fetch(archives[split], keep_archives) as (path, origin):
                    _extract(path, origin, f"{split}{year}/", out)
        counts = {}
        for split in ("train", "val"):
            name = f"annotations/captions_{split}{year}.json"
            if not (out / name).is_file():
                with fetch(archives["annotations"], keep_archives) as (path, origin):
                    _extract(path, origin, "annotations/captions_", out)
            counts.update(_write_captions(out, split, year))
        write_text(out / MANIFEST, json.dumps({"year": year, **counts}, indent=1) + "\n")
    if not keep_archives:
        with contextlib.suppress(OSError):  # only when empty
            fetch.downloads.rmdir()
    return counts


def _finished(out: Path, year: str) -> dict[str, int] | None:
    """The counts of a finished run of the same year whose outputs are all there, else None."""
    try:
        record = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = [out / f"{s}{year}" for s in ("train", "val")]
    wanted += [out / f"annotations/captions_{s}.json" for s in ("train", "val")]
    if not isinstance(record, dict) or record.pop("year", None) != year:
        return None
    return record if all(path.exists() for path in wanted) else None


def _write_captions(out: Path, split: str, year: str) -> dict[str, int]:
    """``captions_{split}.json``: the year's file with ``file_name`` s relative to ``out``."""
    source = out / f"annotations/captions_{split}{year}.json"
    try:
        coco = json.loads(source.read_text(encoding="utf-8"))
        for image in coco["images"]:
            image["file_name"] = f"{split}{year}/{image['file_name']}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{source}: not a COCO captions file ({err})") from None
    write_text(out / f"annotations/captions_{split}.json", json.dumps(coco))
    return {f"{split}_images": len(coco["images"]), f"{split}_captions": len(coco["annotations"])}


# --------------------------------------------------------------------------------- downloads
class _Fetcher:
    """Verified archives under ``out/downloads``: a kept one that matches is reused; else one is
    downloaded, checked, handed to the caller, then kept or deleted."""

    def __init__(self, host: str, out: Path, progress: bool) -> None:
        self.host, self.downloads, self.progress = host, out / "downloads", progress

    def log(self, message: str) -> None:
        if self.progress:
            print(f"coco: {message}", file=sys.stderr)

    def __call__(self, archive: Archive, keep: bool) -> contextlib.AbstractContextManager:
        url = f"{self.host}/{archive.path}"
        path = self.downloads / archive.name
        if not path.is_file():
            self.log(f"downloading {url}")
        return reuse_or_download(
            url, path, size=archive.size, digests={"md5": archive.md5}, keep=keep,
            progress=self.progress,
        )  # fmt: skip


# -------------------------------------------------------------------------------- extraction
def _extract(archive: Path, origin: str, prefix: str, out: Path) -> None:
    """Extract the members whose names start with ``prefix`` into a temporary folder, then move
    each top-level entry (a picture folder, or the caption files) into ``out``."""
    tmp = temp_beside(out / ".extract")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix)]
            if not members:
                raise DataError(f"{origin}: has no member {prefix}*")
            for member in members:
                if member.filename.startswith("/") or ".." in PurePosixPath(member.filename).parts:
                    raise DataError(f"{origin}: member {member.filename!r} leaves its folder")
                zf.extract(member, tmp)  # reads it whole: a bad CRC raises BadZipFile
        top = prefix.split("/")[0]
        if prefix.endswith("/"):  # a picture folder: one rename
            os.replace(tmp / top, out / top)
        else:
            (out / top).mkdir(parents=True, exist_ok=True)
            for path in sorted((tmp / top).iterdir()):
                os.replace(path, out / top / path.name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise DataError(f"{origin}: not a complete, readable zip ({one_line(err)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
