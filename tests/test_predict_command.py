"""``rnn-zoo predict`` for every task, from a checkpoint alone: per-character surprisal, the
hypotheses in input order, COCO-format captions; each equal to what the predictor gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.predict import Captioner, CharLM, Translator

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--trainer.enable_checkpointing", "true", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
         "--trainer.max_steps", "3"]  # fmt: skip


def _trained(task: str, root: Path) -> Path:
    assert main(["fit", "--config", f"{task}/tiny", *FLAGS, "--trainer.default_root_dir",
                 str(root)]) == 0  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


def _predict(ckpt: Path, data: Path, root: Path) -> None:
    assert main(["predict", "--ckpt_path", str(ckpt), "--data.predict", str(data),
                 "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false"]) == 0  # fmt: skip


@pytest.fixture(autouse=True)
def in_the_repository(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny recipes' data paths are relative to it


def test_char_lm_writes_the_surprisal_of_every_character(tmp_path) -> None:
    ckpt = _trained("char_lm", tmp_path)
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n"
    (tmp_path / "hamlet.txt").write_text(text)
    _predict(ckpt, tmp_path / "hamlet.txt", tmp_path)
    rows = (tmp_path / "predictions.tsv").read_text().splitlines()
    assert rows[0] == "position\tcharacter\tbits" and len(rows) == len(text)  # 1 + (n - 1)
    chars = [json.loads(row.split("\t")[1]) for row in rows[1:]]
    assert "".join(chars) == text[1:]  # each character after the first, in order
    bits = [float(row.split("\t")[2]) for row in rows[1:]]
    expected = CharLM.from_checkpoint(ckpt).evaluate(text, seq_len=32)["bpc"]
    assert sum(bits) / len(bits) == pytest.approx(expected, abs=1e-3)


def test_char_lm_says_which_characters_it_scores_as_unknown(tmp_path, capsys) -> None:
    ckpt = _trained("char_lm", tmp_path)
    (tmp_path / "mixed.txt").write_text("To be 日本, or not 日 to be\n")
    capsys.readouterr()
    _predict(ckpt, tmp_path / "mixed.txt", tmp_path)
    warning = [line for line in capsys.readouterr().err.splitlines() if "vocabulary" in line]
    assert warning == [
        f"rnn-zoo: warning: {tmp_path / 'mixed.txt'}: 3 characters (2 distinct: '日本') are not "
        "in the model's vocabulary; they are scored as its unknown symbol and written as U+FFFD"
    ]
    rows = (tmp_path / "predictions.tsv").read_text().splitlines()[1:]
    assert [json.loads(r.split("\t")[1]) for r in rows].count("\ufffd") == 3


def test_translation_writes_the_hypotheses_in_input_order(tmp_path) -> None:
    ckpt = _trained("translation", tmp_path)
    lines = ["In the beginning God created the heavens and the earth.", "And God said.",
             "Let there be light.", "And there was light."]  # fmt: skip
    (tmp_path / "in.en").write_text("\n".join(lines) + "\n")
    _predict(ckpt, tmp_path / "in.en", tmp_path)
    written = (tmp_path / "predictions.txt").read_text().split("\n")[:-1]
    assert written == Translator.from_checkpoint(ckpt).translate(lines)


def test_captioning_writes_coco_results(tmp_path) -> None:
    ckpt = _trained("captioning", tmp_path)
    pictures = sorted((ROOT / "tests" / "data" / "coco_tiny" / "images").glob("*.png"))[:3]
    _predict(ckpt, pictures[0].parent, tmp_path)
    results = json.loads((tmp_path / "predictions.json").read_text())
    every = sorted(pictures[0].parent.glob("*.png"))
    assert [r["image_id"] for r in results] == list(range(len(every)))
    assert [r["caption"] for r in results] == Captioner.from_checkpoint(ckpt).caption(every)


def test_ddp_predict_merges_the_ranks_parts_in_input_order(tmp_path) -> None:
    """Two processes each translate their share (5 lines: the sampler pads one rank); rank 0
    writes one file in input order, the same as one process."""
    ckpt = _trained("translation", tmp_path)
    lines = ["In the beginning God created the heavens and the earth.", "And God said.",
             "Let there be light.", "And there was light.", "And God saw the light."]  # fmt: skip
    (tmp_path / "in.en").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "predict", "--ckpt_path", str(ckpt),
           "--data.predict", str(tmp_path / "in.en"), "--trainer.default_root_dir", str(out),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    written = (out / "predictions.txt").read_text().split("\n")[:-1]
    assert written == Translator.from_checkpoint(ckpt).translate(lines)
    assert not list(out.glob(".predictions.rank*"))  # the ranks' parts are merged away
