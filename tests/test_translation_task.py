"""The translation task end to end: it learns, validation decodes for real and scores with
sacreBLEU, DDP gives the same scores as one process, checkpoints translate from the command line."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import sacrebleu
import torch
import yaml
from pytorch_lightning.loggers import Logger

import zoo.tasks.translation as translation_task
from datamodules.parallel_text import ParallelTextDataModule
from datamodules.text_files import read_lines
from zoo.callbacks import StopAfterEpochs
from zoo.cli import main
from zoo.cores import GRU, LSTM
from zoo.models import RNNSearch, Seq2Seq
from zoo.predict import Translator, export_checkpoint, load_file
from zoo.predict.translation import translate, translate_n_best
from zoo.schedules import DecayAfter
from zoo.tasks.translation import TranslationTask

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "translation" / "tiny.yaml")
WORDS = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def write_corpus(folder: Path, seed: int = 0) -> Path:
    """A toy language pair: ``s3 s7 s1`` translates word by word to ``t3 t7 t1`` (2-6 words);
    400 training pairs, 40 validation and 40 test pairs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 400), ("valid", 40), ("test", 40)):
        words = [rng.integers(0, WORDS, rng.integers(2, 7)) for _ in range(n)]
        for lang, letter in (("en", "s"), ("fr", "t")):
            lines = [" ".join(f"{letter}{w}" for w in sentence) for sentence in words]
            (folder / f"{split}.{lang}").write_text("".join(f"{line}\n" for line in lines))
    return folder


def tiny_task(dm, model_class=RNNSearch, lr=0.005, **kwargs) -> TranslationTask:
    if model_class is RNNSearch:
        model = partial(
            RNNSearch, embedding_dim=32, attention_size=32, maxout_size=32,
            encoder=partial(GRU, hidden_size=32, bidirectional=True),
            decoder=partial(GRU, hidden_size=32),
        )  # fmt: skip
    else:
        model = partial(Seq2Seq, embedding_dim=16, encoder=partial(LSTM, hidden_size=32),
                        decoder=partial(LSTM, hidden_size=32))  # fmt: skip
    return TranslationTask(
        dm.num_src_tokens, dm.num_tgt_tokens, model=model,
        optimizer=partial(torch.optim.Adam, lr=lr), **kwargs,
    )  # fmt: skip


