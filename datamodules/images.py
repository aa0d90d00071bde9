"""Pictures as the captioning models read them: any file Pillow opens, as RGB, resized and
normalised as in training. Training, the feature cache and ``rnn-zoo caption`` all read through
:func:`load_image`, so a picture means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import v2

from zoo.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from a picture of any mode Pillow opens, by the mode's real range.

    16-bit grey (``I;16``, ``I;16B``) is scaled by 255 / 65535 rather than clipped at 255 (which
    ``convert("RGB")`` does, turning it white); 32-bit integer (``I``) and float (``F``) grey carry
    no range of their own and are read as 8-bit, 16-bit or 0-1 values by their largest one.
    Transparency (``RGBA``, ``LA``, ``PA``, a palette's or a grey picture's transparent colour)
    is flattened onto white; ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr`` convert as Pillow does.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * (255.0 / _full_scale(values, mode))), 0, 255)
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _full_scale(values: np.ndarray, mode: str) -> float:
    """The value that means white: 65535 for 16-bit modes, else by the largest value."""
    if mode.startswith("I;16"):
        return 65535.0
    peak = float(values.max()) if values.size else 0.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    return 255.0 if peak <= 255 else max(65535.0, peak)


def load_image(path: Path) -> Image.Image:
    """An 8-bit RGB picture of any mode (:func:`to_rgb`), as training and ``rnn-zoo caption``
    read it.

    Raises:
        DataError: one line naming a file that does not decode.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise DataError(f"{path}: picture not found") from None
    except IMAGE_ERRORS as err:
        raise DataError(f"{path}: not a readable picture ({err})") from None


def picture_problem(path: Path, check: str = "header") -> str | None:
    """Why ``path`` cannot be read as a picture, or None.

    Args:
        check: "exists" (a file is there), "header" (PIL opens it and ``verify`` s it: a PNG is
            read whole and its CRCs checked, a JPEG only up to its header) or "decode" (every
            pixel, as training will).
    """
    if not path.is_file():
        return "picture not found"
    if check == "exists":
        return None
    try:
        with Image.open(path) as image:
            image.load() if check == "decode" else image.verify()
    except IMAGE_ERRORS as err:
        return f"not a readable picture ({err})"
    return None


def default_transform(image_size: int) -> v2.Transform:
    """Resize to a square ``image_size``, then a float tensor normalised with ImageNet's
    statistics (what torchvision's pretrained ResNets expect). No flips or crops: a caption may
    say "on the left"."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def image_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Transform:
    """:func:`default_transform` (the same pipeline for its own statistics), with ``mean`` /
    ``std`` in its normalisation."""
    transform = default_transform(image_size)
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return transform
    return v2.Compose([*transform.transforms[:-1], v2.Normalize(list(mean), list(std))])


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
