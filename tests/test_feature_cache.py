"""Tests for the captioning feature cache: the frozen CNN run once, the decoder trained from disk."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torchvision.transforms import v2

from datamodules import coco_captions
from datamodules.coco_captions import CocoCaptionsDataModule
from datamodules.images import default_transform
from zoo.cores import GRU, LSTM
from zoo.errors import DataError, UserError
from zoo.models.captioning import ImageEncoder, ShowAndTell, ShowAttendTell
from zoo.tasks.captioning import CaptioningTask

TINY = Path(__file__).parent / "data" / "coco_tiny"


def _data(cache: Path | None, **kwargs) -> CocoCaptionsDataModule:
    return CocoCaptionsDataModule(
        str(TINY), image_size=32, min_count=1, batch_size=3, eval_batch_size=1,
        feature_cache=str(cache) if cache else None, **kwargs,
    )  # fmt: skip


def _encoder(seed: int = 0, freeze: bool = True) -> ImageEncoder:
    torch.manual_seed(seed)
    return ImageEncoder("small", channels=8, freeze=freeze)


class _Record(pl.Callback):
    """Every training loss and the shape of every training batch's ``images``."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.shapes: list[tuple[int, ...]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        self.shapes.append(tuple(batch.images.shape))


def _fit(model_class, core, cache: Path | None, root: Path) -> tuple[_Record, dict]:
    pl.seed_everything(0)
    dm = _data(cache)
    factory = partial(
        model_class,
        encoder=ImageEncoder("small", channels=8, freeze=True),
        decoder=partial(core, hidden_size=16),
        embedding_dim=8,
        dropout=0.1,  # the same random stream with or without the cache
    )
    task = CaptioningTask(dm.vocab_size, model=factory, beam_size=2, max_len=6)
    record = _Record()
    trainer = pl.Trainer(
        max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
        default_root_dir=root, num_sanity_val_steps=0, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=0, callbacks=[record],
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)  # no validation: test_model_takes_precomputed_features
    return record, dict(task.model.state_dict())


@pytest.mark.parametrize(("model_class", "core"), [(ShowAttendTell, LSTM), (ShowAndTell, GRU)])
def test_training_from_the_cache_matches_training_through_the_cnn(
    model_class, core, tmp_path: Path, one_thread
) -> None:
    direct, direct_state = _fit(model_class, core, None, tmp_path / "a")
    cached, cached_state = _fit(model_class, core, tmp_path / "cache", tmp_path)
    assert all(len(shape) == 4 for shape in direct.shapes)  # (B, 3, 32, 32) pictures
    assert all(len(shape) == 3 and shape[1:] == (16, 8) for shape in cached.shapes)  # (B, S, F)
    assert len(cached.losses) == 8
    torch.testing.assert_close(cached.losses, direct.losses, rtol=1e-5, atol=1e-6)
    for name, value in direct_state.items():
        if name == "image_embedding.bias" and "image_bn.weight" in direct_state:
            # Batch norm right after it removes any shift: its true gradient is 0, so Adam
            # (which divides by sqrt(v)) moves it by lr-sized steps of pure float noise.
            continue
        # Adam divides by sqrt(v): float noise (1e-8 in the features) moves weights by ~1e-4
        torch.testing.assert_close(cached_state[name], value, rtol=1e-3, atol=1e-3)
    names = sorted(path.name.split("-")[0] for path in (tmp_path / "cache").iterdir())
    assert names == ["train", "val"]  # fit caches what it uses; nothing temporary is left


def test_cache_holds_the_encoders_eval_mode_output(tmp_path: Path) -> None:
    dm, encoder = _data(tmp_path), _encoder()
    dm.setup("fit")
    encoder.train()
    paths = dm.use_feature_cache(encoder, "fit")
    assert encoder.training  # its mode is put back
    features = np.load(paths["val"])
    transform = default_transform(32)
    from datamodules.images import load_image

    pictures = torch.stack(
        [transform(load_image(dm.splits["val"].paths[i])) for i in dm.splits["val"].image_ids]
    )
    with torch.no_grad():
        expected = encoder.eval()(pictures)
    torch.testing.assert_close(torch.from_numpy(features), expected, rtol=1e-5, atol=1e-6)
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (1, 16, 8) and batch.images.dtype == torch.float32


def test_cache_is_reused_and_keyed_by_encoder_and_image_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _data(tmp_path).use_feature_cache(_encoder(0), "fit")
    assert set(first) == {"train", "val"} and all(p.is_file() for p in first.values())

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a cache that exists")

    with monkeypatch.context() as patch:
        patch.setattr(coco_captions, "write_features", refuse)
        assert _data(tmp_path).use_feature_cache(_encoder(0), "fit") == first
    other_weights = _data(tmp_path).use_feature_cache(_encoder(1), "fit")
    other_size = CocoCaptionsDataModule(
        str(TINY), image_size=40, min_count=1, feature_cache=str(tmp_path)
    ).use_feature_cache(_encoder(0), "validate")
    names = {p.name for p in [*first.values(), *other_weights.values(), *other_size.values()]}
    assert len(names) == 5
    test_only = _data(tmp_path).use_feature_cache(_encoder(0), "test")
    assert set(test_only) == {"test"}