def trainer(root, max_steps=-1, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return pl.Trainer(
        max_steps=max_steps, default_root_dir=root, callbacks=list(callbacks),
        **{**defaults, **kwargs},
    )  # fmt: skip


class RecordLosses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny RNNsearch trained 300 steps on the toy pair, then validated and tested, with the
    text that reached the scorer recorded."""
    root = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(root / "corpus")
    pl.seed_everything(0)
    dm = ParallelTextDataModule(data_dir=str(corpus), batch_size=16, eval_batch_size=16)
    task = tiny_task(dm, beam_size=4, val_beam_size=1)
    losses = RecordLosses()
    scored = []
    original = translation_task.score_corpus

    def recording(hypotheses, references, lowercase=False):
        scored.append((list(hypotheses), list(references)))
        return original(hypotheses, references, lowercase)

    translation_task.score_corpus = recording
    try:
        fit = trainer(root, 300, [losses], limit_val_batches=0)
        fit.fit(task, dm)
        val = trainer(root).validate(task, dm, verbose=False)[0]
        val_scored = scored[-1]
        test = trainer(root).test(task, dm, verbose=False)[0]
        test_scored = scored[-2:]  # beam, then greedy
    finally:
        translation_task.score_corpus = original
    checkpoint = root / "tiny.ckpt"
    fit.save_checkpoint(checkpoint)
    return SimpleNamespace(
        root=root, corpus=corpus, dm=dm, task=task, losses=losses.losses, val=val,
        val_scored=val_scored, test=test, test_scored=test_scored, checkpoint=checkpoint,
    )  # fmt: skip


def test_training_reduces_the_loss(trained):
    first, last = np.mean(trained.losses[:10]), np.mean(trained.losses[-10:])
    assert last < 0.3 * first
    assert trained.val["val/ppl"] < 3.0


def test_validation_decodes_for_real_and_scores_with_sacrebleu(trained):
    sources = read_lines(trained.corpus / "valid.en")
    references = read_lines(trained.corpus / "valid.fr")
    hypotheses, scored_refs = trained.val_scored
    assert scored_refs == references  # every sentence once, in order
    # What validation scored is free-running greedy output, not teacher forcing: the same text
    # as translating the sources one batch at a time outside the trainer.
    model = trained.task.model.eval()
    assert hypotheses == translate(model, trained.dm, sources, beam_size=1)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert trained.val["val/bleu"] == pytest.approx(bleu, abs=1e-4)  # logged as float32
    assert trained.val["val/chrf"] == pytest.approx(chrf, abs=1e-4)
    assert bleu > 70  # it learnt the toy pair
    assert trained.val["val/ppl"] == pytest.approx(np.exp(trained.val["val/loss"]), rel=1e-5)


def test_test_reports_beam_and_greedy(trained):
    sources = read_lines(trained.corpus / "test.en")
    references = read_lines(trained.corpus / "test.fr")
    (beam, _), (greedy, _) = trained.test_scored
    model = trained.task.model.eval()
    assert beam == translate(model, trained.dm, sources, beam_size=4)
    assert greedy == translate(model, trained.dm, sources, beam_size=1)
    for key, hyps in (("test/bleu", beam), ("test/bleu_greedy", greedy)):
        score = sacrebleu.corpus_bleu(hyps, [references]).score
        assert trained.test[key] == pytest.approx(score, abs=1e-4)
    assert {"test/chrf", "test/chrf_greedy", "test/ppl"} <= set(trained.test)


def test_checkpoint_is_plain_data_and_translates_the_same(trained):
    checkpoint = torch.load(trained.checkpoint, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    json.dumps(hparams)
    assert hparams["task"] == "translation"
    assert hparams["model_class"] == "zoo.models.translation.RNNSearch"
    assert hparams["decoding"]["beam_size"] == 4
    assert checkpoint["data_state"]["src_vocab"] == trained.dm.src_vocab.to_list()
    translator = Translator.from_checkpoint(trained.checkpoint)
    sources = read_lines(trained.corpus / "test.en")
    assert (
        translate(translator.model, translator.codec, sources, beam_size=4)
        == (trained.test_scored[0][0])
    )
    assert translator.decoding.beam_size == 4
    assert translator.translate(sources) == trained.test_scored[0][0]  # the recipe's beam


def test_published_file_translates_the_same(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "translation-rnnsearch-toy-v1.safetensors"
    entry = export_checkpoint(trained.checkpoint, out, "translation-rnnsearch-toy-v1")
    loaded = load_file(out)
    assert loaded.task == "translation" and entry["num_params"] == sum(
        p.numel() for p in loaded.model.parameters()
    )
    sources = read_lines(trained.corpus / "test.en")
    data, decoding = loaded.codec, loaded.decoding
    assert decoding.beam_size == 4
    assert translate(loaded.model, data, sources, beam_size=4) == trained.test_scored[0][0]
    # a char model is not a translation model: one clear line
    code, _, err = _translate_cli(monkeypatch, capsys, b"s1\n", "--pretrained",
                                  "char_lm-rnn-shakespeare-v1")  # fmt: skip
    assert code == 2 and "is a char_lm model, not translation" in err
    # --pretrained finds it through a manifest, like a shipped model
    manifest = tmp_path / "manifest.yaml"
    entry |= {"recipe": "tests", "data": "toy", "licence": "none", "metrics": {}}
    manifest.write_text(yaml.safe_dump({"mirror": None, "checkpoints": [entry]}))
    monkeypatch.setenv("RNN_ZOO_MANIFEST", str(manifest))
    monkeypatch.setenv("RNN_ZOO_HOME", str(tmp_path / "cache"))
    data = "".join(f"{line}\n" for line in sources[:5]).encode()
    code, stdout, _ = _translate_cli(monkeypatch, capsys, data, "--pretrained", entry["name"])
    assert code == 0 and stdout.split("\n")[:-1] == trained.test_scored[0][0][:5]


def _translate_cli(monkeypatch, capsys, data: bytes, *args):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code = main(["translate", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_translate_command_keeps_lines_and_order(trained, monkeypatch, capsys):
    sources = read_lines(trained.corpus / "test.en")[:7]
    lines = [sources[0], "", *sources[1:], "   "]
    data = "".join(f"{line}\n" for line in lines).encode()
    code, out, _ = _translate_cli(monkeypatch, capsys, data, "--checkpoint",
                                  str(trained.checkpoint), "--batch-size", "3")  # fmt: skip
    assert code == 0
    outputs = out.split("\n")[:-1]
    assert len(outputs) == len(lines)
    assert outputs[1] == "" and outputs[-1] == ""  # empty lines stay empty
    expected = Translator.from_checkpoint(trained.checkpoint).translate(sources, beam_size=4)
    assert [outputs[0], *outputs[2:-1]] == expected
    # The toy pair is word for word, so the output follows the input line by line.
    assert outputs[0].split()[0] == sources[0].split()[0].replace("s", "t")


def test_translate_command_n_best(trained, monkeypatch, capsys):
    sources = read_lines(trained.corpus / "test.en")[:3]
    data = "\n".join(sources[:2] + ["", sources[2]]).encode()  # no final newline
    code, out, _ = _translate_cli(monkeypatch, capsys, data, "--checkpoint",
                                  str(trained.checkpoint), "--n-best", "3", "--beam", "5")  # fmt: skip
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 4 * 3 and all(len(row) == 2 for row in rows)
    translator = Translator.from_checkpoint(trained.checkpoint)
    n_best = translate_n_best(translator.model, translator.codec, sources, beam_size=5, n_best=3)
    first = n_best[0]
    assert [row[0] for row in rows[:3]] == [text for text, _ in first]
    scores = [float(row[1]) for row in rows[:3]]
    assert scores == sorted(scores, reverse=True)
    assert rows[6:9] == [["", "0.0000"], ["", "-inf"], ["", "-inf"]]  # the empty line


def _error(monkeypatch, capsys, data: bytes, *args) -> str:
    code, _, err = _translate_cli(monkeypatch, capsys, data, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rnn-zoo: error:"), err
    return lines[0]


def test_translate_refuses_to_write_over_its_input(trained, monkeypatch, capsys, tmp_path):
    text = tmp_path / "in.en"
    text.write_text("s1 s2\n")
    for output in (text, tmp_path / "." / "in.en"):
        line = _error(monkeypatch, capsys, b"", "--checkpoint", str(trained.checkpoint),
                      "--input", str(text), "--output", str(output))  # fmt: skip
        assert f"{output}: --output is the --input file" in line
    assert text.read_text() == "s1 s2\n"
    line = _error(monkeypatch, capsys, b"", "--checkpoint", str(trained.checkpoint),
                  "--input", str(tmp_path))  # fmt: skip
    assert f"{tmp_path}: a folder; --input takes a text file" in line


def test_translate_command_errors(trained, monkeypatch, capsys, tmp_path):
    ckpt = ["--checkpoint", str(trained.checkpoint)]
    line = _error(monkeypatch, capsys, b"s1 s2\ns3 \xff s4\n", *ckpt)
    assert "line 2 is not UTF-8" in line
    long = " ".join(["s1"] * 200)  # over the length limit: translated in pieces, not an error
    code, out, err = _translate_cli(monkeypatch, capsys, f"s1\ns2\n{long}\n".encode(), *ckpt)
    assert code == 0 and len(out.splitlines()) == 3
    assert "line 3 is over the length limit; translated in 2 pieces" in err
    line = _error(monkeypatch, capsys, b"s1\n", *ckpt, "--n-best", "6", "--beam", "5")
    assert "--n-best" in line
    other = tmp_path / "char.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"task": "char_lm"}}, other)
    line = _error(monkeypatch, capsys, b"s1\n", "--checkpoint", str(other))
    assert "char_lm checkpoint, not translation" in line


def test_plot_attention_writes_a_png(trained, monkeypatch, capsys, tmp_path):
    out = tmp_path / "attention.png"
    code, text, _ = _translate_cli(monkeypatch, capsys, b"\ns1 s2 s3\ns4\n", "--checkpoint",
                                   str(trained.checkpoint), "--plot-attention", str(out))  # fmt: skip
    assert code == 0 and len(text.splitlines()) == 3
    assert out.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["attention.png"]  # no temporary left


def test_translate_warns_of_source_tokens_outside_the_vocabulary(trained, monkeypatch, capsys):
    data = "".join(["s1 s2 s3\n", *[f"s1 漢字{i} s2\n" for i in range(7)], "s4\n"]).encode()
    code, out, err = _translate_cli(monkeypatch, capsys, data, "--checkpoint",
                                    str(trained.checkpoint), "--quiet", "--window", "3")  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 9
    warnings = [line for line in err.splitlines() if "outside the model's vocabulary" in line]
    assert warnings == [  # one line for the whole input, across its windows
        "rnn-zoo: warning: <stdin>: 7 of 9 lines have source tokens outside the model's "
        "vocabulary, read as <unk> (lines 2, 3, 4, 5, 6, ...)"
    ]


@pytest.mark.parametrize("data", [b"", b"\n  \n\n"])
def test_plot_attention_with_no_line_to_draw_is_an_error(
    trained, monkeypatch, capsys, tmp_path, data
):
    out = tmp_path / "attention.png"
    code, printed, err = _translate_cli(monkeypatch, capsys, data, "--checkpoint",
                                        str(trained.checkpoint), "--plot-attention", str(out),
                                        "--window", "1")  # fmt: skip
    assert code == 2 and f"--plot-attention: no non-empty input line, so {out} is not drawn" in err
    assert list(tmp_path.iterdir()) == [] and printed == ""  # no translation printed either


def test_blank_lines_before_the_plotted_one_keep_their_place(trained, monkeypatch, capsys,
                                                             tmp_path):  # fmt: skip
    sentence = read_lines(trained.corpus / "test.en")[0]
    out = tmp_path / "attention.png"
    code, printed, _ = _translate_cli(monkeypatch, capsys, f"\n \n{sentence}\n".encode(),
                                      "--checkpoint", str(trained.checkpoint), "--window", "1",
                                      "--plot-attention", str(out))  # fmt: skip
    assert code == 0 and out.is_file()
    lines = printed.split("\n")
    assert lines[:2] == ["", ""] and lines[2].strip() and lines[3:] == [""]


class ImageLogger(Logger):
    """A logger that records ``log_image`` calls, like W&B's."""

    name, version, experiment = "images", 0, None

    def __init__(self):
        super().__init__()
        self.images = []

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, images, kwargs))


