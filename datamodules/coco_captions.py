"""Image captions in the MS-COCO layout, for Show and Tell (Vinyals et al. 2015) and Show, Attend
and Tell (Xu et al. 2015).

Reads ``<data_dir>/annotations/captions_{train,val,test}.json`` with ``pycocotools`` and the
pictures under ``<data_dir>/images/`` (``image_dir``), the layout that real COCO (after moving the
pictures) and this project's prepare commands (``zoo.prepare.shapes``, ``zoo.prepare.tuxpaint``)
share. With ``karpathy_split`` (the path of Karpathy's ``dataset_coco.json``), the images, their
split (``restval`` joins ``train``) and their captions come from that file instead, and pictures
are found at ``<data_dir>/<filepath>/<filename>``.

Each split goes through::

    annotations -> lower-case word tokens -> skip empty captions (counted)
                -> (training only) drop captions over max_len words (counted) -> ids
                -> Batch(images, captions_in, captions_out, image_ids)

A caption ``y`` becomes ``captions_in = <s> y`` and ``captions_out = y </s>`` (teacher forcing).
Training items are (picture, caption) pairs, one per caption; evaluation items are pictures, one
per image, carrying its first caption (for the validation loss) while :meth:`references` gives all
of them (for BLEU).

Bad input is found at setup, never halfway through an epoch: an annotated picture that is missing
or does not open (``check_images``: "exists", "header" (the default: PIL's ``open`` +
``verify``, which reads a PNG whole and checks its CRCs but only a JPEG's header) or "decode"
(every pixel, slow)) is a one-line :class:`~zoo.errors.DataError` naming the file, or, with
``skip_bad_images``, left out and counted (:attr:`CocoCaptionsDataModule.skipped_images`). Empty
captions are skipped and counted; training captions over ``max_len`` words are dropped and counted
(:attr:`~CocoCaptionsDataModule.dropped_long`); evaluation keeps them all (only the validation loss
truncates the first caption to ``max_len``). A picture that breaks after setup (with "exists" or
"header", a truncated JPEG) still fails its batch with a DataError naming it.

Feature cache (``feature_cache``): with a frozen CNN (``ImageEncoder(freeze=True)``), the task
asks :meth:`CocoCaptionsDataModule.use_feature_cache` to run the CNN once over every picture of the
splits it needs and save its output ``(N, S, F)`` float32 as ``<feature_cache>/<split>-<key>.npy``
(written to a temporary file, then renamed; read back memory-mapped, without pickle). The key
hashes the encoder's config and weights, the transform (so the image size), the split and each
picture's path, size and modification time: anything else gets a new file. Batches then carry
those features in ``Batch.images`` ``(B, S, F)`` and the model skips its CNN
(:meth:`~zoo.models.captioning.CaptioningModel.image_features`), so the decoder trains many times
faster, with exactly the same losses (the CNN of a frozen encoder runs in eval mode, and the
transform has no random step: a random crop or flip would make one cached view wrong, so the
cache refuses such a transform). The file takes ``4 x S x F`` bytes per picture: about 400 KB for
ResNet-101's 7x7x2048 grid at 224 px (some 50 GB for COCO's 123k pictures); pool the grid
(``grid_size``) to shrink it. Under mixed precision the cached features are float32 where the
CNN would have run in lower precision.

Under data parallelism: training loaders are ordinary ``DataLoader`` s with ``shuffle=True``, so
Lightning puts its ``DistributedSampler`` in (disjoint shards, the last one padded with repeats);
evaluation loaders are plain iterables over this rank's contiguous share of the images (Lightning
leaves them alone), so every image is decoded exactly once over all ranks and no duplicate skews
BLEU. Ranks' shares differ by at most one image. The task gathers the hypotheses at epoch end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.parallel_text import BOS, EOS, PAD, Vocab
from zoo.errors import DataError, UserError

SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
#: Splits each stage reads besides train (which defines the vocabulary).
_STAGE_SPLITS = {"fit": ("val",), "validate": ("val",), "test": ("test",)}
#: Splits whose features each stage uses (a feature cache).
_STAGE_FEATURES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def tokenize(caption: str) -> list[str]:
    """Lower-case words and numbers; punctuation is dropped ("A dog's ball." -> a dog's ball)."""
    return _WORD.findall(caption.lower())


def load_image(path: Path) -> Image.Image:
    """An RGB picture (RGBA is flattened onto white, grey and palette converted).

    Raises:
        DataError: one line naming a file that does not decode.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: picture not found") from None
    except _IMAGE_ERRORS as err:
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
    except _IMAGE_ERRORS as err:
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


@dataclass
class SplitData:
    """One split: its images and their tokenised captions (empty ones already skipped)."""

    image_ids: list[int]
    paths: dict[int, Path]
    captions: dict[int, list[str]]  # raw text, for references
    tokens: dict[int, list[list[str]]]
    skipped_empty: int = 0
    skipped_images: int = 0


def _read_coco(path: Path, image_dir: Path) -> tuple[list[dict], list[dict]]:
    from pycocotools.coco import COCO

    if not path.exists():
        raise DataError(f"{path}: no such annotation file; expected annotations/captions_*.json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a COCO captions JSON file ({err})") from None
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: malformed COCO captions file (missing {err})") from None
    images = [
        {"id": img["id"], "path": image_dir / img["file_name"]}
        for img in coco.dataset.get("images", [])
    ]
    anns = [{"image_id": a["image_id"], "caption": a.get("caption")} for a in coco.anns.values()]
    known = {img["id"] for img in images}
    for ann in anns:
        if ann["image_id"] not in known:
            raise DataError(f"{path}: a caption names image id {ann['image_id']}, not listed")
    return images, anns


def _read_karpathy(path: Path, data_dir: Path, split: str) -> tuple[list[dict], list[dict]]:
    if not path.exists():
        raise DataError(f"{path}: no such file; pass Karpathy's dataset_coco.json")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as err:
        raise DataError(f"{path}: not a Karpathy split file ({err})") from None
    wanted = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}[split]
    images, anns = [], []
    for entry in entries:
        if entry.get("split") not in wanted:
            continue
        image_id = entry.get("cocoid", entry.get("imgid"))
        images.append({"id": image_id, "path": data_dir / entry["filepath"] / entry["filename"]})
        anns += [{"image_id": image_id, "caption": s.get("raw")} for s in entry["sentences"]]
    return images, anns


def read_split(
    images: list[dict], anns: list[dict], check: str = "exists", skip_bad: bool = False
) -> SplitData:
    """Group captions by image, tokenise them and skip (and count) empty ones; check that each
    captioned picture reads (:func:`picture_problem` with ``check``).

    Raises:
        DataError: an annotated picture that is missing or unreadable (one line naming it),
            unless ``skip_bad``: then it is left out and counted in ``skipped_images``.
    """
    data = SplitData([img["id"] for img in images], {}, {}, {})
    for img in images:
        data.paths[img["id"]] = img["path"]
        data.captions[img["id"]], data.tokens[img["id"]] = [], []
    for ann in anns:
        text = ann["caption"] if isinstance(ann["caption"], str) else ""
        words = tokenize(text)
        if not words:
            data.skipped_empty += 1
            continue
        data.captions[ann["image_id"]].append(text.strip())
        data.tokens[ann["image_id"]].append(words)
    data.image_ids = [i for i in data.image_ids if data.tokens[i]]  # pictures with a caption
    bad = set()
    for image_id in data.image_ids:
        if problem := picture_problem(data.paths[image_id], check):
            if not skip_bad:
                raise DataError(
                    f"{data.paths[image_id]}: {problem.splitlines()[0]} (image id {image_id}); "
                    "fix or remove it, or set skip_bad_images to leave such pictures out"
                )
            bad.add(image_id)
    data.image_ids = [i for i in data.image_ids if i not in bad]
    data.skipped_images = len(bad)
    return data


# ------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Pictures with one caption each; Lightning moves it with :meth:`to`.

    Attributes:
        images: ``(B, 3, H, W)`` normalised pictures, or ``(B, S, F)`` the frozen CNN's features
            of them when the data module uses a feature cache.
        captions_in: ``(B, T)`` decoder inputs ``<s> y``, padded with ``<pad>`` (0).
        captions_out: ``(B, T)`` targets ``y </s>``, padded.
        image_ids: ``(B,)`` image ids (stay on the CPU), keys of :meth:`references`.
    """

    images: Tensor
    captions_in: Tensor
    captions_out: Tensor
    image_ids: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = {"device": device, "non_blocking": non_blocking}
        return replace(
            self,
            images=self.images.to(**move),
            captions_in=self.captions_in.to(**move),
            captions_out=self.captions_out.to(**move),
        )


def collate(items: Sequence[tuple[Tensor, list[int], int]]) -> Batch:
    """``(image, caption ids, image id)`` items -> a padded :class:`Batch`."""
    width = max(len(ids) for _, ids, _ in items) + 1
    captions_in = torch.full((len(items), width), PAD, dtype=torch.long)
    captions_out = torch.full((len(items), width), PAD, dtype=torch.long)
    for row, (_, ids, _) in enumerate(items):
        captions_in[row, : len(ids) + 1] = torch.tensor([BOS, *ids])
        captions_out[row, : len(ids) + 1] = torch.tensor([*ids, EOS])
    return Batch(
        images=torch.stack([image for image, _, _ in items]),
        captions_in=captions_in,
        captions_out=captions_out,
        image_ids=torch.tensor([image_id for _, _, image_id in items]),
    )


class CaptionDataset(Dataset):
    """Items ``(image (3, H, W), caption ids, image id)`` for a list of ``(image id, ids)``."""

    def __init__(
        self, items: list[tuple[int, list[int]]], paths: dict[int, Path], transform: Any
    ) -> None:
        self.items, self.paths, self.transform = items, paths, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, list[int], int]:
        image_id, ids = self.items[index]
        return self.transform(load_image(self.paths[image_id])), ids, image_id


