"""Tests for datamodules.coco_download against a local HTTP server (never the internet): zips in
COCO's layout built from tests/data/coco_tiny, then read through the data module."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from datamodules.coco_captions import CocoCaptionsDataModule
from datamodules.prepare.coco import MIRROR_ENV, Archive, download_coco
from zoo.cli import main as cli_main
from zoo.errors import DataError

TINY = Path(__file__).parent / "data" / "coco_tiny"


def _coco_json(split: str) -> dict:
    return json.loads((TINY / f"annotations/captions_{split}.json").read_text())


def _zip(path: Path, members: dict[str, bytes]) -> Archive:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    relative = f"{path.parent.name}/{path.name}"
    return Archive(relative, md5=hashlib.md5(path.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Archive]:
    """COCO 2014's three archives, in their folders (zips/, annotations/), made from the tiny
    fixture; returns their table for ``sources``."""
    root = tmp_path_factory.mktemp("site")
    table = {}
    for split in ("train", "val"):
        pictures = {
            f"{split}2014/{img['file_name']}": (TINY / "images" / img["file_name"]).read_bytes()
            for img in _coco_json(split)["images"]
        }
        table[split] = _zip(root / f"zips/{split}2014.zip", {f"{split}2014/": b"", **pictures})
    captions = {
        f"annotations/captions_{s}2014.json": json.dumps(_coco_json(s)).encode()
        for s in ("train", "val")
    }
    instances = {"annotations/instances_train2014.json": b"{}"}  # not wanted: not extracted
    table["annotations"] = _zip(
        root / "annotations/annotations_trainval2014.zip", {**captions, **instances}
    )
    (root / "zips/broken2014.zip").write_bytes(
        (root / "zips/train2014.zip").read_bytes()[:-200]  # truncated
    )
    return {"root": root, **table}


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(site) -> Iterator[_Server]:
    server = _Server(site["root"])
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _sources(site, **changes: Archive) -> dict:
    return {"2014": {k: changes.get(k, site[k]) for k in ("train", "val", "annotations")}}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_download_then_train_through_the_data_module(tmp_path: Path, site, server) -> None:
    out = tmp_path / "coco"
    counts = download_coco(out, mirror=server.url, progress=False, sources=_sources(site))
    assert counts == {"train_images": 2, "train_captions": 10, "val_images": 2, "val_captions": 10}
    assert sorted(server.requests) == [
        "/annotations/annotations_trainval2014.zip", "/zips/train2014.zip", "/zips/val2014.zip"
    ]  # fmt: skip
    assert not (out / "annotations/instances_train2014.json").exists()
    assert not (out / "downloads").exists() and not any(out.rglob(".*"))  # no archive, no temp
    dm = CocoCaptionsDataModule(str(out), image_dir=".", image_size=32, min_count=1, batch_size=4)
    dm.setup("fit")
    tiny = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1)
    tiny.setup("fit")
    assert dm.vocab.tokens == tiny.vocab.tokens
    assert dm.references("val") == tiny.references("val")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (4, 3, 32, 32)
    # Finished: a rerun makes no request.
    assert download_coco(out, mirror=server.url, progress=False, sources=_sources(site)) == counts
    assert len(server.requests) == 3


def test_rerun_fetches_only_what_is_missing(tmp_path: Path, site, server, monkeypatch) -> None:
    out = tmp_path / "coco"
    monkeypatch.setenv(MIRROR_ENV, server.url)  # the host from the environment
    download_coco(out, progress=False, sources=_sources(site), keep_archives=True)
    assert sorted(p.name for p in (out / "downloads").iterdir()) == [
        "annotations_trainval2014.zip", "train2014.zip", "val2014.zip"
    ]  # fmt: skip
    (out / "coco.json").unlink()
    for path in (out / "val2014").iterdir():
        path.unlink()
    (out / "val2014").rmdir()
    (out / "downloads/val2014.zip").unlink()
    download_coco(out, progress=False, sources=_sources(site), keep_archives=True)
    assert server.requests[3:] == ["/zips/val2014.zip"]
    assert len(list((out / "val2014").iterdir())) == 2


def test_checksum_mismatch_is_one_line_and_leaves_nothing(tmp_path: Path, site, server) -> None:
    out = tmp_path / "coco"
    wrong = Archive(site["train"].path, md5="0" * 32)
    with pytest.raises(DataError, match="train2014.zip: download rejected \\(md5 ") as info:
        download_coco(out, mirror=server.url, progress=False, sources=_sources(site, train=wrong))
    assert "\n" not in str(info.value) and server.url in str(info.value)
    assert not out.exists()  # not even the folders it made
    sized = Archive(site["train"].path, size=12)  # the size is checked too
    with pytest.raises(DataError, match="bytes, expected 12"):
        download_coco(out, mirror=server.url, progress=False, sources=_sources(site, train=sized))


def test_corrupt_archive_is_one_line_and_leaves_nothing(tmp_path: Path, site, server) -> None:
    out = tmp_path / "coco"
    broken = Archive("zips/broken2014.zip")  # no checksum known: the zip itself is the check
    with pytest.raises(DataError, match="broken2014.zip: not a complete, readable zip") as info:
        download_coco(out, mirror=server.url, progress=False, sources=_sources(site, train=broken))
    assert "\n" not in str(info.value)
    assert not out.exists()  # not even the folders it made


def test_missing_archive_and_unsafe_member(tmp_path: Path, site, server) -> None:
    out = tmp_path / "coco"
    absent = Archive("zips/absent2014.zip")
    with pytest.raises(DataError, match="absent2014.zip: download failed \\(HTTP 404"):
        download_coco(out, mirror=server.url, progress=False, sources=_sources(site, train=absent))
    evil = _zip(site["root"] / "zips/evil2014.zip", {"train2014/../../escaped.txt": b"x"})
    with pytest.raises(DataError, match="leaves its folder"):
        download_coco(out, mirror=server.url, progress=False, sources=_sources(site, train=evil))
    assert not (tmp_path / "escaped.txt").exists() and not out.exists()


def test_prepare_coco_command(tmp_path: Path, site, server, monkeypatch, capsys) -> None:
    monkeypatch.setattr("datamodules.prepare.coco.SOURCES", _sources(site))
    out = tmp_path / "coco"
    assert cli_main(["prepare", "coco", "--out", str(out), "--mirror", server.url, "--quiet"]) == 0
    assert "train_images=2" in capsys.readouterr().out
    assert (out / "annotations/captions_train.json").is_file()
    with pytest.raises(SystemExit):
        cli_main(["prepare", "coco", "--out", str(out), "--year", "1999"])
    assert "invalid choice: '1999'" in capsys.readouterr().err