@pytest.mark.parametrize("model_class", [RNNSearch, Seq2Seq])
def test_attention_images_only_for_attention_models(tmp_path, model_class):
    dm = ParallelTextDataModule(data_dir=str(write_corpus(tmp_path)), eval_batch_size=8)
    task = tiny_task(dm, model_class, attention_examples=2, val_beam_size=1)
    logger = ImageLogger()
    trainer(tmp_path, logger=logger).validate(task, dm, verbose=False)
    if model_class is Seq2Seq:
        assert logger.images == []
        return
    ((key, images, kwargs),) = logger.images
    assert key == "val/attention" and len(images) == len(kwargs["caption"]) == 2
    assert all(image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
               for image in images)  # fmt: skip


def test_scheduler_every_half_epoch_and_fractional_epochs(tmp_path):
    """Sutskever et al.'s schedule: DecayAfter stepped every half epoch, 7.5 epochs (here 1.5)."""
    dm = ParallelTextDataModule(data_dir=str(write_corpus(tmp_path)), batch_size=50)  # 8 batches
    task = tiny_task(
        dm, lr=0.4, lr_scheduler=partial(DecayAfter, gamma=0.5, start=1), scheduler_frequency=0.5
    )
    fit = trainer(tmp_path, max_epochs=3, limit_val_batches=0, callbacks=[StopAfterEpochs(1.5)])
    fit.fit(task, dm)
    assert fit.global_step == 12  # 1.5 epochs of 8 batches
    assert fit.lr_scheduler_configs[0].frequency == 4
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.4 / 2**3)  # 3 half epochs