class FeatureDataset(Dataset):
    """Items ``(features (S, F), caption ids, image id)`` read from a feature cache: row
    ``rows[image id]`` of ``features`` (N, S, F) (memory-mapped) instead of the picture."""

    def __init__(
        self, items: list[tuple[int, list[int]]], rows: dict[int, int], features: np.ndarray
    ) -> None:
        self.items, self.rows, self.features = items, rows, features

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, list[int], int]:
        image_id, ids = self.items[index]
        return torch.from_numpy(np.array(self.features[self.rows[image_id]])), ids, image_id


def random_steps(transform: Any) -> list[str]:
    """Class names of the random steps (``Random*``) anywhere in a transform pipeline."""
    name = type(transform).__name__
    if name.startswith("Random"):
        return [name]
    return [step for inner in getattr(transform, "transforms", []) for step in random_steps(inner)]


def encoder_digest(encoder: nn.Module) -> str:
    """sha256 over an encoder's config (if it has one) and every tensor of its state."""
    config = encoder.config() if hasattr(encoder, "config") else type(encoder).__qualname__
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


class EvalLoader:
    """This rank's evaluation batches: a plain iterable (Lightning adds no sampler to it)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``range(n)``; shares differ by at most one."""
    if n < world_size:
        raise DataError(f"has {n} images, fewer than the {world_size} processes")
    return np.array_split(np.arange(n), world_size)[rank]


