"""Generate the "shapes" captioning data set in the MS-COCO captions layout.

Each picture is a plain white square with one or two coloured shapes placed on a 3x3 grid, and its
five reference captions say what is drawn ("a red circle on the left", "a blue square above a
yellow triangle"), so a test can prove that a caption depends on the pixels. The ground truth is
kept in each ``images`` entry under the extra key ``"objects"``:
``[{"shape", "color", "bbox": [x, y, w, h], "cell": [row, col]}]``.

Layout written to ``--out`` (the same as MS-COCO's captions, read by ``pycocotools.coco.COCO`` or
``torchvision.datasets.CocoCaptions``)::

    images/shapes_000001.png ...
    annotations/captions_train.json, captions_val.json, captions_test.json

The output is byte-identical for a given seed, and each picture depends only on
``(seed, split, index)``, so growing ``--train`` leaves the val and test pictures unchanged.

Usage::

    rnn-zoo prepare shapes --out data/shapes --train 2000 --val 200 --test 200 --seed 0
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from datamodules.prepare import PrepareError
from zoo.files import atomic_path

SPLITS = ("train", "val", "test")
SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 20),
}
BACKGROUND = (255, 255, 255)
# Where a lone shape sits, by its (row, col) in the 3x3 grid.
CELL_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "in the top left corner",
    (0, 1): "at the top",
    (0, 2): "in the top right corner",
    (1, 0): "on the left",
    (1, 1): "in the middle",
    (1, 2): "on the right",
    (2, 0): "in the bottom left corner",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right corner",
}
# Relation of the first shape to the second, and its inverse.
RELATIONS: dict[str, str] = {
    "above": "below",
    "below": "above",
    "to the left of": "to the right of",
    "to the right of": "to the left of",
}
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 24, 4096  # a 4096 px picture is 50 MB in memory
LICENSE = {"id": 1, "name": "CC0-1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


@dataclass(frozen=True)
class ShapeObject:
    """One drawn shape: its kind, colour name, grid cell and COCO box ``[x, y, w, h]``."""

    shape: str
    color: str
    cell: tuple[int, int]
    bbox: tuple[int, int, int, int]

    def to_json(self) -> dict[str, Any]:
        """Return the ground-truth record stored under the image's ``"objects"`` key."""
        return {
            "shape": self.shape,
            "color": self.color,
            "bbox": list(self.bbox),
            "cell": list(self.cell),
        }


# --- writing the COCO layout (shared with datamodules.prepare.tuxpaint) ---------------------------------


