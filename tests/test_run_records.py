"""Every run has its own record: a folder with the resolved config and a metrics.csv, and a W&B
run (offline here) whose config holds every init argument, named <recipe>-<core>-s<seed>,
grouped by recipe, with best-value summaries; a resumed fit continues the same run; and
``rnn-zoo plot`` draws the curves from the folder."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
import yaml
from PIL import Image
from wandb_records import offline_runs, read_offline_run

from zoo.callbacks import layer_of
from zoo.cli import main
from zoo.runlog import read_metrics
from zoo.tasks.runs import compact_config, core_names

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--trainer.logger", "true", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "2"]  # fmt: skip


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _fit(*args: str) -> None:
    assert main(["fit", *args, *FLAGS]) == 0


def _run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/config.yaml"))


def _columns(folder: Path) -> list[str]:
    with open(folder / "metrics.csv", newline="") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> Path:
    """A tiny fit stopped at step 10, resumed from last.ckpt alone to step 20, then validated."""
    root = tmp_path_factory.mktemp("resumed")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        _fit("--config", "char_lm/tiny", "--trainer.default_root_dir", str(root),
             "--trainer.enable_checkpointing", "true", "--trainer.max_steps", "10")  # fmt: skip
        last = root / "checkpoints" / "last.ckpt"
        _fit("--ckpt_path", str(last), "--trainer.max_steps", "20")
        assert main(["validate", "--ckpt_path", str(last), *FLAGS]) == 0
    return root


def test_two_recipes_leave_two_configs_and_two_wandb_configs(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "recipes/char_lm/tiny.yaml").read_text())
    recipe["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 0.005
    recipe["data"]["init_args"]["batch_size"] = 4
    recipe["model"]["init_args"]["core"] = {
        "class_path": "zoo.cores.GRU", "init_args": {"hidden_size": 16, "num_layers": 2}
    }  # fmt: skip
    other = tmp_path / "small-gru.yaml"
    other.write_text(yaml.safe_dump(recipe))
    root = tmp_path / "runs"  # both runs share a root: their folders must not collide
    for config in ("char_lm/tiny", str(other)):
        _fit(
            "--config", config, "--trainer.default_root_dir", str(root), "--trainer.max_steps", "6"
        )
    folders = _run_folders(root)
    assert len(folders) == 2
    saved = [yaml.safe_load((f / "config.yaml").read_text()) for f in folders]
    assert [s["model"]["init_args"]["optimizer"]["init_args"]["lr"] for s in saved] == [0.01, 0.005]
    runs = [read_offline_run(p) for p in offline_runs(root)]
    assert [r.run_id for r in runs] == [f.name for f in folders]
    first, second = runs
    assert (first.name, first.group, first.job_type) == ("tiny-lstm-s0", "char_lm/tiny", "fit")
    assert (second.name, second.group, second.tags) == ("small-gru-gru-s0", "small-gru",
                                                        ["char_lm", "gru"])  # fmt: skip
    assert first.config["model"]["optimizer"]["lr"] == 0.01
    assert second.config["model"]["optimizer"]["lr"] == 0.005
    assert (first.config["data"]["batch_size"], second.config["data"]["batch_size"]) == (8, 4)
    assert second.config["trainer"]["max_steps"] == 6 and second.config["seed_everything"] == 0
    assert first.config["recipe"] == "char_lm/tiny"
    # Learning rate and gradient norms per layer (each recurrent layer apart) are logged.
    columns = _columns(folders[1])
    assert "lr-Adam" in columns and "grad_norm/total" in columns
    assert {"grad_norm/model.core.rnn.l0", "grad_norm/model.core.rnn.l1"} <= set(columns)


def test_a_wandb_run_starts_without_warnings(tmp_path: Path) -> None:
    from zoo.tasks.runs import Run, run_loggers

    # A fresh process (W&B keeps its settings and its warned-once messages per process), in a
    # relative run folder not made yet, outside any git repository; and with this process's W&B
    # service (WANDB_SERVICE), whose working directory is not the child's.
    wandb.setup()
    assert "WANDB_SERVICE" in os.environ and Path.cwd() != tmp_path
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"} | {"WANDB_MODE": "offline"}
    fit = [sys.executable, "-m", "zoo.cli", "fit", "--config", "char_lm/tiny",
           "--trainer.default_root_dir", "runs", "--trainer.max_steps", "2", *FLAGS]  # fmt: skip
    done = subprocess.run(fit, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Tracking run with wandb" in done.stderr and "wandb: WARNING" not in done.stderr
    # The run's files are in its folder, also when a W&B service of this process (inherited
    # through WANDB_SERVICE, its working directory this one's) writes them.
    assert list((tmp_path / "runs").glob("*/wandb/offline-run-*/files/output.log"))
    run = Run("i", "n", "g", (), "fit", str(tmp_path / "r"))
    assert "anonymous" not in run_loggers(run, offline=True)[0]._wandb_init


def test_resumed_fit_continues_the_same_run(resumed: Path) -> None:
    fit_folder, validate_folder = _run_folders(resumed)
    runs = {p.parent.name: read_offline_run(p) for p in offline_runs(resumed)}
    fits = [r for r in runs.values() if r.job_type == "fit"]
    assert len(fits) == 2 and {r.run_id for r in fits} == {fit_folder.name}
    first, again = fits
    steps = [h["trainer/global_step"] for h in again.history if "trainer/global_step" in h]
    assert steps and min(steps) >= 10 and max(steps) == 19
    # The run folder's metrics.csv holds both parts: Lightning's CSV logger would delete the first.
    train_steps = read_metrics(fit_folder / "metrics.csv")["train/loss"][0]
    assert train_steps == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    (validation,) = [r for r in runs.values() if r.job_type == "validate"]
    assert validation.run_id == validate_folder.name != fit_folder.name
    assert (validation.group, validation.name) == ("char_lm/tiny", "tiny-lstm-s0")
    assert set(validation.summary["val/bpc"]) == {"min"} and validation.metrics["val/bpc"] == {
        "min"
    }


def test_plot_draws_the_panels_of_a_run(resumed: Path, capsys) -> None:
    folder = _run_folders(resumed)[0]
    assert main(["plot", str(folder)]) == 0
    png = folder / "curves.png"
    panels = Image.open(png).text["Description"]
    assert panels == "panels: loss; bits per character; learning rate; gradient norm"
    assert str(png) in capsys.readouterr().out
    out = resumed / "latest.png"  # a folder of runs: the latest logged run is drawn
    assert main(["plot", str(resumed), "--output", str(out)]) == 0 and out.stat().st_size > 10_000


def test_the_run_record_line_offers_plot_only_where_there_are_curves(tmp_path, caplog) -> None:
    argv = ["fit", "--config", "char_lm/tiny", "--trainer.max_steps", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert main([*argv, str(tmp_path / "a"), "--trainer.logger", "false"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if "run record" in r.getMessage()]
    assert line.endswith("(no curves: the fit ran with logger: false)")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*argv, str(tmp_path / "b"), "--trainer.logger", "true"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if "run record" in r.getMessage()]
    assert line.endswith("' draws its curves)") and (tmp_path / "b").is_dir()
    caplog.clear()
    with caplog.at_level(logging.INFO):  # a recipe's own logger writes elsewhere
        assert main([*argv, str(tmp_path / "c"), "--trainer.logger", "CSVLogger",
                     "--trainer.logger.save_dir", str(tmp_path / "own")]) == 0  # fmt: skip
    (line,) = [r.getMessage() for r in caplog.records if "run record" in r.getMessage()]
    assert line.endswith("(curves: where the recipe's logger puts them)")


def test_plot_errors_name_the_folder(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path}: no metrics.csv" in capsys.readouterr().err
    bad = tmp_path / "metrics.csv"
    bad.write_text("step,train/loss\n1,oops\n")
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.csv:2: train/loss = 'oops' is not a number" in capsys.readouterr().err
    bad.write_bytes(b"step,train/loss\n1,0.5\n\xe92,")
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.csv: not UTF-8 text" in capsys.readouterr().err


def test_a_row_cut_short_by_a_killed_run_is_left_out(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.csv"
    # Lightning's column order: the step before the values, so a cut row still has its step.
    metrics.write_text("epoch,step,train/loss,val/bpc\n0,9,2.5,\n0,9,,3.25\n0,19,2.25,\n0,29,2.")
    assert read_metrics(metrics) == {"train/loss": ([9, 19], [2.5, 2.25]), "val/bpc": ([9], [3.25])}


def test_translation_summary_holds_the_sacrebleu_signature(tmp_path: Path) -> None:
    _fit("--config", "translation/tiny", "--trainer.default_root_dir", str(tmp_path),
         "--trainer.max_steps", "4", "--trainer.val_check_interval", "4")  # fmt: skip
    (run,) = [read_offline_run(p) for p in offline_runs(tmp_path)]
    assert run.summary["sacrebleu_signature"].startswith("BLEU nrefs:1|case:mixed")
    assert run.metrics["val/bleu"] == {"max"} and run.metrics["val/ppl"] == {"min"}
    assert run.tags == ["translation", "gru"] and run.name == "tiny-gru-s0"


def test_log_model_needs_wandb_online(tmp_path: Path, capsys) -> None:
    args = ["fit", "--config", "char_lm/tiny", *FLAGS, "--log_model", "true"]
    assert main([*args, "--trainer.default_root_dir", str(tmp_path)]) == 2
    assert "--log_model uploads checkpoints to W&B" in capsys.readouterr().err


def test_wandb_disabled_keeps_the_csv_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    _fit("--config", "char_lm/tiny", "--trainer.default_root_dir", str(tmp_path),
         "--trainer.max_steps", "4")  # fmt: skip
    (folder,) = _run_folders(tmp_path)
    assert "train/loss" in _columns(folder) and not list(tmp_path.rglob("wandb"))


def test_run_naming_helpers() -> None:
    assert layer_of("model.core.rnn.weight_hh_l1_reverse") == "model.core.rnn.l1_reverse"
    assert layer_of("model.core.rnn.bias_ih_l0") == "model.core.rnn.l0"
    assert layer_of("model.head.weight") == "model.head" and layer_of("scale") == "scale"
    config = {
        "model": {
            "class_path": "T",
            "init_args": {
                "encoder": {"class_path": "zoo.cores.GRU", "init_args": {"hidden_size": 8}},
                "decoder": {"class_path": "zoo.cores.LSTM"},
                "optimizer": {"init_args": {"lr": 0.1}},
            },
        }
    }
    assert core_names(config) == ["gru", "lstm"]  # fmt: skip
    compact = compact_config(config)
    assert compact["model"]["optimizer"] == {"lr": 0.1}
    assert compact["model"]["encoder"] == {"class_path": "zoo.cores.GRU", "hidden_size": 8}


def test_a_fit_that_fails_before_its_first_step_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # a W&B run would be a record worth keeping
    short = tmp_path / "short.txt"
    short.write_text("too short to split\n")
    root = tmp_path / "runs"
    argv = ["fit", "--config", "char_lm/tiny", "--data.paths", f"[{short}]",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert main(argv) == 2
    assert "short.txt: val split of" in capsys.readouterr().err
    assert list(root.rglob("*")) == []
    _fit("--config", "char_lm/tiny", "--trainer.default_root_dir", str(root),
         "--trainer.max_steps", "2")  # fmt: skip
    (folder,) = _run_folders(root)  # a run that trained keeps its record
    assert (folder / "metrics.csv").is_file()
