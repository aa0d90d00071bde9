"""Turn the Tux Paint stamps (Debian's ``tuxpaint-stamps-default``) into an MS-COCO captions set.

Each stamp is a picture ``usr/share/tuxpaint/stamps/<category>/.../NAME.png`` (or ``NAME.svg``)
with ``NAME.txt`` beside it: line 1 is the English caption, a ``fr.utf8=`` line the French one.
Only pictures and text are read from the package (it is 161 MB, almost all narration audio).

Output, read by ``pycocotools.coco.COCO`` or ``torchvision.datasets.CocoCaptions``::

    images/<category>__..__NAME.png
    annotations/captions_train.json, captions_val.json, captions_test.json

- Pictures are flattened onto white (RGBA -> RGB) and shrunk so that the longest side is at most
  ``max_side`` (224 by default; 0 keeps the original size).
- One annotation per picture: ``caption`` is the English line, ``caption_fr`` the French one (or
  null); each ``images`` entry keeps the stamp path under ``source``.
- Split: 80/10/10 by the SHA-1 of a path, with every family of stamps on one side
  (:func:`datamodules.prepare.families.split_stamps`): the same thing filled and outlined, upper and lower case, in two sizes
  or numbered (``frog`` / ``frog-1``), or under the same caption, is one group, split by its
  first path. A stamp alone keeps the split of its own path.
- A stamp with both ``NAME.png`` and ``NAME.svg`` uses the PNG. SVG-only stamps are converted
  with cairosvg or ``rsvg-convert`` when one is installed, else skipped and counted.
- Skipped and counted, with a one-line warning naming the file: a caption file that is empty or
  whose first line is not English (``skipped_bad_caption``), a picture that does not decode
  (``skipped_corrupt``). Counted only: pictures without a caption file, such as the ``*_mirror``
  variants (``skipped_uncaptioned``), and caption files without a picture
  (``skipped_orphan_caption``).

Usage::

    rnn-zoo prepare tuxpaint --out data/tuxpaint [--deb tuxpaint-stamps-default_*.deb]
"""

from __future__ import annotations

import importlib
import io
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

from datamodules.prepare import PrepareError
from datamodules.prepare.families import split_stamps
from datamodules.prepare.shapes import SPLITS, remove_annotations, save_png, write_coco

PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps/"
PICTURE_SUFFIXES = (".png", ".svg")
DEFAULT_MAX_SIDE = 224
LICENSE = {
    "id": 1,
    "name": "GPL-2.0-or-later",
    "url": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
}
# A translated line such as "fr.utf8=Un koala." or "pt_BR.utf8=...".
_LOCALE_LINE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2})?(@\w+)?\.(utf8|UTF-8)=")
_FRENCH_PREFIX = "fr.utf8="

log = logging.getLogger(__name__)
SvgConverter = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Stamp:
    """A captioned picture: its path under the stamps folder and its captions."""

    path: str
    caption: str
    caption_fr: str | None


def parse_caption(text: str) -> tuple[str | None, str | None]:
    """Return the (English, French) captions of a stamp's ``.txt``; None where missing."""
    lines = [line.strip() for line in text.splitlines()]
    english = lines[0] if lines and lines[0] and not _LOCALE_LINE.match(lines[0]) else None
    french = next((line for line in lines if line.startswith(_FRENCH_PREFIX)), "")
    return english, french[len(_FRENCH_PREFIX) :].strip() or None


# --- reading the package --------------------------------------------------------------------------


