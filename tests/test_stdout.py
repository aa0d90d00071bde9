"""What sample, translate, caption and the listings write on standard output: a write that
fails is one error line naming standard output, and a reader that closed the pipe ends the
command quietly."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from zoo.cli import main

CHAR = "char_lm-lstm-shakespeare-v1"
COMMANDS = ["sample", "translate", "caption", "recipes", "pretrained list", "pretrained info"]


class FailingStream(io.StringIO):
    """A standard output whose every write fails with ``error``."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


def _commands(tmp_path) -> dict[str, list[str]]:
    picture = tmp_path / "square.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture)
    source = tmp_path / "source.txt"
    source.write_text("In the beginning God created the heaven and the earth.\n")
    return {
        "sample": ["sample", "--pretrained", CHAR, "--length", "50", "--device", "cpu"],
        "translate": ["translate", "--pretrained", "translation-rnnsearch-bible-v1",
                      "--input", str(source), "--device", "cpu"],
        "caption": ["caption", "--pretrained", "captioning-showattendtell-shapes-v1",
                    str(picture), "--device", "cpu", "--quiet"],
        "recipes": ["recipes"],
        "pretrained list": ["pretrained", "list"],
        "pretrained info": ["pretrained", "info", CHAR],
    }  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_standard_output_is_named(command, tmp_path, monkeypatch, capsys) -> None:
    argv = _commands(tmp_path)[command]
    monkeypatch.setattr(sys, "stdout", FailingStream(OSError(errno.ENOSPC, os.strerror(28))))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "rnn-zoo: error: standard output: could not be written (No space left on device)"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_closed_reader_ends_the_command_quietly(command, tmp_path, monkeypatch, capsys) -> None:
    argv = _commands(tmp_path)[command]
    monkeypatch.setattr(sys, "stdout", FailingStream(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    assert main(argv) == 141
    assert "error" not in capsys.readouterr().err


def test_sample_into_head_exits_like_cat(tmp_path) -> None:
    """A real pipe closed after a few bytes: status 141 and nothing on stderr, also not from the
    interpreter's flush at exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "sample", "--pretrained", CHAR, "--length", "100000",
           "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err.decode()
    assert err == b""


def test_diagnose_into_a_pipe_closed_at_once_exits_like_cat(tmp_path) -> None:
    """Its table is written after the work, when ``| head`` may long be gone."""
    cmd = [sys.executable, "-m", "zoo.cli", "diagnose", "gradient-flow", "--steps", "5",
           "--hidden-size", "8", "--out", str(tmp_path)]  # fmt: skip
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(write)
    assert done.returncode == 141, done.stderr.decode()
    assert done.stderr == b""
    assert (tmp_path / "gradient_flow.csv").is_file()  # the work itself was done


def test_sample_into_dev_full_is_one_line_and_status_2() -> None:
    """A real full device: one line, status 2, and no second failure when Python flushes what is
    still buffered at exit ('Exception ignored', status 120)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "sample", "--pretrained", CHAR, "--length", "50",
           "--device", "cpu"]  # fmt: skip
    with open("/dev/full", "w") as full:
        done = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
    assert done.returncode == 2, done.stderr.decode()
    assert done.stderr.decode().splitlines() == [
        "rnn-zoo: error: standard output: could not be written (No space left on device)"
    ]
