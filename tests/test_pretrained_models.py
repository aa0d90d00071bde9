"""The published weights in checkpoints/: they load, and their recorded metrics are reproduced."""

import pytest
import torch

from datamodules.char_text import CharTextDataModule
from zoo.cli import main
from zoo.hub import list_pretrained, load_pretrained, pretrained_info
from zoo.tasks.char_lm import evaluate

CHAR_MODELS = [n for n in list_pretrained() if n.startswith("char_lm-")]


def test_the_three_cells_are_published():
    assert {n.split("-")[1] for n in CHAR_MODELS} >= {"rnn", "gru", "lstm"}


@pytest.mark.parametrize("name", CHAR_MODELS)
def test_char_model_reproduces_its_test_bpc(name):
    info = pretrained_info(name)
    loaded = load_pretrained(name)  # the shipped file, checksum verified
    assert sum(p.numel() for p in loaded.model.parameters()) == info["num_params"]
    dm = CharTextDataModule(batch_size=32, seq_len=100)  # the layout the manifest states
    assert loaded.extras["vocab"] == dm.vocab
    with torch.inference_mode():
        metrics = evaluate(loaded.model, dm.test_dataloader())
    assert metrics["bpc"] == pytest.approx(info["metrics"]["test_bpc"], abs=2e-3)
    assert metrics["ppl"] == pytest.approx(info["metrics"]["test_ppl"], abs=5e-3)


def test_lstm_beats_rnn_as_the_lecture_says():
    bpc = {n.split("-")[1]: pretrained_info(n)["metrics"]["test_bpc"] for n in CHAR_MODELS}
    assert bpc["lstm"] < bpc["rnn"] and bpc["gru"] < bpc["rnn"]


def test_sample_from_a_published_model(capsys):
    name = next(n for n in CHAR_MODELS if "-rnn-" in n)
    assert main(["sample", "--pretrained", name, "--prime", "ROMEO:", "--length", "60",
                 "--seed", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) == 66
