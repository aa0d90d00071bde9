"""``rnn-zoo caption``: train the tiny recipe, caption from its checkpoint and from a published
file, and fail with one line for bad pictures and checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from datamodules.images import read_images
from zoo.cli import main
from zoo.cli.zoo_cli import ZooCLI
from zoo.cores import LSTM
from zoo.models.captioning import ImageEncoder, ShowAndTell
from zoo.predict import Captioner, load_pretrained
from zoo.predict.captioning import decode_images, plot_names
from zoo.tasks.captioning import CaptioningTask

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "captioning" / "tiny.yaml"
PICTURES = ROOT / "tests" / "data" / "coco_tiny" / "images"
NAME = "captioning-showattendtell-coco_tiny-v1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recipe trained for one epoch (3 steps) with checkpointing: the task in memory,
    its data module and its checkpoint."""
    run = tmp_path_factory.mktemp("run")
    cli = ZooCLI(
        CaptioningTask,
        args=[
            "fit", "--config", str(RECIPE), "--trainer.max_steps", "3",
            "--trainer.enable_checkpointing", "true", "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        ],
    )  # fmt: skip
    (ckpt,) = run.rglob("last.ckpt")  # the final weights: those of the task in memory
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    for name, value in cli.model.state_dict().items():  # the checkpoint is the final model
        assert torch.equal(saved[name], value), name
    return cli.model.eval(), cli.datamodule, ckpt


def _caption(capsys, *argv) -> list[str]:
    assert main(["caption", *map(str, argv)]) == 0
    return capsys.readouterr().out.splitlines()


def _error_line(capsys, *argv) -> str:
    assert main(["caption", *map(str, argv)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("rnn-zoo: error:"), (out, err)
    return lines[0]


def test_captions_match_the_in_memory_model(trained, capsys, monkeypatch) -> None:
    task, data, ckpt = trained
    images, paths = [], []
    for split in ("train", "val", "test"):  # the data module's own pipeline, all 6 pictures
        for batch in data.eval_loader(split, rank=0, world_size=1):
            images.append(batch.images)
            paths += [data.splits[split].paths[i] for i in batch.image_ids.tolist()]
    images = torch.cat(images)
    captioner = Captioner.from_checkpoint(ckpt)
    assert captioner.vocab == data.vocab and captioner.preprocessing["image_size"] == 32
    assert torch.equal(read_images(paths, captioner.transform), images)  # same preprocessing
    fed = []  # what the command gives the model: this tiny model's captions hardly depend on it

    read = Captioner.read

    def spy(self, pictures):
        fed.append(read(self, pictures))
        return fed[-1]

    monkeypatch.setattr(Captioner, "read", spy)
    for beam, flags in ((3, []), (1, ["--beam", 1])):  # the recipe's beam, then greedy search
        expected = [
            data.decode(ids)
            for ids in decode_images(task.model, images, task.decoding, beam_size=beam)
        ]
        lines = _caption(capsys, "--checkpoint", ckpt, *flags, "--batch-size", 4, *paths)
        assert lines == [f"{path}\t{text}" for path, text in zip(paths, expected)]
        assert torch.equal(torch.cat(fed), images)
        fed.clear()


def test_transparent_grey_palette_and_jpeg_pictures(trained, tmp_path, capsys) -> None:
    _, _, ckpt = trained
    source = Image.open(PICTURES / "shapes_000002.png").convert("RGB")
    rgba = source.convert("RGBA")
    white = [p == (255, 255, 255, 255) for p in rgba.getdata()]
    rgba.putdata([(0, 0, 0, 0) if w else p for w, p in zip(white, rgba.getdata())])
    rgba.save(tmp_path / "rgba.png")  # transparent, black underneath: flattened onto white
    source.save(tmp_path / "rgb.png")
    source.convert("L").save(tmp_path / "grey.png")
    source.convert("P").save(tmp_path / "palette.png")
    source.resize((300, 200)).save(tmp_path / "wide.jpg", quality=90)
    transform = Captioner.from_checkpoint(ckpt).transform
    pair = read_images([tmp_path / "rgba.png", tmp_path / "rgb.png"], transform)
    assert torch.equal(pair[0], pair[1])
    names = ["rgba.png", "grey.png", "palette.png", "wide.jpg", "rgb.png"]
    lines = _caption(capsys, "--checkpoint", ckpt, *(tmp_path / n for n in names))
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / n) for n in names]
    assert all(line.split("\t")[1] for line in lines)
    assert lines[0].split("\t")[1] == lines[-1].split("\t")[1]


def _bad_picture(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "directory":
        path.mkdir()
    elif kind == "corrupt":
        path.write_bytes(b"this is not a picture\n")
    elif kind == "truncated":
        path.write_bytes((PICTURES / "shapes_000003.png").read_bytes()[:120])
    return path


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "picture not found"),
        ("directory", "is a directory"),
        ("corrupt", "not a readable picture"),
        ("truncated", "not a readable picture"),
    ],
)
def test_a_bad_picture_is_one_line_and_nothing_is_written(
    trained, tmp_path, capsys, kind, match
) -> None:
    _, _, ckpt = trained
    bad, plots = _bad_picture(tmp_path, kind), tmp_path / "plots"
    good = PICTURES / "shapes_000001.png"
    line = _error_line(capsys, "--checkpoint", ckpt, "--plot-attention", plots, good, bad)
    assert f"{bad}: {match}" in line
    assert not plots.exists()


