"""The ``rnn-zoo`` command: recipes, data parallelism, and one-line errors for bad input."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")


def _run_cli(*args, cwd):
    # One thread a process: two ranks on two cores would otherwise oversubscribe them.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _last_val_bpc(log_dir: Path) -> float:
    rows = list(csv.DictReader(open(next(log_dir.rglob("metrics.csv")))))
    return float([r for r in rows if r.get("val/bpc")][-1]["val/bpc"])


def test_ddp_two_processes_match_one_process(tmp_path):
    """2 ranks x 4 streams == 1 process x 8 streams: same data, same mean loss, same val/bpc."""
    results = {}
    for name, extra in {
        "single": ["--data.batch_size", "8"],
        "ddp": ["--data.batch_size", "4", "--trainer.strategy", "ddp", "--trainer.devices", "2"],
    }.items():
        out = tmp_path / name
        proc = _run_cli(
            "fit", "--config", TINY, *extra,
            "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out),
            "--trainer.default_root_dir", str(out), cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = _last_val_bpc(out)
    assert results["single"] < 5.5  # it trained
    assert results["ddp"] == pytest.approx(results["single"], rel=1e-4)


def _error_line(capsys, *argv):
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnn-zoo: error:"), err
    return err[0]


def test_misspelt_recipe_key_names_the_recipe(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(TINY).read_text().replace("hidden_size", "hiden_size"))
    line = _error_line(capsys, "fit", "--config", str(bad))
    assert "bad.yaml" in line and "hiden_size" in line


def test_missing_recipe_and_missing_data(tmp_path, capsys):
    assert "nope.yaml" in _error_line(capsys, "fit", "--config", str(tmp_path / "nope.yaml"))
    line = _error_line(
        capsys, "fit", "--config", TINY, "--data.paths", f"[{tmp_path / 'missing.txt'}]"
    )
    assert "missing.txt: no such file" in line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "content,match",
    [(b"", "empty"), (b"\xff\xfe\x00\x00binary\x00\x00", "binary"), (b"x" * 50, "too short")],
)
def test_bad_corpus_is_one_line(tmp_path, capsys, content, match):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    line = _error_line(
        capsys, "fit", "--config", TINY, "--data.paths", f"[{path}]",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert "corpus.txt" in line and match in line


def test_sample_rejects_non_checkpoints_and_foreign_prime(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a PyTorch checkpoint" in _error_line(capsys, "sample", "--checkpoint", str(text))
    assert "no such checkpoint" in _error_line(capsys, "sample", "--checkpoint", "nope.ckpt")
    published = str(ROOT / "checkpoints" / "char_lm-rnn-shakespeare-v1.safetensors")
    for argv in (["sample", "--checkpoint"], ["fit", "--config", TINY, "--ckpt_path"]):
        line = _error_line(capsys, *argv, published)
        assert f"{published}: published weights (safetensors), not a training checkpoint" in line
        assert "--pretrained" in line
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"task": "translation"}}, other)
    assert "translation checkpoint" in _error_line(capsys, "sample", "--checkpoint", str(other))


def test_fit_then_sample_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([
        "fit", "--config", TINY, "--trainer.enable_checkpointing", "true",
        "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
    ]) == 0  # fmt: skip
    ckpt = next(run.rglob("*.ckpt"))
    (config,) = run.glob("*/config.yaml")  # the resolved config, saved in the run's own folder
    saved = config.read_text()
    assert "zoo.tasks.char_lm.CharLanguageModel" in saved and "hidden_size: 32" in saved
    assert main(["sample", "--checkpoint", str(ckpt), "--prime", "ROMEO:", "--length", "40",
                 "--seed", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "ROMEO:" in out
    line = _error_line(capsys, "sample", "--checkpoint", str(ckpt), "--prime", "日本")
    assert "not in the model's vocabulary" in line and "日" in line


def test_print_config_shows_the_resolved_recipe(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", TINY, "--print_config"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: zoo.cores.LSTM" in out and "hidden_size: 32" in out


@pytest.mark.parametrize(
    "content,message",
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("- fit\n- validate\n", "a recipe is a mapping of sections"),
        (b"\xff\xfe\x00model", "not UTF-8 text"),
        ("# nothing but a comment\n", "empty; a recipe has model:, data: and trainer:"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["fit", "--config"],
        ["compare", "--cores", "LSTM", "--max-time", "00:00:00:05", "--config"],
        ["prepare", "translation", "--config"],
        ["demo", "--recipe"],
    ],
    ids=["fit", "compare", "prepare", "demo"],
)
def test_every_command_that_reads_a_recipe_names_a_bad_one(tmp_path, capsys, monkeypatch,
                                                           command, content, message):  # fmt: skip
    """One reader for every command: the file and what is wrong with it, and nothing written."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)  # compare and demo would write under ./runs
    line = _error_line(capsys, *command, str(bad))
    assert f"{bad}: " in line and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_compare_wants_an_integer_seed(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "drawn.yaml"
    recipe.write_text(Path(TINY).read_text().replace("seed_everything: 0", "seed_everything: true"))
    monkeypatch.chdir(tmp_path)
    line = _error_line(capsys, "compare", "--config", str(recipe), "--cores", "LSTM")
    assert "drawn.yaml: seed_everything is True" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--model.init_args.optimizer.init_args.lr", "-1", "optimizer: Invalid learning rate: -1"),
        ("--seed_everything", "-1", "seed_everything: -1 is not in bounds"),
        ("--model.init_args.core.init_args.hidden_size", "0", "LSTM: hidden_size must be >= 1"),
        ("--model.init_args.core.init_args.num_layers", "0", "LSTM: num_layers must be >= 1"),
        ("--model.init_args.core.init_args.dropout", "2",  # one layer: torch would not look
         "LSTM: dropout is a probability, between 0 and 1; got 2.0"),
        ("--model.init_args.dropout", "1.5",
         "CharRNN: dropout is a probability, between 0 and 1; got 1.5"),
        ("--trainer.accelerator", "tpux", "trainer: You selected an invalid accelerator name"),
    ],
)  # fmt: skip
def test_a_value_a_class_refuses_is_one_line(tmp_path, capsys, monkeypatch, flag, value, message):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", TINY, "--trainer.max_steps", "2", flag, value]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("rnn-zoo: error:") and message in errors[0]