def save_png(image: Image.Image, path: Path) -> None:
    """Save ``image`` as a PNG at ``path`` via a temporary file and ``os.replace``."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as UTF-8 JSON at ``path`` via a temporary file and ``os.replace``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def annotation_path(out_dir: Path, split: str) -> Path:
    """Return ``out_dir/annotations/captions_<split>.json``."""
    return out_dir / "annotations" / f"captions_{split}.json"


def remove_annotations(out_dir: Path) -> None:
    """Delete old caption files first, so that a run cut short leaves no valid-looking data set."""
    for split in SPLITS:
        annotation_path(out_dir, split).unlink(missing_ok=True)


def write_coco(
    out_dir: Path,
    info: dict[str, Any],
    licenses: list[dict[str, Any]],
    images: dict[str, list[dict[str, Any]]],
    annotations: dict[str, list[dict[str, Any]]],
) -> None:
    """Write ``annotations/captions_{train,val,test}.json``; call it after every image is saved.

    Args:
        out_dir: Data set folder.
        info: The COCO ``info`` record (the split name is added per file).
        licenses: The COCO ``licenses`` list.
        images: Per split, the ``images`` entries.
        annotations: Per split, the ``annotations`` entries.
    """
    for split in SPLITS:
        coco = {
            "info": {**info, "split": split},
            "licenses": licenses,
            "images": images[split],
            "annotations": annotations[split],
        }
        write_json(coco, annotation_path(out_dir, split))


# --- the generator --------------------------------------------------------------------------------


def _pick(rng: random.Random, options: Sequence[Any]) -> Any:
    # Only Random.random() is guaranteed to give the same sequence in every Python version.
    return options[int(rng.random() * len(options))]


def _uniform_int(rng: random.Random, low: int, high: int) -> int:
    """Return an int in ``[low, high]`` drawn with ``rng.random()`` only."""
    return low + int(rng.random() * (high - low + 1))


def _cell_bounds(index: int, image_size: int) -> tuple[int, int]:
    """Return the pixel range ``[start, end)`` of grid row or column ``index``."""
    return index * image_size // 3, (index + 1) * image_size // 3


def _place(rng: random.Random, cell: tuple[int, int], image_size: int) -> tuple[int, int, int, int]:
    """Return a random square box ``[x, y, w, h]`` lying wholly inside ``cell``."""
    (y0, y1), (x0, x1) = _cell_bounds(cell[0], image_size), _cell_bounds(cell[1], image_size)
    span = min(x1 - x0, y1 - y0)
    side = _uniform_int(rng, int(span * 0.55), int(span * 0.8))
    x = x0 + _uniform_int(rng, 0, x1 - x0 - side)
    y = y0 + _uniform_int(rng, 0, y1 - y0 - side)
    return x, y, side, side


# Ordered pairs of distinct cells in one row or one column: their relation is unambiguous.
_PAIRS = [
    (a, b) for a in CELL_PHRASES for b in CELL_PHRASES if a != b and (a[0] == b[0] or a[1] == b[1])
]


def sample_objects(rng: random.Random, image_size: int) -> list[ShapeObject]:
    """Draw one or two shapes of distinct colours, in distinct cells of one row or column."""
    cells = [_pick(rng, list(CELL_PHRASES))] if rng.random() < 0.5 else list(_pick(rng, _PAIRS))
    palette = list(COLORS)
    objects = []
    for cell in cells:
        color = _pick(rng, palette)
        palette.remove(color)
        shape = _pick(rng, SHAPES)
        objects.append(ShapeObject(shape, color, cell, _place(rng, cell, image_size)))
    return objects


def relation(first: ShapeObject, second: ShapeObject) -> str:
    """Return where ``first`` is relative to ``second``: "above", "to the left of", ..."""
    (row_a, col_a), (row_b, col_b) = first.cell, second.cell
    if row_a == row_b:
        return "to the left of" if col_a < col_b else "to the right of"
    return "above" if row_a < row_b else "below"


def captions_for(objects: Sequence[ShapeObject]) -> list[str]:
    """Return five paraphrased reference captions describing ``objects``."""
    if len(objects) == 1:
        obj = objects[0]
        what, where = f"{obj.color} {obj.shape}", CELL_PHRASES[obj.cell]
        return [
            f"a {what} {where}",
            f"there is a {what} {where}",
            f"a {what} {where} of the picture",
            f"{where} is a {what}",
            f"one {what} {where} on a white background",
        ]
    first, second = objects
    a, b = f"{first.color} {first.shape}", f"{second.color} {second.shape}"
    rel = relation(first, second)
    return [
        f"a {a} {rel} a {b}",
        f"a {b} {RELATIONS[rel]} a {a}",
        f"a {a} {CELL_PHRASES[first.cell]} and a {b} {CELL_PHRASES[second.cell]}",
        f"there is a {a} {rel} a {b}",
        f"the {a} is {rel} the {b}",
    ]


def draw(objects: Sequence[ShapeObject], image_size: int) -> Image.Image:
    """Render ``objects`` on a white RGB square, without anti-aliasing (exact colours)."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for obj in objects:
        x, y, w, h = obj.bbox
        box = (x, y, x + w - 1, y + h - 1)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif obj.shape == "square":
            pen.rectangle(box, fill=fill)
        else:  # an upright triangle; its bbox centre lies inside it
            pen.polygon([(x, y + h - 1), (x + w - 1, y + h - 1), (x + (w - 1) / 2, y)], fill=fill)
    return image


def make_shapes(
    out_dir: Path,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 200,
    image_size: int = 64,
    seed: int = 0,
) -> dict[str, int]:
    """Write the shapes captioning data set in the MS-COCO captions layout.

    Args:
        out_dir: Output folder; gets ``images/`` and ``annotations/captions_<split>.json``.
        n_train: Number of training pictures.
        n_val: Number of validation pictures.
        n_test: Number of test pictures.
        image_size: Side of the square pictures in pixels (24 to 4096).
        seed: Seed; the output is byte-identical for the same arguments.

    Returns:
        Picture counts per split and the total number of captions (``"captions"``).

    Raises:
        PrepareError: If a size is out of range.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise PrepareError(
            f"{out_dir}: need image_size {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (got {image_size})"
        )
    if min(sizes.values()) < 0:
        raise PrepareError(f"{out_dir}: picture counts must be >= 0 (got {sizes})")
    if not any(sizes.values()):
        raise PrepareError(f"{out_dir}: no pictures asked for; give --train, --val or --test > 0")
    out_dir = Path(out_dir)
    remove_annotations(out_dir)
    images: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    annotations: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    image_id = caption_id = 0
    for split in SPLITS:
        for index in range(sizes[split]):
            image_id += 1
            # A string seed is hashed with SHA-512: stable across runs and Python versions.
            objects = sample_objects(random.Random(f"shapes/{seed}/{split}/{index}"), image_size)
            file_name = f"shapes_{image_id:06d}.png"
            save_png(draw(objects, image_size), out_dir / "images" / file_name)
            images[split].append(_image_entry(image_id, file_name, image_size, objects))
            for caption in captions_for(objects):
                caption_id += 1
                annotations[split].append(
                    {"id": caption_id, "image_id": image_id, "caption": caption}
                )
    info = {
        "description": "rnn-zoo shapes: generated pictures of coloured shapes with captions",
        "version": "1.0",
        "seed": seed,
        "image_size": image_size,
    }
    write_coco(out_dir, info, [LICENSE], images, annotations)
    return {**sizes, "captions": caption_id}


def _image_entry(
    image_id: int, file_name: str, image_size: int, objects: Sequence[ShapeObject]
) -> dict[str, Any]:
    return {
        "id": image_id,
        "file_name": file_name,
        "width": image_size,
        "height": image_size,
        "license": LICENSE["id"],
        "objects": [obj.to_json() for obj in objects],
    }
