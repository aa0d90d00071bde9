"""``rnn-zoo translate`` streams: each line is answered as soon as the input pauses, files in and
out, and a line over the length limit is translated in pieces instead of stopping the run."""

from __future__ import annotations

import io
import math
import os
import select
import subprocess
import sys

import pytest

from zoo.cli import main
from zoo.cli.translate import _score
from zoo.predict import load

MODEL = "translation-rnnsearch-bible-v1"
LINES = [
    "In the beginning God created the heavens and the earth.",
    "And God said, Let there be light: and there was light.",
]


@pytest.fixture(scope="module")
def translator():
    return load(MODEL)


def _read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def test_each_line_is_answered_before_the_next_is_sent(translator, tmp_path) -> None:
    env = {**os.environ, "RNN_ZOO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "translate", "--pretrained", MODEL, "--device", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        answers = []
        for line in LINES:
            process.stdin.write(line + "\n")
            process.stdin.flush()  # and wait: the input pauses, the line is translated
            answers.append(_read_line(process.stdout, timeout=120).rstrip("\n"))
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        process.kill()
    assert answers == translator.translate(LINES)


def test_files_in_and_out_with_an_over_long_line(translator, tmp_path, capsys) -> None:
    long = " ".join(LINES * 12)  # 12 verses: far over 3 x max_len tokens
    lines = [LINES[0], long, "", LINES[1]]
    source, target = tmp_path / "in.en", tmp_path / "out.fr"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["translate", "--pretrained", MODEL, "--device", "cpu", "--window", "2",
            "--input", str(source), "--output", str(target)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "line 2 is over the length limit; translated in" in captured.err
    out = target.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(out) == 4 and out[2] == ""
    assert [out[0], out[3]] == translator.translate([LINES[0], LINES[1]])
    assert len(out[1].split()) > 10 * len(out[0].split())  # every piece of the long line
    first = translator.translate([LINES[0]])[0]
    assert out[1].startswith(first.split()[0])
    with pytest.raises(ValueError, match="line 1 has"):  # the library refuses when asked to
        translator.search([long], split_too_long=False)


def test_input_that_does_not_exist_is_one_line(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.en"
    assert main(["translate", "--pretrained", MODEL, "--input", str(missing)]) == 2
    assert f"{missing}: no such file for --input" in capsys.readouterr().err


def test_input_from_a_pipe_is_read(translator, tmp_path, capsys) -> None:
    """``--input <(...)`` in a shell names a pipe, not a regular file: it is translated."""
    fifo = tmp_path / "lines.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf '%s\\n' \"$0\" > '{fifo}'", LINES[0]])
    try:
        argv = ["translate", "--pretrained", MODEL, "--device", "cpu", "--input", str(fifo)]
        assert main(argv) == 0
    finally:
        writer.kill()
    assert capsys.readouterr().out == translator.translate([LINES[0]])[0] + "\n"


def test_n_best_scores_keep_their_order_under_a_large_length_penalty(capsys, monkeypatch) -> None:
    """With --length-penalty 10 the scores are ~1e-9: each is printed so that it reads back
    non-zero and in the beam's order."""
    stdin = io.TextIOWrapper(io.BytesIO(f"{LINES[1]}\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    argv = ["translate", "--pretrained", MODEL, "--device", "cpu", "--beam", "4", "--n-best", "4",
            "--length-penalty", "10"]  # fmt: skip
    assert main(argv) == 0
    scores = [float(row.split("\t")[1]) for row in capsys.readouterr().out.splitlines()]
    assert len(scores) == 4 and all(-1e-3 < score < 0 for score in scores)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4


@pytest.mark.parametrize(
    ("score", "text"),
    [(0.0, "0.0000"), (-1.23456, "-1.2346"), (-math.inf, "-inf"), (-0.00006, "-0.0001"),
     (-0.00004, "-4.000000e-05"), (-3.4025712e-09, "-3.402571e-09")],
)  # fmt: skip
def test_n_best_score_format(score, text) -> None:
    assert _score(score) == text
