"""Tests for datamodules.coco_captions: vocabulary, batches, references, sharding, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.caption_batches import Batch, EpochBatches, shard
from datamodules.coco_captions import CocoCaptionsDataModule
from datamodules.coco_files import tokenize
from datamodules.images import load_image
from datamodules.prepare.shapes import make_shapes
from datamodules.vocab import BOS, EOS, PAD
from zoo.errors import DataError

TINY = Path(__file__).parent / "data" / "coco_tiny"


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    make_shapes(out, n_train=12, n_val=5, n_test=3, image_size=32)
    return out


def _annotations(root: Path, split: str) -> dict:
    return json.loads((root / f"annotations/captions_{split}.json").read_text())


def _write(root: Path, split: str, coco: dict) -> None:
    (root / f"annotations/captions_{split}.json").write_text(json.dumps(coco))


def _copy(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dst


def test_tokenize() -> None:
    assert tokenize("A Dog's ball, on the  GRASS.") == ["a", "dog's", "ball", "on", "the", "grass"]
    assert tokenize("  ... ") == []


def test_tiny_vocab_and_train_batch() -> None:
    dm = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1, batch_size=4)
    dm.setup("fit")
    assert dm.vocab.tokens[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    train_words = {
        w for c in _annotations(TINY, "train")["annotations"] for w in c["caption"].split()
    }
    assert set(dm.vocab.tokens[4:]) == train_words
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and len(batch) == 4
    assert batch.images.shape == (4, 3, 32, 32) and batch.images.dtype == torch.float32
    assert (batch.captions_in[:, 0] == BOS).all()
    # captions_out is captions_in shifted left, with </s> at each caption's end
    lengths = (batch.captions_out != PAD).sum(1)
    for row, n in enumerate(lengths.tolist()):
        assert batch.captions_out[row, n - 1] == EOS
        assert torch.equal(batch.captions_out[row, : n - 1], batch.captions_in[row, 1:n])
    texts = {dm.decode(row) for row in batch.captions_out}
    all_train = {c["caption"] for c in _annotations(TINY, "train")["annotations"]}
    assert texts <= all_train


def test_min_count_maps_rare_words_to_unk(shapes_dir: Path) -> None:
    dm = CocoCaptionsDataModule(str(shapes_dir), image_size=32, min_count=1000)
    dm.setup("fit")
    assert len(dm.vocab) == 4
    dm = CocoCaptionsDataModule(str(shapes_dir), image_size=32, min_count=2)
    dm.setup("fit")
    assert "a" in dm.vocab.tokens and len(dm.vocab) > 10


def test_eval_batches_one_per_image_with_references(shapes_dir: Path) -> None:
    dm = CocoCaptionsDataModule(str(shapes_dir), image_size=32, min_count=1, eval_batch_size=2)
    dm.setup("fit")
    refs = dm.references("val")
    seen = [i for batch in dm.val_dataloader() for i in batch.image_ids.tolist()]
    assert sorted(seen) == sorted(refs) and len(seen) == 5
    coco = _annotations(shapes_dir, "val")
    for image_id, captions in refs.items():
        expected = [a["caption"] for a in coco["annotations"] if a["image_id"] == image_id]
        assert captions == expected and len(captions) == 5
    assert len(dm.val_dataloader()) == 3  # 5 images, batches of 2


def test_batch_moves_with_lightning() -> None:
    from lightning_fabric.utilities.apply_func import move_data_to_device

    dm = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, Batch) and moved.images.is_meta and moved.captions_in.is_meta
    assert moved.image_ids.device.type == "cpu"


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_shards_cover_every_image_once(shapes_dir: Path, world_size: int) -> None:
    dm = CocoCaptionsDataModule(str(shapes_dir), image_size=32, min_count=1, eval_batch_size=2)
    dm.setup("fit")
    seen = []
    for rank in range(world_size):
        loader = dm.eval_loader("val", rank=rank, world_size=world_size)
        seen += [i for batch in loader for i in batch.image_ids.tolist()]
    assert sorted(seen) == sorted(dm.references("val"))
    sizes = [len(shard(5, r, world_size)) for r in range(world_size)]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(DataError, match="fewer than the 6 processes"):
        shard(5, 0, 6)


def test_max_len_drops_long_training_captions(shapes_dir: Path) -> None:
    dm = CocoCaptionsDataModule(str(shapes_dir), image_size=32, min_count=1, max_len=7)
    dm.setup("fit")
    loader = dm.train_dataloader()
    n_captions = sum(len(t) for t in dm.splits["train"].tokens.values())
    assert 0 < dm.dropped_long < n_captions
    assert len(loader.dataset) == n_captions - dm.dropped_long
    assert all((b.captions_out != PAD).sum(1).max() <= 8 for b in loader)


def test_rgba_and_grey_pictures_become_rgb(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "a.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "g.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.getpixel((1, 1)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert load_image(tmp_path / "g.png").getpixel((0, 0)) == (100, 100, 100)


def test_missing_picture_fails_at_setup(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    name = _annotations(root, "val")["images"][1]["file_name"]
    (root / "images" / name).unlink()
    dm = CocoCaptionsDataModule(str(root), image_size=32, min_count=1)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert name in str(info.value) and "\n" not in str(info.value)


def test_corrupt_picture_fails_at_setup_naming_the_file(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    name = _annotations(root, "val")["images"][0]["file_name"]
    (root / "images" / name).write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{name}: not a readable picture") as info:
        CocoCaptionsDataModule(str(root), image_size=32, min_count=1).setup("fit")
    assert "\n" not in str(info.value) and "skip_bad_images" in str(info.value)
    # Checked only for existence, the picture fails its batch, still naming the file.
    dm = CocoCaptionsDataModule(str(root), image_size=32, min_count=1, check_images="exists")
    dm.setup("fit")
    with pytest.raises(DataError, match=name):
        list(dm.val_dataloader())


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_truncated_picture_found_by_the_check(tmp_path: Path, kind: str) -> None:
    root = _copy(TINY, tmp_path / "d")
    name = _annotations(root, "train")["images"][1]["file_name"]
    path = root / "images" / name
    Image.effect_noise((64, 64), 50).convert("RGB").save(path, format=kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    if kind == "JPEG":  # "header" reads only a JPEG's header: "decode" is the check that sees it
        CocoCaptionsDataModule(str(root), min_count=1, check_images="header").setup("fit")
    check = "header" if kind == "PNG" else "decode"
    with pytest.raises(DataError, match=f"{name}: not a readable picture"):
        CocoCaptionsDataModule(str(root), min_count=1, check_images=check).setup("fit")


def test_bad_pictures_skipped_and_counted(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    train = _annotations(root, "train")["images"]
    (root / "images" / train[0]["file_name"]).write_bytes(b"\x89PNG broken")
    (root / "images" / _annotations(root, "val")["images"][1]["file_name"]).unlink()
    dm = CocoCaptionsDataModule(
        str(root), image_size=32, min_count=1, batch_size=2, skip_bad_images=True
    )
    dm.setup("fit")
    assert dm.skipped_images == {"train": 1, "val": 1}
    assert sorted(dm.references("train")) == [train[1]["id"]]
    assert len(dm.references("val")) == 1
    seen = {i for batch in dm.train_dataloader() for i in batch.image_ids.tolist()}
    assert seen == {train[1]["id"]}  # a whole epoch, only readable pictures
    assert len([i for b in dm.val_dataloader() for i in b.image_ids.tolist()]) == 1


def test_overlong_caption_dropped_from_training_only(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    coco = _annotations(root, "train")
    coco["annotations"][0]["caption"] = "a very long caption " * 500  # 2,000 words
    _write(root, "train", coco)
    dm = CocoCaptionsDataModule(str(root), image_size=32, min_count=1, batch_size=100, max_len=20)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert dm.dropped_long == 1 and len(batch) == len(coco["annotations"]) - 1
    assert batch.captions_in.shape[1] <= 21
    image_id = coco["annotations"][0]["image_id"]
    assert len(dm.reference_tokens("train")[image_id][0]) == 2000  # references keep it


def test_unknown_check_images_value() -> None:
    with pytest.raises(ValueError, match="check_images"):
        CocoCaptionsDataModule(str(TINY), check_images="thorough")


def test_empty_captions_skipped_and_counted(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    coco = _annotations(root, "train")
    coco["annotations"][0]["caption"] = "  "
    coco["annotations"][1]["caption"] = "..."
    _write(root, "train", coco)
    dm = CocoCaptionsDataModule(str(root), image_size=32, min_count=1, batch_size=100)
    dm.setup("fit")
    assert dm.skipped_empty["train"] == 2
    assert len(dm.train_dataloader().dataset) == len(coco["annotations"]) - 2
    assert len(dm.references("train")[coco["annotations"][0]["image_id"]]) == 3


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="captions_train.json"):
        CocoCaptionsDataModule(str(tmp_path)).setup("fit")


def test_karpathy_split(tmp_path: Path) -> None:
    root = _copy(TINY, tmp_path / "d")
    entries = []
    for split, karpathy in (("train", "train"), ("val", "restval"), ("test", "test")):
        coco = _annotations(root, split)
        for image in coco["images"]:
            sentences = [
                {"raw": a["caption"]} for a in coco["annotations"] if a["image_id"] == image["id"]
            ]
            entries.append(
                {
                    "split": karpathy,
                    "cocoid": image["id"],
                    "filepath": "images",
                    "filename": image["file_name"],
                    "sentences": sentences,
                }
            )
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries}))
    dm = CocoCaptionsDataModule(str(root), image_size=32, min_count=1, karpathy_split=str(path))
    dm.setup("test")
    assert len(dm.references("train")) == 4  # train + restval
    assert len(dm.references("test")) == 2 and len(dm.references("val")) == 0


@pytest.mark.parametrize("n,world_size", [(10, 1), (10, 3), (7, 2)])
def test_epoch_batches_shard_a_fresh_order_each_epoch(n: int, world_size: int) -> None:
    ranks = [EpochBatches(n, 2, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        shares = [[i for b in rank.batches(epoch) for i in b] for rank in ranks]
        every = sorted(i for share in shares for i in share)
        assert len(set(every)) == len(every) == n - n % world_size  # disjoint, remainder left out
        assert {len(rank.batches(epoch)) for rank in ranks} == {len(ranks[0])}  # equal counts
    assert ranks[0].batches(0) != ranks[0].batches(1)  # reshuffled
    assert ranks[0].batches(1) == EpochBatches(n, 2, 5, 0, world_size).batches(1)  # reproducible
    ranks[0].start = 2
    assert list(ranks[0]) == ranks[0].batches(0)[2:] and list(ranks[0]) == ranks[0].batches(0)


def test_epoch_batches_refuse_more_processes_than_captions() -> None:
    with pytest.raises(DataError, match="has 2 training captions, fewer than the 3 processes"):
        EpochBatches(2, 4, world_size=3)