def test_cache_refuses_a_trainable_encoder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="frozen encoder"):
        _data(tmp_path).use_feature_cache(_encoder(freeze=False), "fit")
    dm = _data(tmp_path)
    task = CaptioningTask(
        dm.vocab_size, model=partial(ShowAndTell, encoder=_encoder(freeze=False), embedding_dim=8)
    )
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(UserError, match="unset feature_cache to fine-tune"):
        trainer.fit(task, datamodule=dm)
    assert not any(tmp_path.glob("*.npy"))


def test_cache_refuses_random_augmentation(tmp_path: Path) -> None:
    dm = _data(tmp_path)
    dm.transform = v2.Compose([v2.RandomHorizontalFlip(), default_transform(32)])
    with pytest.raises(UserError, match="RandomHorizontalFlip"):
        dm.use_feature_cache(_encoder(), "fit")


def test_unreadable_cache_file_is_reported(tmp_path: Path) -> None:
    paths = _data(tmp_path).use_feature_cache(_encoder(), "fit")
    paths["val"].write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="not a readable feature cache.*delete it"):
        _data(tmp_path).use_feature_cache(_encoder(), "fit")
    np.save(paths["val"], np.zeros((5, 16, 8), dtype=np.float32))  # the wrong number of rows
    with pytest.raises(DataError, match=r"not \(2, S, F\) float32"):
        _data(tmp_path).use_feature_cache(_encoder(), "fit")


def test_failed_build_leaves_no_file(tmp_path: Path) -> None:
    encoder, calls = _encoder(), []
    forward = encoder.forward

    def fail_second(images: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return forward(images)

    encoder.forward = fail_second
    with pytest.raises(RuntimeError, match="out of memory"):
        _data(tmp_path).use_feature_cache(encoder, "validate")
    assert list(tmp_path.iterdir()) == []


def test_model_takes_precomputed_features() -> None:
    torch.manual_seed(0)
    model = ShowAttendTell(12, encoder=_encoder(), embedding_dim=8, attention_size=8).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.encoder(images)  # (2, 16, 8)
        tokens = torch.tensor([[2, 5, 6], [2, 7, 3]])
        torch.testing.assert_close(model(features, tokens), model(images, tokens))
    with pytest.raises(ValueError, match=r"\(B, S, 8\) features"):
        model.encode(torch.randn(2, 16, 9))
    trainable = ShowAndTell(12, encoder=_encoder(freeze=False), embedding_dim=8)
    with pytest.raises(ValueError, match="frozen encoder"):
        trainable.encode(features)


def test_frozen_encoder_is_in_eval_mode_from_the_start() -> None:
    # Lightning no longer calls .train() at fit start: a frozen CNN built in training mode would
    # normalise with batch statistics (and update its running ones) until something did.
    encoder = _encoder()
    assert not encoder.cnn.training and all(not m.training for m in encoder.cnn.modules())
    assert _encoder(freeze=False).cnn.training


def _no_build(*args, **kwargs) -> None:
    raise AssertionError("the CNN ran although the cache was complete")


def test_ranks_build_one_shard_each_and_read_the_whole_cache(tmp_path: Path) -> None:
    """Two ranks (threads meeting at a barrier) each run the CNN over half the pictures into
    their own shard; both then read every row, the rows one process computes."""
    import threading

    single = _data(tmp_path / "one")
    single.use_feature_cache(_encoder(0), "fit")
    barrier = threading.Barrier(2, timeout=60)
    ranks = [_data(tmp_path / "two") for _ in range(2)]
    encoders = [_encoder(0) for _ in range(2)]  # here: seeding is not thread-safe
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            ranks[rank].use_feature_cache(encoders[rank], "fit", "cpu", rank, 2, barrier.wait)
        except BaseException as err:  # noqa: BLE001 (reported by the main thread)
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    shards = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "two").glob("train-*.npy"))
    assert shards == ["0-of-2.npy", "1-of-2.npy"]
    rows, features = single.features["train"]
    for dm in ranks:
        their_rows, theirs = dm.features["train"]
        assert their_rows == rows and len(theirs) == len(features)
        for row in range(len(features)):
            np.testing.assert_allclose(theirs[row], features[row], rtol=1e-5, atol=1e-6)
    # One process later (rnn-zoo test after a DDP fit) reads the two shards, running no CNN.
    later = _data(tmp_path / "two")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coco_captions, "write_features", _no_build)
        later.use_feature_cache(_encoder(0), "fit")
    assert later.features["train"][0] == rows and len(later.features["train"][1]) == len(features)
    np.testing.assert_allclose(later.features["train"][1][1], features[1], rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "two").glob("train-*.npy"))) == 2
    # A rank that finds a shard missing (a folder that the processes do not share) says so.
    next((tmp_path / "two").glob("train-*.1-of-2.npy")).unlink()
    with pytest.raises(DataError, match="must be one that every process"):
        _data(tmp_path / "two").use_feature_cache(_encoder(0), "fit", "cpu", 0, 2, lambda: None)
