"""Checkpoints carry their run: resume from a checkpoint alone, rebuild a task with
``load_from_checkpoint``, and start a new fit from a checkpoint's weights with ``--init_from``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch

import zoo.checkpoint
from zoo.checkpoint import read_checkpoint
from zoo.cli import main
from zoo.tasks.captioning import CaptioningTask
from zoo.tasks.char_lm import CharLanguageModel
from zoo.tasks.translation import TranslationTask

FLAGS = ["--trainer.enable_checkpointing", "true", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]  # fmt: skip


def _fit(recipe: str, root: Path, *extra: str) -> Path:
    assert main(["fit", "--config", recipe, *FLAGS, "--trainer.default_root_dir", str(root),
                 *extra]) == 0  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def char_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("char")
    every5 = ["--trainer.val_check_interval", "5"]
    stopped = _fit("char_lm/tiny", root / "a", "--trainer.max_steps", "10", *every5)
    assert main(["fit", "--ckpt_path", str(stopped), "--trainer.max_steps", "20"]) == 0  # no recipe
    whole = _fit("char_lm/tiny", root / "b", "--trainer.max_steps", "20", *every5)
    return {"resumed": stopped, "whole": whole}


def test_a_checkpoint_alone_resumes_its_run_exactly(char_runs) -> None:
    resumed = read_checkpoint(char_runs["resumed"], "char_lm")
    whole = read_checkpoint(char_runs["whole"], "char_lm")
    assert resumed["global_step"] == whole["global_step"] == 20
    for name, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert "hidden_size: 32" in resumed["rnn_zoo_recipe"]  # the run's resolved recipe


def test_a_resumed_translation_fit_draws_the_dropout_masks_of_the_whole_one(
    tmp_path, monkeypatch, one_thread
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread all along: one order of every sum
    every5 = ["--trainer.val_check_interval", "5", "--trainer.check_val_every_n_epoch", "null",
              "--trainer.limit_val_batches", "1", "--model.init_args.model.init_args.dropout",
              "0.3"]  # fmt: skip
    stopped = _fit("translation/tiny", tmp_path / "a", "--trainer.max_steps", "10", *every5)
    assert main(["fit", "--ckpt_path", str(stopped), "--trainer.max_steps", "16"]) == 0
    whole = _fit("translation/tiny", tmp_path / "b", "--trainer.max_steps", "16", *every5)
    resumed, whole = read_checkpoint(stopped, "translation"), read_checkpoint(whole, "translation")
    assert resumed["global_step"] == whole["global_step"] == 16
    for name, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def test_a_captioning_fit_resumed_mid_epoch_runs_the_batches_of_the_whole_one(
    tmp_path, monkeypatch, one_thread
):
    """10 captions in batches of 4 are 3 batches an epoch: step 10 stops one batch into the 4th
    epoch, so the resumed fit must run that epoch's other two batches, in the same order."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    stopped = _fit("captioning/tiny", tmp_path / "a", "--trainer.max_steps", "10")
    assert (
        read_checkpoint(stopped, "captioning")["loops"]["fit_loop"]["epoch_progress"]["current"][
            "completed"
        ]
        == 3
    )
    assert main(["fit", "--ckpt_path", str(stopped), "--trainer.max_steps", "16"]) == 0
    whole = _fit("captioning/tiny", tmp_path / "b", "--trainer.max_steps", "16")
    resumed, whole = read_checkpoint(stopped, "captioning"), read_checkpoint(whole, "captioning")
    assert resumed["global_step"] == whole["global_step"] == 16
    for name, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def test_a_checkpoint_alone_leaves_no_copy_of_its_recipe_behind(tmp_path, monkeypatch) -> None:
    last = _fit("char_lm/tiny", tmp_path / "run", "--trainer.max_steps", "2")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the recipe is written
    assert main(["validate", "--ckpt_path", str(last), "--trainer.limit_val_batches", "1"]) == 0
    assert not list(scratch.glob("rnn-zoo-recipe-*"))


def test_a_checkpoint_url_is_fetched_once_for_its_recipe_and_its_weights(tmp_path, monkeypatch):
    last = _fit("char_lm/tiny", tmp_path / "run", "--trainer.max_steps", "2")
    fetched = []

    def fetch(url, target, **_):
        fetched.append(url)
        shutil.copyfile(last, target)

    monkeypatch.setattr(zoo.checkpoint, "fetch", fetch)
    monkeypatch.delenv("RNN_ZOO_OFFLINE", raising=False)
    url = f"https://example.org/{tmp_path.name}/last.ckpt"  # a URL no other test fetched
    assert _fit_from(url, tmp_path / "new") == 0  # no --config: the recipe comes from the file
    assert fetched == [url]
    started = read_checkpoint(tmp_path / "new" / "checkpoints" / "last.ckpt", "char_lm")
    for name, value in read_checkpoint(last, "char_lm")["state_dict"].items():
        assert torch.equal(started["state_dict"][name], value), name  # its weights, at lr 0


def _fit_from(weights: str, root: Path) -> int:
    return main(["fit", "--init_from", weights, "--trainer.max_steps", "1", *FLAGS,
                 "--model.init_args.optimizer.init_args.lr", "0",
                 "--trainer.default_root_dir", str(root)])  # fmt: skip


def test_a_checkpoint_without_a_recipe_says_what_to_do(tmp_path, capsys) -> None:
    old = tmp_path / "old.ckpt"
    checkpoint = read_checkpoint(_fit("char_lm/tiny", tmp_path, "--trainer.max_steps", "2"))
    del checkpoint["rnn_zoo_recipe"]
    torch.save(checkpoint, old)
    assert main(["fit", "--ckpt_path", str(old)]) == 2
    assert f"{old}: holds no recipe" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("task", "recipe"),
    [
        (CharLanguageModel, "char_lm/tiny"),
        (TranslationTask, "translation/tiny"),
        (CaptioningTask, "captioning/tiny"),
    ],  # fmt: skip
)
def test_load_from_checkpoint_rebuilds_every_task(task, recipe, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the tiny recipes' data paths
    last = _fit(recipe, tmp_path, "--trainer.max_steps", "3")
    loaded = task.load_from_checkpoint(last)
    saved = read_checkpoint(last)["state_dict"]
    assert isinstance(loaded, task) and set(loaded.state_dict()) == set(saved)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


def test_init_from_starts_a_fresh_optimizer(char_runs, tmp_path) -> None:
    start = read_checkpoint(char_runs["whole"], "char_lm")
    assert start["global_step"] == 20 and start["optimizer_states"][0]["state"]
    tuned = _fit(
        "char_lm/tiny",
        tmp_path,
        "--init_from",
        str(char_runs["whole"]),
        "--trainer.max_steps",
        "1",
        "--model.init_args.optimizer.init_args.lr",
        "0",
    )
    after = read_checkpoint(tuned, "char_lm")
    assert after["global_step"] == 1  # a new run: its own step count
    step = after["optimizer_states"][0]["state"][0]["step"]
    assert float(step) == 1.0  # Adam's state starts again (not 21)
    for name, value in start["state_dict"].items():  # lr 0: the weights it started from
        assert torch.equal(after["state_dict"][name], value), name
