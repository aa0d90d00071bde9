"""``rnn-zoo caption``: describe pictures with a trained captioning model.

::

    rnn-zoo caption --checkpoint runs/captioning/tiny/checkpoints/last.ckpt a.jpg b.png
    rnn-zoo caption --pretrained captioning-lstm-coco-v1 --beam 5 photos/*.jpg | cut -f2

One line ``path<TAB>caption`` per picture, in the order given (the path as it was typed; ``cut -f2``
keeps the captions). Pictures are read the way the training data were
(:func:`datamodules.coco_captions.load_image`: transparency flattened onto white, grey and palette
pictures converted to RGB), resized to the training ``image_size`` and normalised with the
training statistics, then decoded in batches (beam search; greedy with ``--beam 1``). Every
picture is captioned before anything is printed or drawn, so a bad one stops the command with one
line naming it and leaves no partial output.

``--plot-attention DIR`` (Show, Attend and Tell only) draws, for every picture, the attention map
behind each word of its caption over the picture, as in Xu et al. (2015), figures 2-3.

From Python::

    captioner = load_captioner("last.ckpt")
    captions = caption_images(captioner, ["a.jpg", "b.png"])
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from datamodules.coco_captions import IMAGENET_MEAN, IMAGENET_STD, default_transform, load_image
from datamodules.parallel_text import BOS, EOS, PAD, Vocab
from zoo.checkpoint import read_checkpoint, submodule_state
from zoo.decoding import beam_search, greedy_search
from zoo.errors import CheckpointError, DataError, UserError
from zoo.models.captioning import CaptioningModel

PLOT_COLUMNS = 5  # subplots per row of an attention figure
PLOT_SIDE = 224  # pixels of the picture shown under the attention maps


# ------------------------------------------------------------------------------- loading
@dataclass
class Captioner:
    """What captioning new pictures needs.

    Attributes:
        model: in eval mode, on its device.
        vocab: the training vocabulary.
        preprocessing: ``{"image_size": int, "mean": [3 floats], "std": [3 floats]}``.
        decoding: the training recipe's search settings, ``beam_size`` and ``max_len``.
    """

    model: CaptioningModel
    vocab: Vocab
    preprocessing: dict[str, Any]
    decoding: dict[str, Any] = field(default_factory=dict)

    @property
    def transform(self) -> v2.Transform:
        """Picture -> ``(3, H, W)`` tensor, as in training."""
        return image_transform(**self.preprocessing)


def preprocessing(data_hparams: dict[str, Any]) -> dict[str, Any]:
    """The picture settings of a training run's data module: its ``image_size``, and the
    normalisation statistics (ImageNet's, the only ones the data module uses, unless it saved
    ``mean`` / ``std``).

    Raises:
        KeyError: no ``image_size``.
    """
    return {
        "image_size": int(data_hparams["image_size"]),
        "mean": [float(x) for x in data_hparams.get("mean") or IMAGENET_MEAN],
        "std": [float(x) for x in data_hparams.get("std") or IMAGENET_STD],
    }


def image_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Transform:
    """The data module's :func:`~datamodules.coco_captions.default_transform` (the same object
    for its own statistics), with ``mean`` / ``std`` in its normalisation."""
    transform = default_transform(image_size)
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return transform
    return v2.Compose([*transform.transforms[:-1], v2.Normalize(list(mean), list(std))])


def model_class(class_path: object) -> type[CaptioningModel]:
    """The captioning model class a checkpoint names; only classes under ``zoo.models`` are
    imported.

    Raises:
        ValueError: an unknown class, or not a captioning model.
    """
    import importlib

    module, _, name = str(class_path).rpartition(".")
    if not module.startswith("zoo.models"):
        raise ValueError(f"unknown model class {class_path!r}")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, CaptioningModel)):
        raise ValueError(f"{class_path!r} is not a captioning model")
    return cls


def build_captioner(
    hparams: dict[str, Any],
    state: dict[str, Tensor],
    data_state: dict[str, Any],
    data_hparams: dict[str, Any],
    load: Callable[[torch.nn.Module, dict[str, Tensor]], None] | None = None,
) -> Captioner:
    """A :class:`Captioner` (model in eval mode, on the CPU) from a checkpoint's parts.

    Args:
        hparams: the task's ``hyper_parameters`` (``model``, ``model_class``, ``decoding``).
        state: the model's ``state_dict``.
        data_state: the data module's state, ``{"vocab": [words]}``.
        data_hparams: the data module's settings (``image_size``).
        load: loads ``state`` into the model (default: strict ``load_state_dict``).

    Raises:
        KeyError, TypeError, ValueError, RuntimeError: parts that do not fit together.
    """
    model = model_class(hparams.get("model_class")).from_config(hparams["model"])
    vocab = Vocab.from_list(data_state["vocab"])
    if len(vocab) != model.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} words, the model {model.vocab_size}")
    if load is None:
        model.load_state_dict(state)
    else:
        load(model, state)
    decoding = dict(hparams.get("decoding") or {})
    return Captioner(model.eval(), vocab, preprocessing(data_hparams), decoding)


def load_captioner(path: str | Path, device: str | torch.device = "cpu") -> Captioner:
    """The captioner of a training checkpoint, its model on ``device``.

    Raises:
        CheckpointError: not a captioning checkpoint, or one without vocabulary or data settings.
    """
    checkpoint = read_checkpoint(path, "captioning")
    for key, what in (("data_state", "vocabulary"), ("data_hparams", "data settings")):
        if not checkpoint.get(key):
            raise CheckpointError(f"{path}: has no {what}; was it saved before training began?")
    try:
        captioner = build_captioner(
            checkpoint["hyper_parameters"], submodule_state(checkpoint),
            checkpoint["data_state"], checkpoint["data_hparams"],
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: config does not match the weights ({message})") from None
    captioner.model.to(device)
    return captioner


def pretrained_captioner(name: str, device: str | torch.device = "cpu") -> Captioner:
    """The captioner of a published model (see ``rnn-zoo pretrained list``)."""
    import zoo.hub_captioning  # noqa: F401  (registers the captioning builder with the hub)
    from zoo.hub import load_pretrained

    loaded = load_pretrained(name, map_location=device)
    if loaded.task != "captioning":
        raise UserError(f"{name} is a {loaded.task} model; rnn-zoo caption needs captioning")
    extras = loaded.extras
    return Captioner(loaded.model, extras["vocab"], extras["preprocessing"], extras["decoding"])


# ----------------------------------------------------------------------------- captioning
def read_picture(path: str | Path) -> Image.Image:
    """An RGB picture, read as the data module reads training pictures.

    Raises:
        DataError: one line naming a missing file, a directory, or a file that does not decode.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a picture")
    try:
        return load_image(path)
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: not a readable picture ({err})") from None
    except DataError as err:  # PIL messages are one line, but make sure
        raise DataError(" ".join(str(err).split("\n"))) from None


