"""``rnn-zoo fit --init_from`` with published weights: a name (its recipe from the manifest) or a
``.safetensors`` file; the model starts from them and new text is read in their vocabularies."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest
import torch

from datamodules.char_text import BUNDLED_SHAKESPEARE
from datamodules.parallel_text import BUNDLED_BIBLE
from datamodules.prepare.shapes import make_shapes
from datamodules.text_files import read_lines
from zoo.cli import main
from zoo.hub import download, pretrained_info
from zoo.predict import load_pretrained, read_published
from zoo.published import write_file

ROOT = Path(__file__).resolve().parent.parent
CHAR = "char_lm-lstm-shakespeare-v1"
TRANSLATION = "translation-rnnsearch-bible-v1"


def _fit(tmp_path: Path, *args: str) -> int:
    run = tmp_path / "run"
    return main([
        "fit", *args, "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar",
        "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
    ])  # fmt: skip


def _logged(tmp_path: Path, key: str) -> list[float]:
    rows = csv.DictReader(open(next((tmp_path / "run").rglob("metrics.csv"))))
    return [float(row[key]) for row in rows if row.get(key)]


def test_a_published_name_starts_the_fit_from_its_weights(tmp_path) -> None:
    """No --config: the manifest's recipe. One step at lr 0 leaves the weights as published, so
    the validation after it is the manifest's val/bpc, in the layout the manifest states."""
    assert _fit(
        tmp_path, "--init_from", CHAR, "--trainer.max_steps", "1", "--trainer.precision", "32",
        "--trainer.val_check_interval", "1", "--model.optimizer.init_args.lr", "0",
        "--data.batch_size", "32", "--data.seq_len", "100",
    ) == 0  # fmt: skip
    (bpc,) = _logged(tmp_path, "val/bpc")
    assert bpc == pytest.approx(pretrained_info(CHAR)["metrics"]["val_bpc"], abs=2e-3)


