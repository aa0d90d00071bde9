"""The published captioning demo models look at the pictures, and reproduce their metrics.

The shapes model (``captioning-showattendtell-shapes-v1``, trained by
recipes/captioning/demo-shapes.yaml) is scored on the shapes test split, regenerated here in a
fraction of a second: ``rnn-zoo prepare shapes --seed 0`` draws each picture from (seed, split,
index) alone, so ``--train 0 --val 0 --test 200`` gives the very test pictures of the demo's data.

The shuffled-image check is the control of a captioning result: the same captions decoded from
pictures that belong to other captions must score far lower, or the model writes the data set's
likely sentences without looking. The Tux Paint model needs ``rnn-zoo prepare tuxpaint --out
data/tuxpaint`` (a Debian package download) and is skipped without it.
"""

import json
from pathlib import Path

import pytest
import torch

from datamodules.images import load_image
from zoo.cli import main
from zoo.hub import pretrained_info
from zoo.metrics import score_captions
from zoo.predict import load_pretrained
from zoo.predict.captioning import attention_maps, decode_images

ROOT = Path(__file__).resolve().parent.parent
SHAPES_MODEL = "captioning-showattendtell-shapes-v1"
TUXPAINT_MODELS = ["captioning-showattendtell-tuxpaint-v1", "captioning-showattendtell-tuxpaint-v2"]
TUXPAINT = ROOT / "data" / "tuxpaint"
TARGET_BLEU4 = 0.5  # the recipe's target (test/bleu4 50 on the 0-100 scale)


def _evaluate(name: str, data: Path):
    """The published captioner, the test split and the model's own captions of its pictures."""
    split = json.loads((data / "annotations" / "captions_test.json").read_text(encoding="utf-8"))
    captioner = load_pretrained(name, task="captioning")
    images = list(split["images"])
    transform = captioner.transform
    pixels = torch.stack([transform(load_image(data / "images" / e["file_name"])) for e in images])
    references: dict[int, list[str]] = {e["id"]: [] for e in images}
    for ann in split["annotations"]:
        references[ann["image_id"]].append(ann["caption"])
    with torch.inference_mode():
        ids = decode_images(captioner.model, pixels, captioner.decoding)
    return captioner, images, pixels, references, ids


@pytest.fixture(scope="module")
def shapes_test(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    assert main(["prepare", "shapes", "--out", str(out), "--train", "0", "--val", "0",
                 "--test", "200", "--seed", "0"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def demo(shapes_test):
    return _evaluate(SHAPES_MODEL, shapes_test)


def _scores(captioner, images, references, ids) -> dict[str, float]:
    hypotheses = {e["id"]: " ".join(captioner.vocab.decode(c)) for e, c in zip(images, ids)}
    return score_captions(references, hypotheses, meteor=False)


def _bleu4(captioner, images, references, ids) -> float:
    return _scores(captioner, images, references, ids)["bleu4"]


def _check_manifest_metrics(name, captioner, images, references, ids) -> None:
    scores = _scores(captioner, images, references, ids)
    for key, value in pretrained_info(name)["metrics"].items():
        assert 100 * scores[key.removeprefix("test_")] == pytest.approx(value, abs=0.05), key


def test_shapes_model_reproduces_its_test_scores(demo):
    _check_manifest_metrics(SHAPES_MODEL, *demo[:2], *demo[3:])


@pytest.mark.parametrize("name", TUXPAINT_MODELS)
def test_tuxpaint_model_reproduces_its_test_scores(name):
    if not (TUXPAINT / "annotations" / "captions_test.json").is_file():
        pytest.skip("needs rnn-zoo prepare tuxpaint --out data/tuxpaint (a Debian download)")
    captioner, images, _, references, ids = _evaluate(name, TUXPAINT)
    _check_manifest_metrics(name, captioner, images, references, ids)


def test_caption_command_with_a_published_model(shapes_test, capsys):
    split = json.loads((shapes_test / "annotations" / "captions_test.json").read_text())
    entry = next(e for e in split["images"] if len(e["objects"]) == 1)
    picture = shapes_test / "images" / entry["file_name"]
    assert main(["caption", "--pretrained", SHAPES_MODEL, "--device", "cpu", str(picture)]) == 0
    path, caption = capsys.readouterr().out.rstrip("\n").split("\t")
    obj = entry["objects"][0]
    assert path == str(picture) and f"{obj['color']} {obj['shape']}" in caption


def test_shapes_demo_reaches_its_bleu4_and_fails_on_shuffled_pictures(demo):
    captioner, images, pixels, references, ids = demo
    bleu4 = _bleu4(captioner, images, references, ids)
    # Shuffled: picture i is captioned, and scored against the references of picture order[i].
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = _bleu4(captioner, [images[j] for j in order], references, ids)
    print(
        f"\nshapes demo test BLEU-4: {bleu4:.3f}; pictures shuffled against captions: {shuffled:.3f}"
    )
    assert bleu4 >= TARGET_BLEU4
    assert shuffled < bleu4 / 2


def _cells_on(bbox: list[int], picture_side: int, grid: int) -> list[int]:
    """Grid cells (row-major) that overlap a ``[x, y, w, h]`` box of a ``picture_side`` picture."""
    x, y, w, h = bbox
    cell = picture_side / grid
    cols = range(int(x // cell), int(min((x + w - 1) // cell, grid - 1)) + 1)
    rows = range(int(y // cell), int(min((y + h - 1) // cell, grid - 1)) + 1)
    return [r * grid + c for r in rows for c in cols]


def test_shapes_demo_attends_to_the_shape_it_names(demo):
    """Attention mass on the cells of the named shape while the model writes its colour and shape
    words, for the pictures with one shape, against the share of the grid those cells cover."""
    captioner, images, pixels, _, ids = demo
    single = [i for i, e in enumerate(images) if len(e["objects"]) == 1]
    with torch.inference_mode():
        maps = attention_maps(captioner.model, pixels[single], [ids[i] for i in single])
    grid = round(maps[0].shape[1] ** 0.5)
    on_shape, chance = [], []
    for i, weights in zip(single, maps):
        obj, words = images[i]["objects"][0], captioner.vocab.decode(ids[i])
        steps = [t for t, word in enumerate(words) if word in (obj["color"], obj["shape"])]
        cells = _cells_on(obj["bbox"], images[i]["width"], grid)
        on_shape += [weights[t, cells].sum().item() for t in steps]
        chance.append(len(cells) / grid**2)
    mass, share = sum(on_shape) / len(on_shape), sum(chance) / len(chance)
    print(f"\nattention on the named shape: {mass:.2f} of the mass on {share:.2f} of the grid")
    assert mass > 2 * share
