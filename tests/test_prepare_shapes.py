"""Tests for datamodules.prepare.shapes: determinism, captions that agree with the pixels, COCO loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from datamodules.prepare import PrepareError, shapes
from datamodules.prepare.shapes import COLORS, SPLITS, make_shapes
from zoo.cli import main as cli_main

SIZES = {"n_train": 30, "n_val": 5, "n_test": 5}
TINY = Path(__file__).parent / "data" / "coco_tiny"
WHITE = (255, 255, 255)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _coco(root: Path) -> dict[str, dict]:
    return {s: json.loads((root / f"annotations/captions_{s}.json").read_text()) for s in SPLITS}


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    assert make_shapes(out, **SIZES, seed=3) == {"train": 30, "val": 5, "test": 5, "captions": 200}
    return out


def _images_with_captions(root: Path) -> list[tuple[dict, list[str], Image.Image]]:
    """(images entry, its five captions, RGB picture) for every picture of every split."""
    rows = []
    for coco in _coco(root).values():
        captions: dict[int, list[str]] = {}
        for ann in coco["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        for entry in coco["images"]:
            picture = Image.open(root / "images" / entry["file_name"]).convert("RGB")
            rows.append((entry, captions[entry["id"]], picture))
    return rows


def _centre(bbox: list[int]) -> tuple[int, int]:
    x, y, w, h = bbox
    return x + w // 2, y + h // 2


def _colour_name(rgb: tuple[int, int, int]) -> str:
    """Name a pixel by which channels are bright, independently of the generator's palette."""
    bright = tuple(channel > 128 for channel in rgb)
    names = {(1, 0, 0): "red", (0, 1, 0): "green", (0, 0, 1): "blue", (1, 1, 0): "yellow"}
    return names.get(bright, "other")


def _mentioned(caption: str, objects: list[dict]) -> list[dict]:
    """The objects in the order the caption names them (their colours are distinct)."""
    by_colour = {o["color"]: o for o in objects}
    return [by_colour[w] for w in caption.split() if w in COLORS]


def test_same_seed_gives_byte_identical_output(shapes_dir: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path, **SIZES, seed=3)
    assert _tree(tmp_path) == _tree(shapes_dir)


def test_another_seed_gives_other_pictures(shapes_dir: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path, **SIZES, seed=4)
    first = "images/shapes_000001.png"
    assert _tree(tmp_path)[first] != _tree(shapes_dir)[first]


def test_val_and_test_do_not_depend_on_train_size(shapes_dir: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path, n_train=3, n_val=5, n_test=5, seed=3)
    small, full = _coco(tmp_path), _coco(shapes_dir)
    for split in ("val", "test"):
        objects = [[i["objects"] for i in coco[split]["images"]] for coco in (small, full)]
        assert objects[0] == objects[1]


def test_loads_with_pycocotools_and_every_picture_exists(shapes_dir: Path) -> None:
    for split, count in zip(SPLITS, SIZES.values(), strict=True):
        coco = COCO(str(shapes_dir / f"annotations/captions_{split}.json"))
        assert len(coco.getImgIds()) == count
        for entry in coco.loadImgs(coco.getImgIds()):
            picture = Image.open(shapes_dir / "images" / entry["file_name"])
            assert (picture.mode, picture.size) == ("RGB", (entry["width"], entry["height"]))
            assert len(coco.getAnnIds(imgIds=[entry["id"]])) == 5


def test_ids_are_unique_across_splits(shapes_dir: Path) -> None:
    coco = _coco(shapes_dir).values()
    image_ids = [i["id"] for c in coco for i in c["images"]]
    caption_ids = [a["id"] for c in coco for a in c["annotations"]]
    assert len(set(image_ids)) == len(image_ids) == 40
    assert len(set(caption_ids)) == len(caption_ids) == 200


def test_caption_colours_and_shapes_are_the_drawn_pixels(shapes_dir: Path) -> None:
    for entry, captions, picture in _images_with_captions(shapes_dir):
        objects = entry["objects"]
        for caption in captions:
            words = caption.split()
            assert sorted(w for w in words if w in COLORS) == sorted(o["color"] for o in objects)
            named = [words[i + 1] for i, w in enumerate(words) if w in COLORS]
            assert named == [o["shape"] for o in _mentioned(caption, objects)], caption
        for obj in objects:
            assert _colour_name(picture.getpixel(_centre(obj["bbox"]))) == obj["color"]
            # Corners tell the shapes apart: a square fills them, a circle none, a triangle
            # (apex up) only the bottom ones.
            x, y, _, h = obj["bbox"]
            corners = tuple(_colour_name(picture.getpixel(p)) for p in [(x, y), (x, y + h - 1)])
            c = obj["color"]
            expected = {"square": (c, c), "circle": ("other", "other")}
            assert corners == expected.get(obj["shape"], ("other", c)), captions[0]


