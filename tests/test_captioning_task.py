"""Tests for zoo.tasks.captioning: a few training steps with real decoding, checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.coco_captions import CocoCaptionsDataModule
from zoo.cli import main
from zoo.cores import GRU, LSTM
from zoo.models.captioning import ImageEncoder, ShowAndTell, ShowAttendTell
from zoo.tasks.captioning import CaptioningTask

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "coco_tiny"
RECIPE = ROOT / "recipes" / "captioning" / "tiny.yaml"


@pytest.mark.parametrize(("model_class", "core"), [(ShowAttendTell, LSTM), (ShowAndTell, GRU)])
def test_fit_validate_test_and_checkpoint(model_class, core, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1, batch_size=4)
    factory = partial(
        model_class,
        encoder=ImageEncoder("small", channels=8),
        decoder=partial(core, hidden_size=16),
        embedding_dim=8,
    )
    task = CaptioningTask(dm.vocab_size, model=factory, beam_size=2, max_len=6, meteor=False)
    trainer = pl.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
        default_root_dir=tmp_path, num_sanity_val_steps=0, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"val/loss", "val/bleu1", "val/bleu4", "train/loss"} <= set(metrics)
    assert sorted(task.last_captions) == sorted(dm.references("val"))
    if model_class is ShowAttendTell:
        assert "train/attention_penalty" in metrics
    (result,) = trainer.test(task, datamodule=dm, verbose=False)
    assert 0 <= result["test/bleu1"] <= 100 and set(task.last_captions) == set(
        dm.references("test")
    )
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["task"] == "captioning"
    assert checkpoint["data_state"]["vocab"] == dm.vocab.to_list()
    clone = model_class.from_config(checkpoint["hyper_parameters"]["model"])
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items()}
    clone.load_state_dict(state)


def test_vocabulary_mismatch_is_reported(tmp_path: Path) -> None:
    dm = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1)
    task = CaptioningTask(
        dm.vocab_size + 1, model=partial(ShowAndTell, encoder=ImageEncoder("small"))
    )
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(Exception, match="vocabulary has"):
        trainer.fit(task, datamodule=dm)


def test_tiny_recipe_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["fit", "--config", str(RECIPE), "--trainer.default_root_dir", str(tmp_path)])
    assert code in (0, None)


def test_wandb_table_has_captions_and_attention_overlays(tmp_path: Path, monkeypatch) -> None:
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.manual_seed(0)
    dm = CocoCaptionsDataModule(str(TINY), image_size=32, min_count=1, batch_size=4)
    factory = partial(ShowAttendTell, encoder=ImageEncoder("small", channels=8),
                      decoder=partial(LSTM, hidden_size=16), embedding_dim=8)  # fmt: skip
    task = CaptioningTask(dm.vocab_size, model=factory, max_len=5, meteor=False, examples=2)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    tables = []
    monkeypatch.setattr(logger, "log_table", lambda **kwargs: tables.append(kwargs))
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=logger, enable_progress_bar=False,
        default_root_dir=tmp_path, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.validate(task, datamodule=dm, verbose=False)
    (table,) = tables
    assert table["key"] == "val/captions"
    assert table["columns"] == ["image_id", "image", "generated", "references", "attention"]
    assert len(table["data"]) == 2
    for image_id, _, generated, references, overlay in table["data"]:
        assert generated == " ".join(task.last_captions[image_id])
        assert references == "\n".join(dm.references("val")[image_id])
        assert overlay.image is not None  # a rendered figure