def test_bad_checkpoints_are_one_line(tmp_path, capsys) -> None:
    picture = PICTURES / "shapes_000001.png"
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    assert f"{text}: not a PyTorch checkpoint" in _error_line(capsys, "--checkpoint", text, picture)
    missing = tmp_path / "nope.ckpt"
    assert f"{missing}: no such checkpoint" in _error_line(capsys, "--checkpoint", missing, picture)
    for task in ("char_lm", "translation"):
        other = tmp_path / f"{task}.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": {"task": task}}, other)
        line = _error_line(capsys, "--checkpoint", other, picture)
        assert f"{other}: is a {task} checkpoint, not captioning" in line


def _show_and_tell_checkpoint(path: Path, vocab: list[str]) -> Path:
    torch.manual_seed(0)
    model = ShowAndTell(
        len(vocab), ImageEncoder("small", channels=8), partial(LSTM, hidden_size=16), 8
    )
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {
                "task": "captioning",
                "model": model.config(),
                "model_class": "zoo.models.captioning.ShowAndTell",
                "decoding": {"beam_size": 2, "max_len": 5},
            },
            "data_state": {"vocab": vocab},
            "data_hparams": {"image_size": 32},
        },
        path,
    )
    return path


def test_plot_attention_writes_one_png_per_picture(trained, tmp_path, capsys) -> None:
    _, data, ckpt = trained
    pictures = [PICTURES / "shapes_000001.png", PICTURES / "shapes_000002.png"]
    pictures.append(tmp_path / pictures[0].name)  # the same name in another folder
    pictures[2].write_bytes(pictures[0].read_bytes())
    out = tmp_path / "plots" / "new"
    lines = _caption(capsys, "--checkpoint", ckpt, "--plot-attention", out, *pictures)
    assert len(lines) == 3
    names = ["shapes_000001.png", "shapes_000002.png", "shapes_000001-2.png"]
    assert plot_names(pictures) == names and sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    # Show and Tell has no attention: refused before any picture is read.
    plain = _show_and_tell_checkpoint(tmp_path / "sat.ckpt", data.vocab.to_list())
    assert len(_caption(capsys, "--checkpoint", plain, pictures[0])) == 1
    line = _error_line(capsys, "--checkpoint", plain, "--plot-attention", tmp_path / "x", *pictures)
    assert f"{plain}: a ShowAndTell has no attention" in line
    assert not (tmp_path / "x").exists()


def test_export_then_pretrained_gives_the_same_captions(trained, tmp_path, capsys, monkeypatch):
    _, data, ckpt = trained
    monkeypatch.setenv("RNN_ZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")
    assert main(["export", "--checkpoint", str(ckpt), "--name", NAME, "--out", str(tmp_path)]) == 0
    (entry,) = yaml.safe_load(capsys.readouterr().out)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": [entry]}))
    monkeypatch.setenv("RNN_ZOO_MANIFEST", str(manifest))
    loaded = load_pretrained(NAME)
    assert loaded.task == "captioning" and loaded.vocab == data.vocab
    assert loaded.preprocessing["image_size"] == 32
    assert (loaded.decoding.beam_size, loaded.decoding.max_len_a, loaded.decoding.max_len_b) == (
        3, 0, 12,
    )  # fmt: skip
    pictures = sorted(PICTURES.glob("*.png"))
    expected = _caption(capsys, "--checkpoint", ckpt, *pictures)
    assert _caption(capsys, "--pretrained", NAME, *pictures) == expected
    line = _error_line(capsys, "--pretrained", NAME, PICTURES)
    assert f"{PICTURES}: is a directory" in line
