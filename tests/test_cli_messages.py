"""Command lines that read well: a misspelt key names itself, its closest spelling and where it
came from; switching a recipe's core by class_path keeps only what the new core accepts; every
command's help calls it by its name; diagnose measures a trained core too."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main
from zoo.cli.zoo_cli import ZooCLI, find_task_class
from zoo.cores import LayerNormLSTM

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "char_lm" / "tiny.yaml"


def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("rnn-zoo: error:")]
    return line


def test_a_misspelt_key_on_the_command_line(capsys) -> None:
    line = _error(capsys, "fit", "--config", "char_lm/tiny", "--model.init_args.embeding_dim", "3")
    assert line == (
        "rnn-zoo: error: command line --model.init_args.embeding_dim: CharLanguageModel has no "
        "argument 'embeding_dim'; did you mean 'embedding_dim'?"
    )
    line = _error(capsys, "fit", "--config", TINY, "--trainer.max_stepz", "3")
    assert (
        "--trainer.max_stepz: Trainer has no argument 'max_stepz'; did you mean 'max_steps'" in line
    )


def test_a_misspelt_key_in_a_recipe_names_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("hidden_size: 32", "hiden_size: 32"))
    line = _error(capsys, "fit", "--config", bad)
    assert (
        line
        == f"rnn-zoo: error: {bad}: LSTM has no argument 'hiden_size'; did you mean 'hidden_size'?"
    )


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--trainer.max_steps", "abc", "max_steps takes an integer, not 'abc'"),
        ("--trainer.max_epochs", "abc", "max_epochs takes an integer or null, not 'abc'"),
        ("--trainer.gradient_clip_val", "x", "gradient_clip_val takes a number or null, not 'x'"),
        ("--model.init_args.core.init_args.hidden_size", "big",
         "hidden_size takes an integer, not 'big'"),
        ("--data.seq_len", "1.5", "seq_len takes an integer, not '1.5'"),
        ("--data.eval_batch_size", "abc", "eval_batch_size takes an integer or null, not 'abc'"),
        ("--model.optimizer.init_args.lr", "abc", "lr takes a number or a Tensor, not 'abc'"),
        ("--model.init_args.core.init_args.backend", "foo",
         "backend takes one of fused, explicit, not 'foo'"),
        ("--trainer.precision", "7", "precision takes one of 64, 32, 16, transformer-engine, "
         "transformer-engine-float16, 16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true, "
         "bf16 or null, not '7'"),
        ("--model.core.class_path", "zoo.cores.Bogus",
         "zoo.cores has no Bogus; choose from GRU, LSTM, LayerNormLSTM, MinGRU, MinLSTM, RNN, SLSTM"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_on_the_command_line(capsys, flag, value, says) -> None:
    """Not jsonargparse's dump of every Union member it tried, blamed on the recipe file."""
    line = _error(capsys, "fit", "--config", "char_lm/tiny", flag, value)
    assert line == f"rnn-zoo: error: command line {flag}: {says}"


@pytest.mark.parametrize(
    "command,hint",
    [("smaple", "did you mean 'sample'?"), ("bogus", "rnn-zoo --help lists the commands")],
)
def test_an_unknown_command_is_one_line(capsys, command, hint) -> None:
    assert main([command]) == 2
    assert capsys.readouterr().err == f"rnn-zoo: error: unknown command {command!r}; {hint}\n"


def test_an_option_nothing_takes_is_blamed_on_the_command_line(capsys) -> None:
    line = _error(capsys, "fit", "--config", "char_lm/tiny", "--bogus", "1")
    assert line == (
        "rnn-zoo: error: command line: unrecognized arguments: --bogus 1; --help lists the options"
    )


def test_a_value_of_the_wrong_type_in_a_recipe_names_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("hidden_size: 32", "hidden_size: big"))
    line = _error(capsys, "fit", "--config", bad)
    assert line == f"rnn-zoo: error: {bad}: hidden_size takes an integer, not 'big'"
    # the model's own dropout on the command line is not the core's, in the file
    bad.write_text(
        TINY.read_text().replace("hidden_size: 32", "hidden_size: 32\n        dropout: x")
    )
    line = _error(capsys, "fit", "--config", bad, "--model.init_args.dropout", "0.1")
    assert line == f"rnn-zoo: error: {bad}: dropout takes a number, not 'x'"


def test_a_type_it_cannot_name_keeps_the_parsers_words(capsys) -> None:
    """data.paths takes a list of strings, which the one-line form cannot say: not 'takes null'."""
    line = _error(capsys, "fit", "--config", "char_lm/tiny", "--data.paths", "foo.txt")
    assert "takes" not in line and 'Parser key "paths"' in line


def test_switching_the_core_keeps_only_what_it_accepts(tmp_path) -> None:
    args = ["--config", str(TINY), "--model.init_args.core", "zoo.cores.LayerNormLSTM",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    core = cli.model.model.core
    assert isinstance(core, LayerNormLSTM) and core.backend == "explicit"
    assert core.hidden_size == 32  # what the new core accepts is kept


@pytest.mark.parametrize("corpus", ["shakespeare", "bible", "shapes", "tuxpaint", "coco", "wmt14"])
def test_prepare_help_names_the_command(corpus, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["prepare", corpus, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rnn-zoo prepare {corpus}")


def test_diagnose_measures_a_trained_core_beside_fresh_ones(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")
    argv = ["diagnose", "gradient-flow", "--out", str(tmp_path), "--steps", "30",
            "--hidden-size", "16", "--pretrained", "char_lm-lstm-shakespeare-v1"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    distances = lines[1].split()[1:]  # the header: core, T-t=0, T-t=1, ...
    assert distances[0] == "T-t=0" and distances[-1] == "T-t=20"

    def norms(name: str) -> list[float]:
        row = next(line for line in lines if line.startswith(name))
        return [float(x) for x in row.split()[-len(distances) :]]

    trained, fresh = norms("LSTM 512 (trained)"), norms("LSTM (forget bias 1)")
    # 20 steps back, the trained LSTM still passes the gradient on; a fresh one has lost most
    assert trained[-1] / trained[0] > fresh[-1] / fresh[0]
    assert "LSTM 512 (trained)" in (tmp_path / "gradient_flow.csv").read_text()