def test_print_config_shows_the_model_class(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--print_config"])
    out = capsys.readouterr().out
    assert "class_path: zoo.models.RNNSearch" in out and "hidden_size: 32" in out


# ------------------------------------------------------------------------------------- DDP
def _last_row(log_dir: Path) -> dict:
    rows = list(csv.DictReader(open(next(log_dir.rglob("metrics.csv")))))
    return [r for r in rows if r.get("val/bleu")][-1]


def test_ddp_validation_matches_one_process(tmp_path):
    """Validation scores of one checkpoint: 2 processes (gloo), each decoding half the
    sentences, give the corpus BLEU / chrF / perplexity of one process."""
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    corpus = str(write_corpus(tmp_path / "corpus"))
    common = ["--config", TINY, "--data.data_dir", corpus, "--trainer.limit_val_batches", "1.0",
              "--trainer.enable_progress_bar", "false"]  # fmt: skip
    args = [*common, "--trainer.default_root_dir", str(tmp_path / "fit"),
            "--trainer.max_steps", "60", "--trainer.val_check_interval", "60",
            "--trainer.check_val_every_n_epoch", "null"]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    checkpoint = tmp_path / "tiny.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    single = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert single["val/chrf"] > 10  # it decodes something worth comparing

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "validate", *common, "--ckpt_path", str(checkpoint),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out),
           "--trainer.default_root_dir", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    ddp = _last_row(out)
    for key in ("val/bleu", "val/chrf", "val/ppl"):
        assert float(ddp[key]) == pytest.approx(single[key], rel=1e-5), key
