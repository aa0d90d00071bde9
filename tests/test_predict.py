"""The predict layer: ``zoo.load`` gives the predictor of a file's task, from a published name, a
``.safetensors`` file or a training checkpoint, and the predictors do what their tasks' commands
do; commands answer ``--help`` without importing torch."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from datamodules.char_text import StreamLoader
from datamodules.vocab import CharVocab
from zoo.cli import COMMANDS
from zoo.cli import main as cli_main
from zoo.cores import GRU
from zoo.errors import CheckpointError, PretrainedError
from zoo.hub import DEFAULT_MANIFEST
from zoo.models import CharRNN
from zoo.predict import Captioner, CharLM, Translator, load, load_checkpoint
from zoo.predict.char_lm import LN2, evaluate

ROOT = Path(__file__).resolve().parent.parent
PICTURE = ROOT / "tests" / "data" / "coco_tiny" / "images" / "shapes_000001.png"
CHAR_MODEL = "char_lm-lstm-shakespeare-v1"
HAMLET = """HAMLET:
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them.
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")
    monkeypatch.setenv("RNN_ZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNN_ZOO_MANIFEST", raising=False)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (CHAR_MODEL, CharLM),
        ("translation-rnnsearch-bible-v1", Translator),
        ("captioning-showattendtell-shapes-v1", Captioner),
    ],
)
def test_load_gives_the_predictor_of_the_files_task(name, kind) -> None:
    by_name = load(name)
    assert type(by_name) is kind and by_name.meta["name"] == name and not by_name.model.training
    by_file = zoo.load(DEFAULT_MANIFEST.parent / f"{name}.safetensors")  # the facade, a path
    assert type(by_file) is kind
    for a, b in zip(by_name.model.state_dict().values(), by_file.model.state_dict().values()):
        assert torch.equal(a, b)
    other = "char_lm" if kind is not CharLM else "translation"
    with pytest.raises((CheckpointError, PretrainedError), match=f"not {other}"):
        load(name, task=other)


def test_published_models_do_their_jobs() -> None:
    lm = zoo.load(CHAR_MODEL)
    text = lm.generate("ROMEO:", 80, temperature=0.7, seed=1)
    assert (
        text.startswith("ROMEO:")
        and len(text) == 86
        and text == lm.generate("ROMEO:", 80, temperature=0.7, seed=1)
    )
    translator = zoo.load("translation-rnnsearch-bible-v1")
    (french,) = translator.translate(["In the beginning God created the heavens and the earth."])
    assert "Dieu" in french and "commencement" in french
    captioner = zoo.load("captioning-showattendtell-shapes-v1")
    from_path, from_image = captioner.caption([PICTURE, Image.open(PICTURE)])
    assert from_path == from_image and from_path.startswith("a ")


def test_char_lm_evaluate_scores_text_and_prefers_shakespeare() -> None:
    lm = zoo.load(CHAR_MODEL)
    scores = lm.evaluate(HAMLET, seq_len=32)
    loader = StreamLoader(lm.vocab.encode(HAMLET), 1, 32, drop_last=False)
    assert scores == evaluate(lm.model, loader)
    assert scores["bpc"] == pytest.approx(scores["loss"] / LN2)
    shuffled = "".join(sorted(HAMLET, key=lambda c: hash((c, len(c))) % 97))  # same characters
    assert scores["bpc"] < 3.0 < lm.evaluate(shuffled, seq_len=32)["bpc"]


def test_a_training_checkpoint_loads_by_path(tmp_path: Path) -> None:
    vocab = CharVocab(list("abc \n"))
    torch.manual_seed(0)
    model = CharRNN(len(vocab), functools.partial(GRU, hidden_size=8), 8)
    path = tmp_path / "run.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"task": "char_lm", "model": model.config()},
            "vocab": list(vocab.chars),
        },
        path,
    )
    for loaded in (zoo.load(path), load_checkpoint(path, task="char_lm")):
        assert isinstance(loaded, CharLM) and loaded.vocab == vocab
        assert loaded.generate("ab", 20, seed=3) == CharLM(model, vocab).generate("ab", 20, seed=3)
    with pytest.raises(CheckpointError, match="is a char_lm checkpoint, not translation"):
        zoo.load(path, task="translation")


def test_sample_takes_a_local_safetensors_file(capsys) -> None:
    file = DEFAULT_MANIFEST.parent / f"{CHAR_MODEL}.safetensors"
    args = ["--prime", "ROMEO:", "--length", "30", "--seed", "0", "--device", "cpu"]
    assert cli_main(["sample", "--pretrained", str(file), *args]) == 0
    by_file = capsys.readouterr().out
    assert cli_main(["sample", "--pretrained", CHAR_MODEL, *args]) == 0
    assert capsys.readouterr().out == by_file and by_file.startswith("ROMEO:")


def test_help_and_version_import_no_torch() -> None:
    script = (
        "import sys\n"
        "from zoo.cli import main\n"
        f"for argv in {[['--help'], ['--version']] + [[c, '--help'] for c in COMMANDS]!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert f"rnn-zoo {zoo.__version__}" in out.stdout
    assert "rnn-zoo fit --config RECIPE" in out.stdout  # fit's own short help