def test_a_published_file_needs_a_recipe_unless_it_is_the_published_one(tmp_path, capsys) -> None:
    copy = tmp_path / "mine.safetensors"
    shutil.copy(download(CHAR), copy)  # the published file under another name: its recipe
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--init_from", str(copy), "--print_config"])
    assert exit_.value.code == 0 and "hidden_size: 512" in capsys.readouterr().out
    loaded = load_pretrained(CHAR)
    unnamed = tmp_path / "unnamed.safetensors"  # exported without a published name
    write_file(unnamed, loaded.model, name=None, task="char_lm", config=loaded.model.config(),
               extras={"vocab": list(loaded.vocab.chars)})  # fmt: skip
    assert main(["fit", "--init_from", str(unnamed)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"rnn-zoo: error: {unnamed}: not a published model's file; add --config RECIPE"


def test_weights_of_another_shape_are_refused(tmp_path, capsys) -> None:
    tiny = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")  # 1 x 32: not the published 2 x 512
    assert _fit(tmp_path, "--config", tiny, "--init_from", CHAR) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"rnn-zoo: error: {CHAR}: weights do not fit this model (")
    assert "shape mismatch" in line


def test_a_checkpoint_of_another_shape_names_the_weight_that_differs(tmp_path, capsys) -> None:
    tiny = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")  # a 1 x 32 LSTM
    assert main(["fit", "--config", tiny, "--trainer.max_steps", "1",
                 "--trainer.default_root_dir", str(tmp_path / "first"),
                 "--trainer.enable_checkpointing", "true",
                 "--trainer.enable_progress_bar", "false"]) == 0  # fmt: skip
    (checkpoint,) = (tmp_path / "first").rglob("last.ckpt")
    wider = ["--model.init_args.core.init_args.hidden_size", "48"]
    assert _fit(tmp_path, "--config", tiny, *wider, "--init_from", str(checkpoint)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"rnn-zoo: error: {checkpoint}: weights do not fit this model (model.")
    assert "is (128, 16) in the checkpoint but (192, 16) in the model); pass the settings" in line


def test_init_from_and_ckpt_path_together_are_refused(tmp_path, capsys) -> None:
    tiny = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")
    assert _fit(tmp_path, "--config", tiny, "--init_from", CHAR, "--ckpt_path", "x.ckpt") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("rnn-zoo: error: --init_from and --ckpt_path: give one;")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("swaps", [{"Z": "é"}, {"Z": "é", "X": "x"}])
def test_text_with_other_characters_is_refused(swaps, tmp_path, capsys) -> None:
    """Shakespeare with 'é' for 'Z' (as many characters as the weights', not the same ones), and
    also 'x' for 'X' (one fewer): either way the error names the characters, not shapes."""
    text = gzip.open(BUNDLED_SHAKESPEARE, "rt", encoding="utf-8").read()
    assert all(old in text for old in swaps) and "é" not in text
    for old, new in swaps.items():
        text = text.replace(old, new)
    other = tmp_path / "other.txt"
    other.write_text(text, encoding="utf-8")
    assert _fit(tmp_path, "--init_from", CHAR, "--data.paths", f"[{other}]") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    lacks = ", ".join(repr(c) for c in sorted(swaps))
    assert line.startswith(
        "rnn-zoo: error: the data's characters differ from the weights' (1 the weights lack: "
        f"'é'; {len(swaps)} the data lacks: {lacks}): "
    )


def test_another_tasks_weights_are_refused(tmp_path, capsys) -> None:
    tiny = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")
    assert _fit(tmp_path, "--config", tiny, "--init_from", TRANSLATION) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"rnn-zoo: error: {TRANSLATION} is a translation model, not char_lm"


def test_translation_reads_new_text_with_the_published_vocabularies(tmp_path) -> None:
    """Fine-tuned on 400 other verses (too few for SentencePiece to learn 8,000 pieces from),
    the data module reads them with the weights' codec: the checkpoint after one step at lr 0
    holds the published SentencePiece models, vocabularies and weights."""
    pairs = zip(
        read_lines(BUNDLED_BIBLE / "train.en.gz"), read_lines(BUNDLED_BIBLE / "train.fr.gz")
    )
    tsv = tmp_path / "few.tsv"
    tsv.write_text("".join(f"{en}\t{fr}\n" for en, fr in list(pairs)[:800:2]), encoding="utf-8")
    run = tmp_path / "run"
    assert main([
        "fit", "--init_from", TRANSLATION, "--trainer.max_steps", "1", "--trainer.precision", "32",
        "--model.optimizer.init_args.lr", "0", "--trainer.default_root_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
        "--data.train_tsv", str(tsv), "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.callbacks", "[]",  # rnn-zoo fit adds last.ckpt, in <run>/checkpoints
    ]) == 0  # fmt: skip
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    published = read_published(TRANSLATION)
    state = published.extras["data_state"]
    assert checkpoint["data_state"].keys() == state.keys()
    for key, value in state.items():
        saved = checkpoint["data_state"][key]
        assert torch.equal(saved, value) if isinstance(value, torch.Tensor) else saved == value
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    for name, tensor in published.state.items():
        torch.testing.assert_close(weights[name], tensor, atol=0, rtol=0)


def test_captioning_reads_new_captions_with_the_published_words(tmp_path, monkeypatch) -> None:
    """12 new shapes pictures, whose captions use fewer words than the published 33: the data
    module takes the weights' word list, so the model keeps their size and their weights."""
    monkeypatch.chdir(tmp_path)  # anything the recipe writes relative to the working directory
    make_shapes(tmp_path / "shapes", n_train=12, n_val=4, n_test=2, image_size=48, seed=7)
    name, run = "captioning-showattendtell-shapes-v1", tmp_path / "run"
    assert main([
        "fit", "--init_from", name, "--trainer.max_steps", "1", "--trainer.logger", "false",
        "--model.optimizer.init_args.lr", "0", "--trainer.default_root_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
        "--data.data_dir", str(tmp_path / "shapes"), "--trainer.callbacks", "[]",
    ]) == 0  # fmt: skip
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    published = read_published(name)
    words = published.extras["data_state"]["vocab"]
    assert checkpoint["data_state"]["vocab"] == words and len(words) == 33
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    batch_norm = ("running_mean", "running_var", "num_batches_tracked")  # a step moves them
    for key, tensor in published.state.items():
        if not key.endswith(batch_norm):
            torch.testing.assert_close(weights[key], tensor, atol=0, rtol=0)