def download_deb(dest_dir: Path) -> Path:
    """Fetch the stamps package with ``apt-get download`` into ``dest_dir``; return its path."""
    try:
        result = subprocess.run(
            ["apt-get", "download", PACKAGE], cwd=dest_dir, capture_output=True, text=True
        )
    except FileNotFoundError as error:
        raise PrepareError(f"apt-get not found: cannot download {PACKAGE}") from error
    debs = sorted(dest_dir.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        reason = (result.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise PrepareError(f"apt-get download {PACKAGE} failed (run apt-get update?): {reason}")
    return debs[0]


def _deb_field(deb: Path, field: str) -> str:
    result = subprocess.run(
        ["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True
    )
    return result.stdout.strip()


def _read_members(stream: IO[bytes]) -> dict[str, bytes]:
    """Read the pictures and ``.txt`` files under the stamps folder from a tar stream."""
    files = {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith(STAMPS_DIR):
                if name.endswith((*PICTURE_SUFFIXES, ".txt")):
                    files[name[len(STAMPS_DIR) :]] = tar.extractfile(member).read()
    return files


def read_stamp_files(deb: Path) -> dict[str, bytes]:
    """Return the stamps' pictures and captions in ``deb``, keyed by path under the stamps folder.

    Streams ``dpkg-deb --fsys-tarfile`` (the Python form of ``| tar -x --wildcards '*.png' ...``).

    Raises:
        PrepareError: If ``deb`` is missing, is not a Debian package, or holds no stamps.
    """
    if not deb.is_file():
        raise PrepareError(f"{deb}: no such .deb file")
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=errors
            )
        except FileNotFoundError as error:
            raise PrepareError(f"{deb}: dpkg-deb not found (install dpkg)") from error
        with proc:
            try:
                files = _read_members(proc.stdout)
            except tarfile.TarError:
                files = {}
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        reason = message.splitlines()[-1] if message else f"dpkg-deb exit {proc.returncode}"
        raise PrepareError(f"{deb}: not a readable .deb: {reason}")
    if not any(name.endswith(".txt") for name in files):
        raise PrepareError(f"{deb}: no Tux Paint stamps under {STAMPS_DIR}")
    return files


def collect_stamps(files: dict[str, bytes]) -> tuple[list[Stamp], Counter[str]]:
    """Pair each caption file with its picture (PNG before SVG), sorted by path.

    Returns:
        The captioned stamps, and counts of what was skipped (``skipped_bad_caption``,
        ``skipped_uncaptioned``, ``skipped_orphan_caption``, ``skipped_svg_duplicate``: the SVG
        of a stamp that also has a PNG).
    """
    stamps, skipped = [], Counter[str]()
    for name in sorted(n for n in files if n.endswith(".txt")):
        stem = name[: -len(".txt")]
        picture = next((stem + s for s in PICTURE_SUFFIXES if stem + s in files), None)
        english, french = parse_caption(files[name].decode("utf-8", "replace"))
        if picture is None:
            skipped["skipped_orphan_caption"] += 1
        elif english is None:
            log.warning("skipped %s%s: empty or no English caption line", STAMPS_DIR, name)
            skipped["skipped_bad_caption"] += 1
        else:
            stamps.append(Stamp(picture, english, french))
    skipped["skipped_svg_duplicate"] = sum(
        s.path.endswith(".png") and s.path[:-4] + ".svg" in files for s in stamps
    )
    stems = {name[: -len(".txt")] for name in files if name.endswith(".txt")}
    skipped["skipped_uncaptioned"] = sum(
        1 for n in files if n.endswith(PICTURE_SUFFIXES) and n.rsplit(".", 1)[0] not in stems
    )
    return stamps, skipped


# --- pictures -------------------------------------------------------------------------------------


def find_svg_converter() -> SvgConverter | None:
    """Return an SVG-to-PNG function from cairosvg or ``rsvg-convert``, or None if neither is here."""
    try:
        cairosvg = importlib.import_module("cairosvg")
        return lambda data: cairosvg.svg2png(bytestring=data)
    except (ImportError, OSError):  # OSError: the module is there but libcairo is not
        pass
    if shutil.which("rsvg-convert"):
        return lambda data: (
            subprocess.run(
                ["rsvg-convert", "--format", "png"], input=data, capture_output=True, check=True
            ).stdout
        )
    return None


def flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite any transparency (RGBA, LA, palette) onto a white background; return RGB."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def load_picture(data: bytes, max_side: int) -> Image.Image:
    """Decode PNG bytes, flatten onto white and shrink to ``max_side`` (0: keep the size).

    Raises:
        OSError, ValueError, SyntaxError: If the bytes are not a readable picture.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = flatten_on_white(image)
    if max_side > 0:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def _convert(
    stamp: Stamp, data: bytes, svg: SvgConverter | None, max_side: int, counts: Counter[str]
) -> Image.Image | None:
    """Return the stamp's flattened picture, or None (counted) for an SVG or unreadable one."""
    is_svg = stamp.path.endswith(".svg")
    if is_svg and svg is None:
        counts["skipped_svg"] += 1
        return None
    try:
        return load_picture(svg(data) if is_svg else data, max_side)
    except (OSError, ValueError, SyntaxError, subprocess.CalledProcessError) as error:
        log.warning("skipped %s%s: unreadable picture (%s)", STAMPS_DIR, stamp.path, error)
        counts["skipped_corrupt"] += 1
        return None


# --- the command ----------------------------------------------------------------------------------


def _file_name(stamp_path: str) -> str:
    """``"animals/mammals/koala.svg"`` -> ``"animals__mammals__koala.png"`` (COCO names are flat)."""
    return stamp_path.rsplit(".", 1)[0].replace("/", "__") + ".png"


def _write_pictures(
    stamps: Sequence[Stamp], files: dict[str, bytes], out_dir: Path, max_side: int
) -> tuple[dict[str, list[Any]], dict[str, list[Any]], Counter[str]]:
    """Save each stamp's picture; return the COCO images and annotations per split, and counts."""
    svg = find_svg_converter()
    images: dict[str, list[Any]] = {split: [] for split in SPLITS}
    annotations: dict[str, list[Any]] = {split: [] for split in SPLITS}
    counts = Counter[str]()
    splits = split_stamps(stamps)
    for stamp in stamps:
        picture = _convert(stamp, files[stamp.path], svg, max_side, counts)
        if picture is None:
            continue
        counts["pictures"] += 1
        image_id, file_name = counts["pictures"], _file_name(stamp.path)
        split = splits[stamp.path]
        save_png(picture, out_dir / "images" / file_name)
        images[split].append(_image_entry(image_id, file_name, picture, stamp))
        # One caption per picture, so the annotation shares the image's id.
        annotations[split].append(
            {"id": image_id, "image_id": image_id, "caption": stamp.caption}
            | {"caption_fr": stamp.caption_fr}
        )
    return images, annotations, counts


def _image_entry(
    image_id: int, file_name: str, picture: Image.Image, stamp: Stamp
) -> dict[str, Any]:
    return {
        "id": image_id,
        "file_name": file_name,
        "width": picture.width,
        "height": picture.height,
        "license": LICENSE["id"],
        "source": stamp.path,
    }


def prepare_tuxpaint(
    out_dir: Path, deb: Path | None = None, max_side: int = DEFAULT_MAX_SIDE
) -> dict[str, int]:
    """Write the Tux Paint stamps as an MS-COCO captions data set.

    Args:
        out_dir: Output folder; gets ``images/`` and ``annotations/captions_<split>.json``.
        deb: The ``tuxpaint-stamps-default`` package; None downloads it with ``apt-get download``
            into a temporary folder.
        max_side: Longest picture side after shrinking; 0 keeps the original size.

    Returns:
        Counts: ``pictures``, ``captions``, ``captions_fr``, ``train``/``val``/``test`` and the
        ``skipped_*`` counts described in the module docstring.

    Raises:
        PrepareError: If the package is missing, unreadable or holds no stamps.
    """
    if deb is None:
        with tempfile.TemporaryDirectory(prefix="tuxpaint-") as tmp:
            return prepare_tuxpaint(out_dir, download_deb(Path(tmp)), max_side)
    out_dir, deb = Path(out_dir), Path(deb)
    files = read_stamp_files(deb)
    stamps, counts = collect_stamps(files)
    remove_annotations(out_dir)
    images, annotations, written = _write_pictures(stamps, files, out_dir, max_side)
    counts.update(written)
    if counts["skipped_svg"]:
        print(
            f"skipped {counts['skipped_svg']} SVG stamps: no SVG converter (cairosvg or "
            "rsvg-convert) installed",
            file=sys.stderr,
        )
    info = {
        "description": "Tux Paint stamps with their English (and French) captions",
        "version": _deb_field(deb, "Version"),
        "source": f"{_deb_field(deb, 'Package')} {deb.name}",
        "max_side": max_side,
        "split": "families and captions grouped; sha1(first path of a group) % 100: < 80 train, "
        "< 90 val, else test",
    }
    write_coco(out_dir, info, [LICENSE], images, annotations)
    return _summary(counts, images, annotations)


def _summary(
    counts: Counter[str], images: dict[str, list[Any]], annotations: dict[str, list[Any]]
) -> dict[str, int]:
    every = [a for split in SPLITS for a in annotations[split]]
    summary = {
        "pictures": counts["pictures"],
        "captions": len(every),
        "captions_fr": sum(a["caption_fr"] is not None for a in every),
        **{split: len(images[split]) for split in SPLITS},
    }
    keys = (
        "skipped_svg",
        "skipped_bad_caption",
        "skipped_corrupt",
        "skipped_uncaptioned",
        "skipped_orphan_caption",
        "skipped_svg_duplicate",
    )
    return summary | {key: counts[key] for key in keys}