def read_images(paths: Sequence[str | Path], transform: v2.Transform) -> Tensor:
    """``(B, 3, H, W)`` pictures, as the model was trained on them."""
    return torch.stack([transform(read_picture(path)) for path in paths])


@torch.no_grad()
def decode_images(
    model: CaptioningModel, images: Tensor, beam_size: int = 3, max_len: int = 20
) -> list[list[int]]:
    """The best caption (ids, without ``</s>``) of each picture: beam search, greedy search
    when ``beam_size`` is 1, as :class:`~zoo.tasks.captioning.CaptioningTask` decodes.

    Args:
        model: in eval mode, on ``images``' device.
        images: ``(B, 3, H, W)`` normalised pictures.
    """
    state, size = model.encode(images), images.shape[0]
    if beam_size == 1:
        hyps = greedy_search(model.decode_step, state, BOS, EOS, max_len, batch_size=size)
    else:
        hyps = beam_search(
            model.decode_step, model.reorder_state, state, BOS, EOS, max_len,
            beam_size=beam_size, batch_size=size,
        )  # fmt: skip
    return hyps.best


@torch.no_grad()
def attention_maps(
    model: CaptioningModel, images: Tensor, captions: Sequence[Sequence[int]]
) -> list[Tensor]:
    """The attention weights behind given captions (forced decoding, e.g. of the model's own).

    Returns:
        One ``(len(caption) + 1, S)`` float CPU tensor per picture: row ``t`` is alpha_t over
        the ``S`` feature-grid cells while the model predicts word ``t`` (the last row predicts
        ``</s>``).

    Raises:
        UserError: a model without attention (Show and Tell).
    """
    if not hasattr(model, "forward_with_attention"):
        raise UserError(f"a {type(model).__name__} has no attention to plot")
    width = max(len(c) for c in captions) + 1
    captions_in = torch.full((len(captions), width), PAD, dtype=torch.long)
    for row, caption in zip(captions_in, captions):
        row[: len(caption) + 1] = torch.tensor([BOS, *caption], dtype=torch.long)
    _, weights = model.forward_with_attention(images, captions_in.to(images.device))
    weights = weights.float().cpu()  # (B, T, S)
    return [weights[i, : len(c) + 1] for i, c in enumerate(captions)]


