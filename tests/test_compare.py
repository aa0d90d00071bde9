"""``rnn-zoo compare``: every core trained from one recipe with the same budget, tested from its
best weights, and written up as a CSV, a markdown table and a figure; one W&B group."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image
from wandb_records import offline_runs, read_offline_run

from zoo.cli import main
from zoo.runlog import Trained, compare_markdown

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--", "--trainer.max_steps", "8", "--trainer.val_check_interval", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.logger", "true"]  # fmt: skip


def _params(hidden: int, gates: int, embedding: int = 16, vocab: int = 76) -> int:
    """CharRNN: embedding, one recurrent layer (two biases, as torch.nn), output layer."""
    recurrent = gates * hidden * (embedding + hidden + 2)
    return vocab * embedding + recurrent + hidden * vocab + vocab


def test_compare_trains_each_core_and_writes_the_table(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "cmp"
    args = ["compare", "--config", "char_lm/tiny", "--cores", "RNN", "LSTM", "--out", str(out)]
    assert main([*args, *FAST]) == 0
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["core"] for r in rows] == ["RNN", "LSTM"]
    assert [int(r["params"]) for r in rows] == [_params(32, 1), _params(32, 4)]
    for row in rows:
        assert int(row["steps"]) == 8 and float(row["chars_per_s"]) > 0
        assert 2.0 < float(row["best_val"]) < 6.5 and 2.0 < float(row["test"]) < 6.5
    table = (out / "compare.md").read_text()
    assert table.splitlines()[0].startswith("| core | params | chars/s")
    assert f"| {_params(32, 4):,} |" in table and table in capsys.readouterr().out
    assert Image.open(out / "compare.png").size[0] > 800
    runs = [read_offline_run(p) for p in offline_runs(out)]
    assert len(runs) == 2 and len({r.group for r in runs}) == 1
    assert runs[0].group.startswith("compare/tiny/")
    assert sorted(r.name for r in runs) == ["tiny-lstm-s0", "tiny-rnn-s0"]
    assert all("test/bpc" in r.summary for r in runs)  # tested in the same run


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--cores", "LSTM", "Transformer"], "unknown core 'Transformer'; choose from GRU"),
        (["--cores", "GRU", "LSTM", "GRU"], "--cores: GRU is named twice; name each core once"),
        (["--max-time", "5 minutes"], "--max-time '5 minutes': write DD:HH:MM:SS"),
        (["--max-time", "00:00:00:00"], "--max-time '00:00:00:00': a budget of zero trains"),
        (["--seeds", "0"], "--seeds 0: give 1 to 100"),
        (["--metric", "nosuch"], "--metric 'nosuch': choose bpc, loss or ppl"),
        (["--config", "translation/tiny"], "compare swaps the core of a char-LM recipe"),
    ],
)
def test_compare_refuses_bad_arguments_before_training(extra, message, capsys, tmp_path,
                                                       monkeypatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--config", "char_lm/tiny", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "training" not in err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_first_run_that_fails_leaves_no_empty_folder(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["compare", "--config", "char_lm/tiny", "--cores", "LSTM", "--out", "cmp"]
    assert main([*argv, "--", "--bogus", "1"]) == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_markdown_averages_seeds_and_sorts_by_best() -> None:
    runs = [Trained("GRU", 0, 10, 5, 100.0, 2.2, 2.3, 9.0), Trained("GRU", 1, 10, 7, 300.0, 2.0,
            2.1, 11.0), Trained("LSTM", 0, 20, 4, 50.0, 1.9, 2.0, 10.0)]  # fmt: skip
    lines = compare_markdown(runs).splitlines()
    assert "range over 2 seeds" in lines[0]
    assert lines[2] == "| LSTM | 20 | 50 | 4 | 1.900 ± 0.000 | 2.000 | 10.0 |"
    assert lines[3] == "| GRU | 10 | 200 | 6 | 2.100 ± 0.100 | 2.200 | 10.0 |"
