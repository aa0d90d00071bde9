"""Reading captions in the MS-COCO layout (``pycocotools``) or Karpathy's split file, checked:
empty captions skipped and counted, every captioned picture opened at setup."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from datamodules.images import picture_problem
from zoo.errors import DataError

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-case words and numbers; punctuation is dropped ("A dog's ball." -> a dog's ball)."""
    return _WORD.findall(caption.lower())


@dataclass
class SplitData:
    """One split: its images and their tokenised captions (empty ones already skipped)."""

    image_ids: list[int]
    paths: dict[int, Path]
    captions: dict[int, list[str]]  # raw text, for references
    tokens: dict[int, list[list[str]]]
    skipped_empty: int = 0
    skipped_images: int = 0


def read_coco(path: Path, image_dir: Path) -> tuple[list[dict], list[dict]]:
    from pycocotools.coco import COCO

    if not path.exists():
        raise DataError(f"{path}: no such annotation file; expected annotations/captions_*.json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a COCO captions JSON file ({err})") from None
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: malformed COCO captions file (missing {err})") from None
    images = [
        {"id": img["id"], "path": image_dir / img["file_name"]}
        for img in coco.dataset.get("images", [])
    ]
    anns = [{"image_id": a["image_id"], "caption": a.get("caption")} for a in coco.anns.values()]
    known = {img["id"] for img in images}
    for ann in anns:
        if ann["image_id"] not in known:
            raise DataError(f"{path}: a caption names image id {ann['image_id']}, not listed")
    return images, anns


def read_karpathy(path: Path, data_dir: Path, split: str) -> tuple[list[dict], list[dict]]:
    if not path.exists():
        raise DataError(f"{path}: no such file; pass Karpathy's dataset_coco.json")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as err:
        raise DataError(f"{path}: not a Karpathy split file ({err})") from None
    wanted = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}[split]
    images, anns = [], []
    for entry in entries:
        if entry.get("split") not in wanted:
            continue
        image_id = entry.get("cocoid", entry.get("imgid"))
        images.append({"id": image_id, "path": data_dir / entry["filepath"] / entry["filename"]})
        anns += [{"image_id": image_id, "caption": s.get("raw")} for s in entry["sentences"]]
    return images, anns


def read_split(
    images: list[dict], anns: list[dict], check: str = "exists", skip_bad: bool = False
) -> SplitData:
    """Group captions by image, tokenise them and skip (and count) empty ones; check that each
    captioned picture reads (:func:`picture_problem` with ``check``).

    Raises:
        DataError: an annotated picture that is missing or unreadable (one line naming it),
            unless ``skip_bad``: then it is left out and counted in ``skipped_images``.
    """
    data = SplitData([img["id"] for img in images], {}, {}, {})
    for img in images:
        data.paths[img["id"]] = img["path"]
        data.captions[img["id"]], data.tokens[img["id"]] = [], []
    for ann in anns:
        text = ann["caption"] if isinstance(ann["caption"], str) else ""
        words = tokenize(text)
        if not words:
            data.skipped_empty += 1
            continue
        data.captions[ann["image_id"]].append(text.strip())
        data.tokens[ann["image_id"]].append(words)
    data.image_ids = [i for i in data.image_ids if data.tokens[i]]  # pictures with a caption
    bad = set()
    for image_id in data.image_ids:
        if problem := picture_problem(data.paths[image_id], check):
            if not skip_bad:
                raise DataError(
                    f"{data.paths[image_id]}: {problem.splitlines()[0]} (image id {image_id}); "
                    "fix or remove it, or set skip_bad_images to leave such pictures out"
                )
            bad.add(image_id)
    data.image_ids = [i for i in data.image_ids if i not in bad]
    data.skipped_images = len(bad)
    return data
