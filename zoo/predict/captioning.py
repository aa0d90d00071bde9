"""Using a captioning model: caption pictures in batches, and the attention behind a caption."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from datamodules.images import image_transform, preprocessing, read_picture, to_rgb
from datamodules.vocab import BOS, EOS, PAD, Vocab
from zoo.classpath import resolve_class
from zoo.decoding import DecodeSettings, search
from zoo.errors import UserError
from zoo.models.captioning import CaptioningModel
from zoo.plots import attention_figure, save_figure
from zoo.predict.base import Predictor
from zoo.published import load_state

#: Captioning's search unless a recipe says otherwise: beam 3, at most 20 words.
CAPTION_DECODING = DecodeSettings(beam_size=3, max_len_a=0.0, max_len_b=20)

Picture = str | Path | Image.Image


def caption_settings(values: dict[str, Any] | None = None, **decoding: Any) -> DecodeSettings:
    """Captioning settings from a recipe's ``decoding`` entry and overrides; ``max_len`` (words)
    is ``max_len_b`` with ``max_len_a = 0``."""
    settings = DecodeSettings.from_dict(values, **CAPTION_DECODING.to_dict())
    if decoding.get("max_len") is not None:
        decoding = {**decoding, "max_len_a": 0.0, "max_len_b": decoding["max_len"]}
    decoding.pop("max_len", None)
    return settings.override(**decoding)


@torch.no_grad()
def decode_images(
    model: CaptioningModel, images: Tensor, settings: DecodeSettings | None = None, **decoding
) -> list[list[int]]:
    """The best caption (ids, without ``</s>``) of each picture: beam search, greedy search for
    a beam of 1, as :class:`~zoo.tasks.captioning.CaptioningTask` decodes.

    Args:
        model: in eval mode, on ``images``' device.
        images: ``(B, 3, H, W)`` normalised pictures (or cached ``(B, S, F)`` features).
        settings: the search (default :data:`CAPTION_DECODING`); ``decoding`` overrides it
            (``beam_size``, ``max_len``, ...).
    """
    settings = caption_settings(settings.to_dict() if settings else None, **decoding)
    state, size = model.encode(images), images.shape[0]
    hyps = search(
        model.decode_step, model.reorder_state, state, BOS, EOS, settings.max_len_b, settings,
        batch_size=size,
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


@torch.no_grad()
def attention_overlays(
    model: CaptioningModel,
    vocab: Vocab,
    pictures: Sequence[Image.Image],
    captions: Sequence[Sequence[str]],
    transform: v2.Transform,
) -> list:
    """One attention-overlay figure (:func:`zoo.plots.attention_figure`) per picture and its
    caption (words), e.g. the model's own, the pictures read with ``transform`` as in training.
    The model is run in eval mode and left in the mode it was in."""
    device = next(model.parameters()).device
    pixels = torch.stack([transform(p) for p in pictures]).to(device)
    was_training = model.training
    maps = attention_maps(model.eval(), pixels, [vocab.encode(words) for words in captions])
    model.train(was_training)
    return [
        attention_figure(picture, [*words, "</s>"], weights)
        for picture, words, weights in zip(pictures, captions, maps)
    ]


@dataclass
class Caption:
    """One picture's caption: ``ids`` (without ``</s>``), ``text``, and, when asked for,
    ``attention`` ``(len(ids) + 1, S)``."""

    ids: list[int]
    text: str
    attention: Tensor | None = None


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


class Captioner(Predictor):
    """A :class:`~zoo.models.captioning.CaptioningModel`, its vocabulary, its pictures'
    preprocessing (``{"image_size", "mean", "std"}``) and its recipe's decoding settings::

        captioner = zoo.load("captioning-showattendtell-shapes-v1")
        captioner.caption(["a.png", "b.jpg"])
    """

    task = "captioning"
    extras = ("hyper_parameters", "data_state", "data_hparams")
    required = ("data_state", "data_hparams")

    def __init__(
        self,
        model: CaptioningModel,
        vocab: Vocab,
        preprocessing: dict[str, Any],
        decoding: DecodeSettings | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, meta)
        self.vocab, self.preprocessing = vocab, preprocessing
        self.decoding = decoding or CAPTION_DECODING

    @classmethod
    def build(cls, config: Any, state: dict[str, Tensor], extras: dict[str, Any]) -> Captioner:
        hparams = extras["hyper_parameters"]
        model_class = resolve_class(hparams.get("model_class"), CaptioningModel, "zoo.models.")
        model = model_class.from_config(config)
        vocab = Vocab.from_list(extras["data_state"]["vocab"])
        if len(vocab) != model.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} words, the model {model.vocab_size}")
        load_state(model, state)
        settings = caption_settings(hparams.get("decoding"))
        return cls(model, vocab, preprocessing(extras["data_hparams"]), settings)

    @property
    def transform(self) -> v2.Transform:
        """Picture -> ``(3, H, W)`` tensor, as in training."""
        return image_transform(**self.preprocessing)

    def read(self, images: Sequence[Picture]) -> Tensor:
        """``(B, 3, H, W)`` pictures (paths or ``PIL.Image`` s), as the model was trained on them.

        Raises:
            DataError: a picture that cannot be read, naming it.
        """
        transform = self.transform
        pictures = [to_rgb(p) if isinstance(p, Image.Image) else read_picture(p) for p in images]
        return torch.stack([transform(picture) for picture in pictures])

    def captions(
        self,
        images: Sequence[Picture],
        *,
        batch_size: int = 32,
        with_attention: bool = False,
        progress: Callable[[int], Any] | None = None,
        **decoding: Any,
    ) -> list[Caption]:
        """Caption pictures in batches; ``decoding`` overrides the recipe's settings
        (``beam_size``, ``max_len``). ``progress(n)`` is called after each batch of ``n``.

        Raises:
            DataError: a picture that cannot be read, naming it (nothing is returned).
        """
        settings = caption_settings(self.decoding.to_dict(), **decoding)
        results: list[Caption] = []
        for start in range(0, len(images), batch_size):
            pixels = self.read(images[start : start + batch_size]).to(self.device)
            best = decode_images(self.model, pixels, settings)
            maps = (
                attention_maps(self.model, pixels, best) if with_attention else [None] * len(best)
            )
            results += [
                Caption(ids, " ".join(self.vocab.decode(ids)), weights)
                for ids, weights in zip(best, maps)
            ]
            if progress is not None:
                progress(len(best))
        return results

    def caption(self, images: Sequence[Picture], **decoding: Any) -> list[str]:
        """The caption of each picture (paths or ``PIL.Image`` s); ``decoding`` as for
        :meth:`captions`."""
        return [caption.text for caption in self.captions(images, **decoding)]

    def plot_attention(
        self, images: Sequence[str | Path], captions: Sequence[Caption], out_dir: Path
    ) -> list[Path]:
        """Write one attention figure per picture into ``out_dir`` (created if needed), each
        atomically; returns the files in input order."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path, name, caption in zip(images, plot_names(images), captions):
            words = [*self.vocab.decode(caption.ids), "</s>"]
            save_figure(
                attention_figure(read_picture(path), words, caption.attention), out_dir / name
            )
            written.append(out_dir / name)
        return written