@pytest.mark.parametrize(
    "recipe,model", [("translation/tiny", "RNNSearch"), ("captioning/tiny", "ShowAttendTell")]
)
def test_every_task_refuses_a_dropout_outside_0_to_1(capsys, recipe, model):
    line = _error_line(capsys, "fit", "--config", recipe, "--trainer.max_steps", "1",
                       "--model.init_args.model.init_args.dropout", "1.5")  # fmt: skip
    assert line == f"rnn-zoo: error: {model}: dropout is a probability, between 0 and 1; got 1.5"


def test_validate_without_a_checkpoint_says_it_scores_an_untrained_model(tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the recipe's checkpoints go to ./runs
    run = ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    assert main(["validate", "--config", TINY, "--trainer.limit_val_batches", "2", *run]) == 0
    warning = "validate without a ckpt_path scores the recipe's model as initialised, untrained"
    assert warning in capsys.readouterr().err
    assert main(["fit", "--config", TINY, "--trainer.max_steps", "2", *run,
                 "--trainer.enable_checkpointing", "true"]) == 0  # fmt: skip
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert main(["validate", "--ckpt_path", str(ckpt), "--trainer.limit_val_batches", "2"]) == 0
    assert "untrained" not in capsys.readouterr().err
    saved = tmp_path / "with_ckpt.yaml"  # a ckpt_path from a config file counts too
    saved.write_text(f"ckpt_path: {ckpt}\n")
    argv = [
        "validate",
        "--config",
        TINY,
        "--config",
        str(saved),
        "--trainer.limit_val_batches",
        "2",
    ]
    assert main([*argv, *run]) == 0
    assert "untrained" not in capsys.readouterr().err


def test_a_fused_optimizer_with_clipping_in_mixed_precision_is_refused_before_training(
    tmp_path, capsys, monkeypatch
):
    """Lightning refuses it only at the first optimizer step, with a traceback."""
    monkeypatch.chdir(tmp_path)
    line = _error_line(capsys, "fit", "--config", "char_lm/demo", "--trainer.accelerator", "cpu",
                       "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.5",
                       "--trainer.logger", "false")  # fmt: skip
    assert "fused: true and trainer.gradient_clip_val is 1.5" in line
    assert "bf16-mixed precision" in line
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize("flag", ["--trainer.max_steps", "--trainer.max_epochs"])
def test_a_fit_with_nothing_to_train_is_refused(tmp_path, capsys, monkeypatch, flag):
    """Lightning would end it at once with exit status 0, which reads as a finished training."""
    monkeypatch.chdir(tmp_path)
    line = _error_line(capsys, "fit", "--config", "char_lm/tiny", flag, "0")
    assert (
        line
        == f"rnn-zoo: error: {flag[2:]} is 0: the fit would end before its first step; raise it"
    )
    assert not list(tmp_path.iterdir())


EPOCHS_OF_3 = ["--trainer.max_steps", "-1", "--trainer.limit_train_batches", "3",
               "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1"]  # fmt: skip


@pytest.mark.parametrize(
    "budget,extra,trained,refused,raised,steps,says",
    [
        ("max_steps", [], "4", "3", "6", 6, "is at step 4 and trainer.max_steps is 3"),
        ("max_epochs", EPOCHS_OF_3, "2", "2", "3", 9,
         "has trained 2 epochs and trainer.max_epochs is 2"),
    ],
)  # fmt: skip
def test_resuming_a_checkpoint_already_at_its_budget_is_refused(
    tmp_path, capsys, monkeypatch, budget, extra, trained, refused, raised, steps, says
):
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "--config", "char_lm/tiny", "--trainer.enable_checkpointing", "true",
           "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    flag = f"--trainer.{budget}"
    assert main([*fit, flag, trained]) == 0
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    line = _error_line(capsys, *fit, flag, refused, "--ckpt_path", str(checkpoint))
    assert line == (f"rnn-zoo: error: {checkpoint}: {says}: nothing is left to train; raise {flag}")
    assert main([*fit, flag, raised, "--ckpt_path", str(checkpoint)]) == 0
    assert torch.load(checkpoint, weights_only=True)["global_step"] == steps


def test_resuming_a_checkpoint_that_spent_its_max_time_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "--config", "char_lm/tiny", "--trainer.enable_checkpointing", "true",
           "--trainer.enable_progress_bar", "false", "--trainer.max_steps", "-1",
           "--trainer.max_epochs", "-1"]  # fmt: skip
    assert main([*fit, "--trainer.max_time", "00:00:00:01"]) == 0
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    again = [*fit, "--trainer.max_time", "00:00:00:01", "--ckpt_path", str(checkpoint)]
    line = _error_line(capsys, *again)
    assert line.startswith(f"rnn-zoo: error: {checkpoint}: has trained ")  # 1 s, or a stall more
    assert line.endswith("is 1 s: nothing is left to train; raise --trainer.max_time "
                         "(DD:HH:MM:SS, the whole budget)")  # fmt: skip
    assert main([*fit, "--trainer.max_time", "00:00:00:02", "--ckpt_path", str(checkpoint)]) == 0