class CocoCaptionsDataModule(pl.LightningDataModule):
    """Captions in the MS-COCO layout: a word vocabulary and batches of pictures and captions.

    Args:
        data_dir: folder with ``annotations/captions_{split}.json`` and the pictures.
        image_dir: pictures folder, relative to ``data_dir`` (COCO ``file_name`` s are read there).
        image_size: side of the square the pictures are resized to (224 for ImageNet CNNs; 32 or
            64 for the shapes demos).
        min_count: words seen fewer times in the training captions map to ``<unk>`` (Karpathy's
            NeuralTalk uses 5).
        max_len: training captions over ``max_len`` words are dropped (and counted).
        batch_size: training (picture, caption) pairs per batch.
        eval_batch_size: pictures per evaluation batch.
        num_workers: ``DataLoader`` worker processes (0 loads in the main process).
        karpathy_split: path of Karpathy's ``dataset_coco.json``; None reads the COCO files.
        check_images: how each captioned picture is checked at setup: "exists", "header"
            (PIL ``verify``; a PNG whole, a JPEG's header) or "decode" (every pixel; slow).
        skip_bad_images: leave out (and count) pictures that fail the check, instead of stopping
            with an error naming the first.
        feature_cache: folder for the frozen CNN's features (see the module docstring); None
            runs the CNN on every batch.
    """

    def __init__(
        self,
        data_dir: str,
        image_dir: str = "images",
        image_size: int = 224,
        min_count: int = 5,
        max_len: int = 20,
        batch_size: int = 64,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        karpathy_split: str | None = None,
        check_images: Literal["exists", "header", "decode"] = "header",
        skip_bad_images: bool = False,
        feature_cache: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("image_size", image_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if check_images not in ("exists", "header", "decode"):
            raise ValueError(f"check_images must be exists, header or decode, not {check_images!r}")
        self.data_dir = Path(data_dir)
        self.feature_cache = Path(feature_cache) if feature_cache else None
        self.vocab: Vocab | None = None
        self.splits: dict[str, SplitData] = {}
        self.features: dict[str, tuple[dict[int, int], np.ndarray]] = {}  # split -> rows, (N, S, F)
        self.dropped_long = 0
        self.transform = default_transform(image_size)

    # ----------------------------------------------------------------------- reading
    def _read(self, split: str) -> SplitData:
        if split not in self.splits:
            hp = self.hparams
            if hp.karpathy_split:
                images, anns = _read_karpathy(Path(hp.karpathy_split), self.data_dir, split)
            else:
                path = self.data_dir / "annotations" / f"captions_{split}.json"
                images, anns = _read_coco(path, self.data_dir / hp.image_dir)
            self.splits[split] = read_split(images, anns, hp.check_images, hp.skip_bad_images)
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        """Read the splits a stage needs (train always: it defines the vocabulary)."""
        train = self._read("train")
        if self.vocab is None:
            sentences = [words for i in train.image_ids for words in train.tokens[i]]
            if not sentences:
                raise DataError(f"{self.data_dir}: the training split has no caption")
            self.vocab = Vocab.build(sentences, max_size=1 << 30, min_freq=self.hparams.min_count)
        for split in _STAGE_SPLITS.get(stage, ("val", "test")):
            self._read(split)
        skipped = sum(data.skipped_empty for data in self.splits.values())
        bad = sum(data.skipped_images for data in self.splits.values())
        rank_zero_info(
            f"captions: vocabulary {len(self.vocab)} words (min_count {self.hparams.min_count}); "
            + ", ".join(f"{s} {len(d.image_ids)} images" for s, d in self.splits.items())
            + f"; skipped {skipped} empty captions"
            + (f" and {bad} unreadable pictures" if bad else "")
        )

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            self.setup("fit")
        return len(self.vocab)

    @property
    def skipped_empty(self) -> dict[str, int]:
        """Empty captions skipped, per split read so far."""
        return {split: data.skipped_empty for split, data in self.splits.items()}

    @property
    def skipped_images(self) -> dict[str, int]:
        """Missing or unreadable pictures left out (``skip_bad_images``), per split read so far."""
        return {split: data.skipped_images for split, data in self.splits.items()}

    def references(self, split: str) -> dict[int, list[str]]:
        """All reference captions of each image of ``split``, as written (empty ones skipped)."""
        data = self._read(split)
        return {i: list(data.captions[i]) for i in data.image_ids}

    def reference_tokens(self, split: str) -> dict[int, list[list[str]]]:
        """As :meth:`references`, tokenised as the vocabulary was (for BLEU)."""
        data = self._read(split)
        return {i: [list(words) for words in data.tokens[i]] for i in data.image_ids}

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> a caption (stops at ``</s>``)."""
        return " ".join(self.vocab.decode(ids))

    # ----------------------------------------------------------------------- loaders
    def _train_items(self) -> list[tuple[int, list[int]]]:
        data, items, self.dropped_long = self.splits["train"], [], 0
        for image_id in data.image_ids:
            for words in data.tokens[image_id]:
                if len(words) > self.hparams.max_len:
                    self.dropped_long += 1
                else:
                    items.append((image_id, self.vocab.encode(words)))
        if not items:
            raise DataError(f"{self.data_dir}: no training caption of <= max_len words")
        return items

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def _dataset(self, split: str, items: list[tuple[int, list[int]]]) -> Dataset:
        """Pictures, or their features where ``split`` has a feature cache in use."""
        if split in self.features:
            return FeatureDataset(items, *self.features[split])
        return CaptionDataset(items, self.splits[split].paths, self.transform)

    def train_dataloader(self) -> DataLoader:
        if self.vocab is None:
            self.setup("fit")
        dataset = self._dataset("train", self._train_items())
        return self._loader(dataset, self.hparams.batch_size, shuffle=True)

    def eval_loader(self, split: str, rank: int | None = None, world_size: int | None = None):
        """One item per picture of ``split`` (with its first caption), this rank's share only."""
        if self.vocab is None:
            self.setup(None)
        trainer = self.trainer
        if rank is None:
            rank = trainer.global_rank if trainer is not None else 0
        if world_size is None:
            world_size = trainer.world_size if trainer is not None else 1
        data = self._read(split)
        ids = [data.image_ids[j] for j in shard(len(data.image_ids), rank, world_size)]
        items = [(i, self.vocab.encode(data.tokens[i][0][: self.hparams.max_len])) for i in ids]
        dataset = self._dataset(split, items)
        return EvalLoader(self._loader(dataset, self.hparams.eval_batch_size, shuffle=False))

    def val_dataloader(self) -> EvalLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> EvalLoader:
        return self.eval_loader("test")

    # ----------------------------------------------------------------------- feature cache
    def use_feature_cache(
        self, encoder: nn.Module, stage: str | None = None, device: torch.device | str = "cpu"
    ) -> dict[str, Path]:
        """Read, or first build, the frozen ``encoder`` 's features of every picture of the splits
        ``stage`` uses; from then on those splits' batches carry features, not pictures.

        Building runs ``encoder`` (in eval mode, on ``device``) once over the pictures in batches
        of ``eval_batch_size``; the task calls this from its ``setup``. Returns the cache files.

        Raises:
            UserError: no ``feature_cache`` folder, an encoder that is not frozen, or a transform
                with random steps (a cache holds one view of each picture).
            DataError: a cache file that does not read (delete it to rebuild it).
        """
        if self.feature_cache is None:
            raise UserError("use_feature_cache needs the data module's feature_cache folder")
        if not getattr(encoder, "freeze", False):
            raise UserError(
                "feature_cache needs a frozen encoder (ImageEncoder(freeze=True)): a CNN being "
                "fine-tuned changes its features at every step; unset feature_cache to fine-tune"
            )
        if steps := random_steps(self.transform):
            raise UserError(
                f"feature_cache holds one view of each picture, but the transform has random "
                f"steps ({', '.join(steps)}): drop them or unset feature_cache"
            )
        if self.vocab is None:
            self.setup(stage)
        digest = encoder_digest(encoder)
        paths = {}
        for split in _STAGE_FEATURES.get(stage, tuple(self.splits)):
            if not self._read(split).image_ids:
                continue  # nothing to cache: its (empty) loader reads no picture
            path = self.feature_cache / f"{split}-{self._cache_key(split, digest)}.npy"
            if not path.is_file():
                self._write_features(split, encoder, torch.device(device), path)
            self.features[split] = self._read_features(split, path)
            paths[split] = path
        return paths

    def _cache_key(self, split: str, encoder_sha: str) -> str:
        """What the features of ``split`` depend on: the encoder, the transform, the pictures."""
        data = self._read(split)
        digest = hashlib.sha256(f"v1 {split} {encoder_sha} {self.transform!r}".encode())
        for image_id in data.image_ids:
            path, stat = data.paths[image_id], data.paths[image_id].stat()
            with contextlib.suppress(ValueError):
                path = path.relative_to(self.data_dir)
            digest.update(f"{image_id}\t{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:24]

    def _write_features(
        self, split: str, encoder: nn.Module, device: torch.device, path: Path
    ) -> None:
        """Run ``encoder`` over ``split`` 's pictures into ``path`` (N, S, F) float32 rows in the
        order of ``image_ids``: a temporary file, renamed once complete."""
        data = self.splits[split]
        dataset = CaptionDataset([(i, []) for i in data.image_ids], data.paths, self.transform)
        loader = DataLoader(  # its own generator: the global random stream stays as it was
            dataset, self.hparams.eval_batch_size, collate_fn=collate,
            num_workers=self.hparams.num_workers, generator=torch.Generator(),
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        rank_zero_info(f"captions: caching {split} features of {len(dataset)} pictures in {path}")
        training, home = encoder.training, next(encoder.parameters()).device
        encoder.eval().to(device)
        try:
            out, row = None, 0
            with torch.inference_mode():
                for batch in loader:
                    features = encoder(batch.images.to(device)).float().cpu().numpy()  # (B, S, F)
                    if out is None:
                        shape = (len(dataset), *features.shape[1:])
                        out = np.lib.format.open_memmap(tmp, "w+", np.float32, shape)
                    out[row : row + len(features)] = features
                    row += len(features)
            out.flush()
            del out  # closes the memory map before the rename
            os.replace(tmp, path)
        finally:
            encoder.to(home).train(training)
            tmp.unlink(missing_ok=True)

    def _read_features(self, split: str, path: Path) -> tuple[dict[int, int], np.ndarray]:
        """Image id -> row, and the memory-mapped ``(N, S, F)`` features, once checked to be a
        cache of this split."""
        ids = self.splits[split].image_ids
        try:
            features = np.load(path, mmap_mode="r")  # no pickle: allow_pickle is off
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable feature cache ({err}); delete it") from None
        if features.ndim != 3 or features.shape[0] != len(ids) or features.dtype != np.float32:
            raise DataError(
                f"{path}: holds {features.dtype} {features.shape}, not ({len(ids)}, S, F) float32 "
                "features of this split; delete it"
            )
        return {image_id: row for row, image_id in enumerate(ids)}, features

    # ----------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_list()} if self.vocab is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "vocab" in state_dict:
            self.vocab = Vocab.from_list(state_dict["vocab"])