@dataclass
class Caption:
    """One picture's caption: ``ids`` (without ``</s>``), ``text``, and, when asked for,
    ``attention`` ``(len(ids) + 1, S)``."""

    ids: list[int]
    text: str
    attention: Tensor | None = None


def caption_images(
    captioner: Captioner,
    paths: Sequence[str | Path],
    *,
    beam_size: int | None = None,
    max_len: int | None = None,
    batch_size: int = 32,
    with_attention: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> list[Caption]:
    """Caption pictures in batches; ``beam_size`` / ``max_len`` default to the training
    recipe's. ``progress(n)`` is called after each batch of ``n`` pictures.

    Raises:
        DataError: a picture that cannot be read, naming it (nothing is returned).
    """
    model, transform = captioner.model, captioner.transform
    device = next(model.parameters()).device
    beam_size = beam_size or captioner.decoding.get("beam_size", 3)
    max_len = max_len or captioner.decoding.get("max_len", 20)
    results: list[Caption] = []
    for start in range(0, len(paths), batch_size):
        images = read_images(paths[start : start + batch_size], transform).to(device)
        best = decode_images(model, images, beam_size, max_len)
        maps = attention_maps(model, images, best) if with_attention else [None] * len(best)
        results += [
            Caption(ids, " ".join(captioner.vocab.decode(ids)), weights)
            for ids, weights in zip(best, maps)
        ]
        if progress is not None:
            progress(len(best))
    return results


# ------------------------------------------------------------------------------- plotting
def attention_figure(picture: Image.Image, words: Sequence[str], weights: Tensor | np.ndarray):
    """A matplotlib ``Figure``: the picture, then one subplot per word with its attention map
    upsampled over the picture, which is darkened where the model did not look (as in Xu et al.
    2015, figure 3; each map is scaled to its own maximum).

    Args:
        picture: the RGB picture (shown squashed to a square, as the model sees it).
        words: the caption's words and ``</s>``, one per row of ``weights``.
        weights: ``(len(words), S)``, ``S`` a square grid (rows x columns of the CNN's features).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, dtype=np.float32)
    side = math.isqrt(weights.shape[1])
    if side * side != weights.shape[1]:
        raise UserError(f"{weights.shape[1]} attention weights do not form a square grid")
    pixels = np.asarray(picture.convert("RGB").resize((PLOT_SIDE, PLOT_SIDE), Image.BICUBIC))
    panels = len(words) + 1
    columns = min(PLOT_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows), dpi=100)
    FigureCanvasAgg(fig)
    extent = (0, PLOT_SIDE, PLOT_SIDE, 0)
    for panel in range(rows * columns):
        ax = fig.add_subplot(rows, columns, panel + 1)
        ax.set_axis_off()
        if panel >= panels:
            continue
        ax.imshow(pixels, extent=extent)
        if panel == 0:
            continue
        grid = weights[panel - 1].reshape(side, side)  # (rows, cols) of the feature grid
        shade = np.zeros((side, side, 4), dtype=np.float32)  # black, opaque where unattended
        shade[..., 3] = 0.8 * (1.0 - grid / max(float(grid.max()), 1e-8))
        ax.imshow(shade, extent=extent, interpolation="bilinear")
        ax.set_title(words[panel - 1], fontsize=10)
    fig.tight_layout()
    return fig


def plot_names(paths: Sequence[str | Path]) -> list[str]:
    """``<stem>.png`` per picture; a repeated stem gets ``-2``, ``-3``, ... in input order."""
    names, seen = [], set()
    for path in paths:
        stem, n = Path(path).stem or "picture", 1
        name = f"{stem}.png"
        while name in seen:
            n += 1
            name = f"{stem}-{n}.png"
        seen.add(name)
        names.append(name)
    return names


def plot_attention(
    paths: Sequence[str | Path], captions: Sequence[Caption], vocab: Vocab, out_dir: Path
) -> list[Path]:
    """Write one attention figure per picture into ``out_dir`` (created if needed), each
    atomically; returns the files in input order."""
    from zoo.alignment import save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, name, caption in zip(paths, plot_names(paths), captions):
        words = [*vocab.decode(caption.ids), "</s>"]
        fig = attention_figure(read_picture(path), words, caption.attention)
        save_figure(fig, out_dir / name)
        written.append(out_dir / name)
    return written


# ------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-zoo caption",
        description="Caption pictures (JPEG, PNG, ... of any size) with a captioning model.",
        epilog="Prints one line 'path<TAB>caption' per picture, in the order given (cut -f2 keeps "
        "the captions). Pictures are preprocessed as in training (image size and normalisation "
        "from the model); defaults for the search come from the training recipe. A picture that "
        "cannot be read stops the command before anything is printed. --plot-attention DIR "
        "writes DIR/<name>.png per picture (a repeated name gets -2, -3, ...).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a captioning training checkpoint (.ckpt)")
    source.add_argument("--pretrained", help="a published model (see: rnn-zoo pretrained list)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="pictures")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy search)")
    parser.add_argument("--max-len", type=int, default=None, help="most words per caption")
    parser.add_argument("--batch-size", type=int, default=32, help="pictures per batch")
    parser.add_argument(
        "--plot-attention", type=Path, default=None, metavar="DIR",
        help="draw each word's attention map over its picture (Show, Attend and Tell only)",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (("--beam", args.beam), ("--max-len", args.max_len)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    plot = args.plot_attention
    if plot is not None and plot.exists() and not plot.is_dir():
        raise UserError(f"{plot}: --plot-attention needs a directory, this is a file")
    for path in map(Path, args.images):  # the cheap checks first, before loading a model
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a picture")
        if not path.exists():
            raise DataError(f"{path}: picture not found")


def main(argv: list[str] | None = None) -> int:
    from zoo.translate import _device

    args = _parser().parse_args(argv)
    _check_args(args)
    device = _device(args.device)
    if args.pretrained:
        captioner, source = pretrained_captioner(args.pretrained, device), args.pretrained
    else:
        captioner, source = load_captioner(args.checkpoint, device), args.checkpoint
    plot = args.plot_attention
    if plot is not None and not hasattr(captioner.model, "forward_with_attention"):
        name = type(captioner.model).__name__
        raise UserError(f"{source}: a {name} has no attention to plot; it needs ShowAttendTell")
    from tqdm import tqdm

    disable = True if args.quiet else None  # None: only on a terminal
    with tqdm(total=len(args.images), unit="img", file=sys.stderr, disable=disable) as bar:
        captions = caption_images(
            captioner, args.images, beam_size=args.beam, max_len=args.max_len,
            batch_size=args.batch_size, with_attention=plot is not None, progress=bar.update,
        )  # fmt: skip
    lines = (f"{path}\t{caption.text}\n" for path, caption in zip(args.images, captions))
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
    if plot is not None:
        plot_attention(args.images, captions, captioner.vocab, plot)
    return 0