def _cell_words(bbox: list[int], size: int) -> set[str]:
    cx, cy = _centre(bbox)
    col, row = cx * 3 // size, cy * 3 // size
    words = {0: {"left"}, 2: {"right"}}.get(col, set()) | {0: {"top"}, 2: {"bottom"}}.get(
        row, set()
    )
    return words or {"middle"}


def _relation_holds(caption: str, first: dict, second: dict) -> bool | None:
    """Whether the caption's relation of ``first`` to ``second`` holds; None if it has none."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = first["bbox"], second["bbox"]
    checks = {
        " above ": ya + ha <= yb,
        " below ": yb + hb <= ya,
        " to the left of ": xa + wa <= xb,
        " to the right of ": xb + wb <= xa,
    }
    said = [holds for phrase, holds in checks.items() if phrase in caption]
    return said[0] if said else None


def test_position_words_agree_with_the_boxes(shapes_dir: Path) -> None:
    seen = set()
    for entry, captions, _ in _images_with_captions(shapes_dir):
        for caption in captions:
            mentioned = _mentioned(caption, entry["objects"])
            seen.add(len(mentioned))
            holds = _relation_holds(caption, *mentioned) if len(mentioned) == 2 else None
            if holds is not None:
                assert holds, caption
                continue
            # No relation: each "... and ..." part places its one object on the grid.
            for part, obj in zip(caption.split(" and "), mentioned, strict=True):
                said = set(part.split()) & {"left", "right", "top", "bottom", "middle"}
                assert said == _cell_words(obj["bbox"], entry["width"]), caption
    assert seen == {1, 2}


def test_shipped_coco_tiny_is_what_make_shapes_writes(tmp_path: Path) -> None:
    make_shapes(tmp_path, n_train=2, n_val=2, n_test=2, image_size=64, seed=0)
    hint = (
        "regenerate: rnn-zoo prepare shapes --out tests/data/coco_tiny --train 2 --val 2 --test 2"
    )
    assert _coco(tmp_path) == _coco(TINY), hint
    for name in sorted(p.name for p in (TINY / "images").iterdir()):
        made, shipped = Image.open(tmp_path / "images" / name), Image.open(TINY / "images" / name)
        assert made.tobytes() == shipped.tobytes(), hint


def test_torchvision_coco_captions_reads_coco_tiny() -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    data = datasets.CocoCaptions(
        str(TINY / "images"), str(TINY / "annotations/captions_train.json")
    )
    picture, captions = data[0]
    first_id = _coco(TINY)["train"]["images"][0]["id"]
    expected = [
        a["caption"] for a in _coco(TINY)["train"]["annotations"] if a["image_id"] == first_id
    ]
    assert len(data) == 2 and picture.size == (64, 64)
    assert captions == expected and len(captions) == 5


def test_interrupted_run_leaves_no_annotations(tmp_path: Path, monkeypatch) -> None:
    make_shapes(tmp_path, n_train=2, n_val=1, n_test=1)
    calls = []

    def failing_save(image: Image.Image, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_shapes(tmp_path, n_train=2, n_val=1, n_test=1)
    assert list((tmp_path / "annotations").iterdir()) == []


def test_main_writes_the_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--train", "1", "--val", "1", "--test", "1", "--seed", "5"]
    assert cli_main(["prepare", "shapes", *argv]) == 0
    assert "train 1, val 1, test 1, captions 15" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "shapes_000001.png",
        "shapes_000002.png",
        "shapes_000003.png",
    ]


@pytest.mark.parametrize("size", [8, 100_000])
def test_pictures_out_of_range_are_refused_before_any_is_drawn(tmp_path: Path, size) -> None:
    with pytest.raises(PrepareError, match=f"image_size 24 to 4096 \\(got {size}\\)"):
        make_shapes(tmp_path, image_size=size)
    assert not any(tmp_path.iterdir())


def test_a_negative_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="picture counts must be >= 0 .*'val': -1"):
        make_shapes(tmp_path, n_val=-1)


def test_no_pictures_at_all_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="no pictures asked for; give --train, --val or --test"):
        make_shapes(tmp_path / "out", n_train=0, n_val=0, n_test=0)
    assert not (tmp_path / "out").exists()
