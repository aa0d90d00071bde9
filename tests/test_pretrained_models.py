"""The published weights in checkpoints/: they load, and their recorded metrics are reproduced."""

import io
import sys

import pytest
import torch

from datamodules.char_text import CharTextDataModule
from datamodules.parallel_text import BUNDLED_BIBLE
from datamodules.text_files import read_lines
from zoo.cli import main
from zoo.hub import list_pretrained, pretrained_info
from zoo.metrics import score_corpus
from zoo.predict import load_pretrained
from zoo.predict.char_lm import evaluate
from zoo.predict.translation import translate

BIBLE = BUNDLED_BIBLE

CHAR_MODELS = [n for n in list_pretrained() if n.startswith("char_lm-")]


def test_the_three_cells_are_published():
    assert {n.split("-")[1] for n in CHAR_MODELS} >= {"rnn", "gru", "lstm"}


@pytest.mark.parametrize("name", CHAR_MODELS)
def test_char_model_reproduces_its_test_bpc(name):
    info = pretrained_info(name)
    loaded = load_pretrained(name)  # the shipped file, checksum verified
    assert sum(p.numel() for p in loaded.model.parameters()) == info["num_params"]
    dm = CharTextDataModule(batch_size=32, seq_len=100)  # the layout the manifest states
    assert loaded.vocab == dm.vocab
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


MT_MODELS = [n for n in list_pretrained() if n.startswith("translation-")]


def test_a_translation_model_is_published():
    assert any("-bible-" in name for name in MT_MODELS)


@pytest.mark.parametrize("name", MT_MODELS)
def test_translation_model_reproduces_its_test_bleu(name):
    """The whole bundled test split (1,935 verses), greedy and beam 5, as rnn-zoo test scores it."""
    info = pretrained_info(name)
    loaded = load_pretrained(name, task="translation")
    assert sum(p.numel() for p in loaded.model.parameters()) == info["num_params"]
    data, decoding = loaded.codec, loaded.decoding
    sources = read_lines(BIBLE / "test.en.gz")
    references = read_lines(BIBLE / "test.fr.gz")
    metrics = info["metrics"]
    for beam, suffix in ((decoding.beam_size, ""), (1, "_greedy")):
        hypotheses = translate(loaded.model, data, sources, beam_size=beam, batch_size=64)
        bleu, chrf, _ = score_corpus(hypotheses, references)
        assert bleu.score == pytest.approx(metrics[f"test_bleu{suffix}"], abs=0.05)
        assert chrf.score == pytest.approx(metrics[f"test_chrf{suffix}"], abs=0.05)
    assert metrics["test_bleu"] > metrics["test_bleu_greedy"]  # beam search helps


def test_translate_with_a_published_model(monkeypatch, capsys):
    name = next(n for n in MT_MODELS if "-bible-" in n)
    source = "In the beginning God created the heavens and the earth.\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source.encode())))
    assert main(["translate", "--pretrained", name, "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Dieu" in out
