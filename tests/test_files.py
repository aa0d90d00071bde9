"""zoo.files.atomic_path on targets that are not plain files: a symbolic link is replaced (its
target left alone), a named pipe (as a device would be) is written in place, not replaced."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from zoo.files import write_text


def test_a_symlink_is_replaced_and_the_file_it_pointed_to_is_left_alone(tmp_path):
    """As Lightning's save_last='link' leaves it: last.ckpt -> best.ckpt. Writing last.ckpt must
    not overwrite the best weights."""
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_text("best\n")
    last.symlink_to(best.name)
    write_text(last, "latest\n")
    assert not last.is_symlink() and last.read_text() == "latest\n"
    assert best.read_text() == "best\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_gets_the_bytes_and_stays_a_pipe(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()), daemon=True)
    reader.start()
    write_text(pipe, "through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"]
    assert stat.S_ISFIFO(pipe.stat().st_mode)  # a rename would have made it a regular file
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]
