"""Every shipped recipe parses against the code and builds its model, data module and trainer."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torchvision
from pytorch_lightning.callbacks import LearningRateMonitor

from datamodules.char_text import BUNDLED_SHAKESPEARE
from datamodules.parallel_text import BUNDLED_BIBLE
from zoo.cli.zoo_cli import ZooCLI, find_task_class

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
COCO_TINY = ROOT / "tests" / "data" / "coco_tiny"

# Paper recipes name data the user brings, and GPUs; build them here on what this machine has.
LOCAL = {
    "char_lm": ["--data.paths", f"[{BUNDLED_SHAKESPEARE}]"],
    "translation": [
        "--data.data_dir",
        str(BUNDLED_BIBLE),
        "--data.cache_dir",
        "null",
        "--data.val",
        "valid",
        "--data.test",
        "test",
        "--data.download",
        "false",
    ],
    # COCO and the prepared shapes / Tux Paint sets are not here: the shipped shapes fixture is.
    "captioning": [
        "--data.data_dir",
        str(COCO_TINY),
        "--data.karpathy_split",
        "null",
        "--data.num_workers",
        "0",
    ],
}
ON_CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
          "--trainer.logger", "false"]  # fmt: skip


@pytest.fixture
def no_weight_download(monkeypatch):
    """Build torchvision CNNs that a recipe names with ImageNet weights from random weights: the
    weights download from the web (jsonargparse cannot set a nested ``weights: null`` from the
    command line, so the recipe keeps its value)."""
    get_model = torchvision.models.get_model
    monkeypatch.setattr(
        torchvision.models,
        "get_model",
        lambda name, **kw: get_model(name, **{**kw, "weights": None}),
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds(recipe, tmp_path, no_weight_download):
    args = ["--config", str(recipe), *LOCAL.get(recipe.parent.name, []), *ON_CPU,
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    assert isinstance(cli.model, pl.LightningModule)
    assert isinstance(cli.datamodule, pl.LightningDataModule)
    assert isinstance(cli.trainer, pl.Trainer)
    assert sum(p.numel() for p in cli.model.parameters()) > 0
    # The task's links fed what the data knows into the model.
    for source, target in getattr(type(cli.model), "cli_links", ()):
        value = getattr(cli.datamodule, source.split(".", 1)[1])
        assert getattr(cli.model.model, target) == value


def test_a_recipe_monitor_is_left_out_without_a_logger(tmp_path, capsys):
    """The Sutskever recipe lists a LearningRateMonitor, which Lightning refuses to start without
    a logger: with ``--trainer.logger false`` the fit must not stop there (after preparing the
    data), so the monitor is dropped, with a note; with a logger it stays."""
    recipe = ROOT / "recipes" / "translation" / "sutskever-wmt14-enfr.yaml"
    args = ["--config", str(recipe), *LOCAL["translation"], *ON_CPU,
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    at = args.index("--trainer.logger")
    with_logger = args[:at] + args[at + 2 :]
    assert not any(isinstance(cb, LearningRateMonitor) for cb in cli.trainer.callbacks)
    assert "LearningRateMonitor is left out" in capsys.readouterr().err
    logged = ZooCLI(find_task_class(args), args=with_logger, run=False)
    assert cli.trainer.logger is None and logged.trainer.logger is not None
    assert sum(isinstance(cb, LearningRateMonitor) for cb in logged.trainer.callbacks) == 1


def test_recipes_carry_a_comment_header():
    for recipe in RECIPES:
        assert recipe.read_text().startswith("#"), f"{recipe} needs a comment saying what it is"
