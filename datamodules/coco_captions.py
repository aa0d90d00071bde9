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

Under data parallelism: training loaders are ordinary ``DataLoader`` s with ``shuffle=True``, so
Lightning puts its ``DistributedSampler`` in (disjoint shards, the last one padded with repeats);
evaluation loaders are plain iterables over this rank's contiguous share of the images (Lightning
leaves them alone), so every image is decoded exactly once over all ranks and no duplicate skews
BLEU. Ranks' shares differ by at most one image. The task gathers the hypotheses at epoch end.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.parallel_text import BOS, EOS, PAD, Vocab
from zoo.errors import DataError

SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable picture ({err})") from None


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


def read_split(images: list[dict], anns: list[dict]) -> SplitData:
    """Group captions by image, tokenise them and skip (and count) empty ones.

    Raises:
        DataError: an annotated picture whose file does not exist (one line naming it).
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
    for image_id in data.image_ids:
        if not data.paths[image_id].is_file():
            raise DataError(f"{data.paths[image_id]}: picture not found (image id {image_id})")
    return data


# ------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Pictures with one caption each; Lightning moves it with :meth:`to`.

    Attributes:
        images: ``(B, 3, H, W)`` normalised pictures.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("image_size", image_size), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.data_dir = Path(data_dir)
        self.vocab: Vocab | None = None
        self.splits: dict[str, SplitData] = {}
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
            self.splits[split] = read_split(images, anns)
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        """Read the splits a stage needs (train always: it defines the vocabulary)."""
        train = self._read("train")
        if self.vocab is None:
            sentences = [words for i in train.image_ids for words in train.tokens[i]]
            if not sentences:
                raise DataError(f"{self.data_dir}: the training split has no caption")
            self.vocab = Vocab.build(sentences, max_size=1 << 30, min_freq=self.hparams.min_count)
        needed = {"fit": ("val",), "validate": ("val",), "test": ("test",), None: ("val", "test")}
        for split in needed.get(stage, ("val", "test")):
            self._read(split)
        skipped = sum(data.skipped_empty for data in self.splits.values())
        rank_zero_info(
            f"captions: vocabulary {len(self.vocab)} words (min_count {self.hparams.min_count}); "
            + ", ".join(f"{s} {len(d.image_ids)} images" for s, d in self.splits.items())
            + f"; skipped {skipped} empty captions"
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

    def train_dataloader(self) -> DataLoader:
        if self.vocab is None:
            self.setup("fit")
        items = self._train_items()
        dataset = CaptionDataset(items, self.splits["train"].paths, self.transform)
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
        dataset = CaptionDataset(items, data.paths, self.transform)
        return EvalLoader(self._loader(dataset, self.hparams.eval_batch_size, shuffle=False))

    def val_dataloader(self) -> EvalLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> EvalLoader:
        return self.eval_loader("test")

    # ----------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_list()} if self.vocab is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "vocab" in state_dict:
            self.vocab = Vocab.from_list(state_dict["vocab"])
