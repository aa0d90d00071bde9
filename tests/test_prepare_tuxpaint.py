"""Tests for datamodules.prepare.tuxpaint on a tiny fake stamps package built with ``dpkg-deb --build``."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from datamodules.prepare import PrepareError, tuxpaint
from datamodules.prepare.families import caption_key, family_of, split_of, split_stamps
from datamodules.prepare.tuxpaint import (
    STAMPS_DIR,
    Stamp,
    download_deb,
    parse_caption,
    prepare_tuxpaint,
)
from zoo.cli import main as cli_main

SAMPLES = Path(__file__).parent / "data" / "tuxpaint_samples"
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _koala() -> Image.Image:
    """4x3 RGBA: left half transparent, right half opaque red, (0, 0) half-transparent blue."""
    image = Image.new("RGBA", (4, 3), (0, 0, 0, 0))
    for x in (2, 3):
        for y in range(3):
            image.putpixel((x, y), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 255, 128))
    return image


def _sign() -> Image.Image:
    image = Image.new("LA", (2, 2), (0, 0))  # grey + alpha, as 188 real stamps are
    image.putpixel((1, 1), (0, 255))
    return image


# Stamp files by path under the stamps folder, and what each should become.
STAMP_FILES = {
    "animals/koala.png": _png(_koala()),
    "animals/koala.txt": b"A koala.\naf.utf8='n Koala.\nfr.utf8=Un koala.\n",
    "animals/koala_mirror.png": _png(_koala()),  # uncaptioned
    "animals/koala.ogg": b"OggS audio is not read",
    "big/tall.png": _png(Image.new("RGB", (300, 100), (10, 20, 30))),
    "big/tall.txt": "A wide grey box. \r\nfr.utf8= Une boîte grise. \r\n".encode(),
    "town/sign.png": _png(_sign()),
    "town/sign.svg": b"<svg/>",  # the PNG wins
    "town/sign.txt": b"A sign.\n",  # no French line
    "vehicles/car.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
    "vehicles/car.txt": b"A car.\nfr.utf8=Une voiture.\n",
    "broken/empty.png": _png(_sign()),
    "broken/empty.txt": b"",
    "broken/french_only.png": _png(_sign()),
    "broken/french_only.txt": b"fr.utf8=Seulement du fran\xc3\xa7ais.\n",
    "broken/corrupt.png": b"\x89PNG\r\n\x1a\n this is not a picture",
    "broken/corrupt.txt": b"A corrupt picture.\n",
    "seasonal/gift.txt": b"A gift without a picture.\n",
}
KEPT = {  # source -> (file_name, width, height, caption, caption_fr)
    "animals/koala.png": ("animals__koala.png", 4, 3, "A koala.", "Un koala."),
    "big/tall.png": ("big__tall.png", 224, 75, "A wide grey box.", "Une boîte grise."),
    "town/sign.png": ("town__sign.png", 2, 2, "A sign.", None),
}


def _build_deb(root: Path, files: dict[str, bytes], deb: Path) -> Path:
    (root / "DEBIAN").mkdir(parents=True)
    control = "Package: tuxpaint-stamps-default\nVersion: 0.1-test\nArchitecture: all\n"
    control += "Maintainer: rnn-zoo tests <tests@example.org>\nDescription: fake stamps\n"
    (root / "DEBIAN" / "control").write_text(control)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    command = ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)]
    subprocess.run(command, check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    tmp = tmp_path_factory.mktemp("deb")
    files = {STAMPS_DIR + name: data for name, data in STAMP_FILES.items()}
    return _build_deb(tmp / "root", files, tmp / "tuxpaint-stamps-default_0.1-test_all.deb")


@pytest.fixture
def no_svg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuxpaint, "find_svg_converter", lambda: None)


def _coco(root: Path) -> dict[str, dict]:
    return {
        s: json.loads((root / f"annotations/captions_{s}.json").read_text(encoding="utf-8"))
        for s in ("train", "val", "test")
    }


def test_parse_caption() -> None:
    assert parse_caption("A koala.\nfr.utf8=Un koala.\n") == ("A koala.", "Un koala.")
    assert parse_caption("A sign.") == ("A sign.", None)
    assert parse_caption("") == (None, None)
    assert parse_caption("\nfr.utf8=Un koala.") == (None, "Un koala.")
    assert parse_caption("pt_BR.utf8=Um coala.\nfr.utf8=Un koala.") == (None, "Un koala.")


def test_split_is_a_stable_80_10_10_hash_of_the_path() -> None:
    counts = Counter(split_of(f"animals/stamp_{i}.png") for i in range(2000))
    assert 0.76 < counts["train"] / 2000 < 0.84 and 0.07 < counts["val"] / 2000 < 0.13
    samples = json.loads((SAMPLES / "captions.json").read_text(encoding="utf-8"))["pictures"]
    # The shipped samples are held out: the hash puts them in the test split.
    assert {split_of(p["source"].removeprefix(STAMPS_DIR)) for p in samples} == {"test"}


@needs_dpkg
def test_writes_the_exact_coco_data_set(deb: Path, tmp_path: Path, no_svg: None) -> None:
    counts = prepare_tuxpaint(tmp_path, deb)
    expected_splits = Counter(split_of(source) for source in KEPT)
    assert counts == {
        "pictures": 3,
        "captions": 3,
        "captions_fr": 2,
        **{split: expected_splits[split] for split in ("train", "val", "test")},
        "skipped_svg": 1,
        "skipped_bad_caption": 2,
        "skipped_corrupt": 1,
        "skipped_uncaptioned": 1,
        "skipped_orphan_caption": 1,
        "skipped_svg_duplicate": 1,
    }
    expected = {split: {"images": [], "annotations": []} for split in ("train", "val", "test")}
    for image_id, (source, (name, width, height, en, fr)) in enumerate(sorted(KEPT.items()), 1):
        split = expected[split_of(source)]
        split["images"].append(
            {"id": image_id, "file_name": name, "width": width, "height": height}
            | {"license": 1, "source": source}
        )
        split["annotations"].append(
            {"id": image_id, "image_id": image_id, "caption": en, "caption_fr": fr}
        )
        assert Image.open(tmp_path / "images" / name).size == (width, height)
    for split, coco in _coco(tmp_path).items():
        assert {"images": coco["images"], "annotations": coco["annotations"]} == expected[split]
        assert coco["licenses"] == [tuxpaint.LICENSE]
        assert (coco["info"]["version"], coco["info"]["split"]) == ("0.1-test", split)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        v[0] for v in KEPT.values()
    )


@needs_dpkg
def test_every_split_loads_with_pycocotools(deb: Path, tmp_path: Path, no_svg: None) -> None:
    prepare_tuxpaint(tmp_path, deb)
    total = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(tmp_path / f"annotations/captions_{split}.json"))
        total += len(coco.getImgIds())
        for entry in coco.loadImgs(coco.getImgIds()):
            assert (tmp_path / "images" / entry["file_name"]).is_file()
    assert total == 3


@needs_dpkg
def test_transparency_is_flattened_onto_white(deb: Path, tmp_path: Path, no_svg: None) -> None:
    prepare_tuxpaint(tmp_path, deb)
    koala = Image.open(tmp_path / "images/animals__koala.png")
    sign = Image.open(tmp_path / "images/town__sign.png")
    assert koala.mode == sign.mode == "RGB"
    assert koala.getpixel((1, 1)) == (255, 255, 255) and koala.getpixel((3, 2)) == (255, 0, 0)
    red, green, blue = koala.getpixel((0, 0))  # half blue over white
    assert abs(red - 127) <= 1 and abs(green - 127) <= 1 and blue == 255
    assert sign.getpixel((0, 0)) == (255, 255, 255) and sign.getpixel((1, 1)) == (0, 0, 0)


@needs_dpkg
def test_bad_stamps_are_skipped_with_a_line_naming_the_file(
    deb: Path, tmp_path: Path, no_svg: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=tuxpaint.__name__):
        prepare_tuxpaint(tmp_path, deb)
    lines = caplog.text.splitlines()
    for name in ("broken/empty.txt", "broken/french_only.txt", "broken/corrupt.png"):
        assert sum(STAMPS_DIR + name in line for line in lines) == 1, caplog.text


@needs_dpkg
def test_svg_stamps_use_an_installed_converter(
    deb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    green = _png(Image.new("RGBA", (4, 4), (0, 200, 0, 255)))
    monkeypatch.setattr(tuxpaint, "find_svg_converter", lambda: lambda svg: green)
    counts = prepare_tuxpaint(tmp_path, deb)
    assert counts["pictures"] == 4 and counts["skipped_svg"] == 0
    car = Image.open(tmp_path / "images/vehicles__car.png")
    assert car.mode == "RGB" and car.getpixel((0, 0)) == (0, 200, 0)


def test_missing_deb_names_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "tuxpaint-stamps-default.deb"
    with pytest.raises(PrepareError, match=str(missing)):
        prepare_tuxpaint(tmp_path / "out", missing)
    assert (
        cli_main(["prepare", "tuxpaint", "--out", str(tmp_path / "out"), "--deb", str(missing)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    assert not (tmp_path / "out").exists()


@needs_dpkg
def test_deb_without_stamps_is_refused(tmp_path: Path) -> None:
    files = {"usr/share/doc/tuxpaint-stamps-default/README": b"no stamps here\n"}
    empty = _build_deb(tmp_path / "root", files, tmp_path / "empty.deb")
    with pytest.raises(PrepareError, match=f"{empty}: no Tux Paint stamps"):
        prepare_tuxpaint(tmp_path / "out", empty)


@needs_dpkg
def test_file_that_is_not_a_deb_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.deb"
    fake.write_bytes(b"not an ar archive")
    with pytest.raises(PrepareError, match=f"{fake}: not a readable .deb"):
        prepare_tuxpaint(tmp_path / "out", fake)


def test_download_without_apt_get_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrepareError, match="apt-get not found"):
        download_deb(tmp_path)


@needs_dpkg
def test_main_prints_the_counts(
    deb: Path, tmp_path: Path, no_svg: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli_main(
            ["prepare", "tuxpaint", "--out", str(tmp_path), "--deb", str(deb), "--max-side", "0"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "pictures 3, captions 3" in captured.out
    assert "skipped 1 SVG stamps" in captured.err
    assert Image.open(tmp_path / "images/big__tall.png").size == (300, 100)


def test_shipped_samples_match_their_captions() -> None:
    manifest = json.loads((SAMPLES / "captions.json").read_text(encoding="utf-8"))
    assert 3 <= len(manifest["pictures"]) <= 4
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 200_000
    for entry in manifest["pictures"]:
        picture = Image.open(SAMPLES / entry["file_name"])
        assert picture.mode == "RGB" and picture.size == (entry["width"], entry["height"])
        assert entry["caption"] and entry["caption_fr"]


def test_families_are_named_whatever_the_variant() -> None:
    same = [
        ("symbols/alphabets/english/filled/lowercase/a_filled.png",
         "symbols/alphabets/english/outlined/uppercase/A_outline.png"),
        ("people/fireman200b.png", "military/fireman240a.png"),
        ("animals/amphibians/frog-1.png", "animals/amphibians/frog.png"),
    ]  # fmt: skip
    for first, second in same:
        assert family_of(first) == family_of(second), (first, second)
    assert family_of("food/fruit/apple_red.png") != family_of("food/fruit/apple_green.png")
    assert caption_key("The letter A.") == caption_key("the letter a") == "the letter a"


def test_a_family_or_a_caption_never_straddles_the_split() -> None:
    names = ["".join(chr(97 + int(d)) for d in f"{i:03d}") for i in range(300)]  # aaa, aab, ...
    stamps = [Stamp(f"misc/{name}.png", f"A {name}.", None) for name in names]
    stamps += [Stamp(f"letters/{c}_filled.png", f"The letter {c}.", None) for c in "abcdefgh"]
    stamps += [Stamp(f"letters/{c.upper()}_outline.png", f"The letter {c.upper()}.", None)
               for c in "abcdefgh"]  # fmt: skip
    stamps += [Stamp(f"fruit/{kind}.png", "A red apple.", None) for kind in ("apple", "pome_red")]
    splits = split_stamps(stamps)
    by_family: dict[str, set[str]] = {}
    by_caption: dict[str, set[str]] = {}
    for stamp in stamps:
        by_family.setdefault(family_of(stamp.path), set()).add(splits[stamp.path])
        by_caption.setdefault(caption_key(stamp.caption), set()).add(splits[stamp.path])
    assert all(len(found) == 1 for found in [*by_family.values(), *by_caption.values()])
    assert set(splits.values()) == {"train", "val", "test"}  # still a split
    # A stamp alone keeps the split of its own path.
    assert all(splits[s.path] == split_of(s.path) for s in stamps if s.path.startswith("misc/"))


REAL = Path(__file__).resolve().parent.parent / "data" / "tuxpaint" / "annotations"


@pytest.mark.skipif(not REAL.is_dir(), reason="needs rnn-zoo prepare tuxpaint --out data/tuxpaint")
def test_the_real_test_split_shares_no_caption_or_family_with_train() -> None:
    def split(name: str) -> tuple[set[str], set[str]]:
        coco = json.loads((REAL / f"captions_{name}.json").read_text(encoding="utf-8"))
        captions = {caption_key(a["caption"]) for a in coco["annotations"]}
        families = {family_of(image["source"]) for image in coco["images"]}
        return captions, families

    (train_captions, train_families), (test_captions, test_families) = split("train"), split("test")
    assert test_captions and not test_captions & train_captions
    assert test_families and not test_families & train_families
