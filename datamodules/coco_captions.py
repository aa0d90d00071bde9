"""Image captions in the MS-COCO layout, for Show and Tell (Vinyals et al. 2015) and Show, Attend
and Tell (Xu et al. 2015).

Reads ``<data_dir>/annotations/captions_{train,val,test}.json`` with ``pycocotools`` and the
pictures under ``<data_dir>/images/`` (``image_dir``), the layout that real COCO (after moving the
pictures) and ``rnn-zoo prepare shapes`` / ``tuxpaint`` share. With ``karpathy_split`` (the path of Karpathy's ``dataset_coco.json``), the images, their
split (``restval`` joins ``train``) and their captions come from that file instead, and pictures
are found at ``<data_dir>/<filepath>/<filename>``.

Each split goes through::

    annotations -> lower-case word tokens -> skip empty captions (counted)
                -> (training only) drop captions over max_len words (counted) -> ids
                -> Batch(images, captions_in, captions_out, image_ids)

Batches are :mod:`datamodules.caption_batches`. Training items are (picture, caption) pairs, one per caption; evaluation items are pictures, one
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
splits it needs (:mod:`datamodules.feature_cache`). Batches then carry those features in
``Batch.images`` ``(B, S, F)`` and the model skips its CNN, with exactly the same losses (the
frozen CNN runs in eval mode; a transform with random steps is refused). Under mixed precision
the cached features are float32 where the CNN would have run in lower precision.

Training batches come in an order drawn from ``(data.seed, epoch)``, each rank of a data-parallel
run its own share (:class:`~datamodules.caption_batches.EpochBatches`), and a fit resumed
mid-epoch runs the rest of that epoch's batches; evaluation loaders are each rank's contiguous
share of the images, so every image is decoded exactly once over all ranks and no duplicate skews
BLEU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from datamodules.caption_batches import (
    CaptionDataset,
    EpochBatches,
    EvalLoader,
    TrainLoader,
    collate,
    shard,
)
from datamodules.coco_files import SplitData, read_coco, read_karpathy, read_split
from datamodules.feature_cache import (
    FeatureDataset,
    cache_key,
    check_cacheable,
    complete_shards,
    encoder_digest,
    read_features,
    shard_path,
    write_features,
)
from datamodules.images import default_transform, load_image
from datamodules.resume import trained_batches
from datamodules.vocab import Vocab
from zoo.errors import DataError, UserError

SPLITS = ("train", "val", "test")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
#: Splits each stage reads besides train (which defines the vocabulary).
_STAGE_SPLITS = {"fit": ("val",), "validate": ("val",), "test": ("test",)}
#: Splits whose features each stage uses (a feature cache).
_STAGE_FEATURES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


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
        predict: a folder of pictures for ``rnn-zoo predict`` (default: the test split).
        seed: the training order: epoch ``e`` is a permutation drawn from ``(seed, e)``.
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
        predict: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sizes = {"image_size": image_size, "batch_size": batch_size, "max_len": max_len}
        for name, value in {**sizes, "eval_batch_size": eval_batch_size}.items():
            if value < 1:
                raise DataError(f"data.{name} must be at least 1, got {value}")
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
                images, anns = read_karpathy(Path(hp.karpathy_split), self.data_dir, split)
            else:
                path = self.data_dir / "annotations" / f"captions_{split}.json"
                images, anns = read_coco(path, self.data_dir / hp.image_dir)
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

    def _loader(self, dataset: Dataset, **kw: Any) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            **kw,
        )

    def _dataset(self, split: str, items: list[tuple[int, list[int]]]) -> Dataset:
        """Pictures, or their features where ``split`` has a feature cache in use."""
        if split in self.features:
            return FeatureDataset(items, *self.features[split])
        return CaptionDataset(items, self.splits[split].paths, self.transform)

    def train_dataloader(self) -> TrainLoader:
        """This rank's training batches, in an order drawn from ``(seed, epoch)``."""
        if self.vocab is None:
            self.setup("fit")
        dataset = self._dataset("train", self._train_items())
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        try:
            batches = EpochBatches(
                len(dataset), self.hparams.batch_size, self.hparams.seed, rank, world_size, epoch
            )
        except DataError as err:
            raise DataError(f"{self.data_dir}: {err}") from None
        return TrainLoader(self._loader(dataset, batch_sampler=batches), trained_batches(trainer))

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
        return EvalLoader(self._loader(dataset, batch_size=self.hparams.eval_batch_size))

    def val_dataloader(self) -> EvalLoader:
        return self.eval_loader("val")

    def predict_dataloader(self) -> EvalLoader:
        """The ``predict`` folder's pictures in name order (ids 0, 1, ...), or the test split."""
        if self.hparams.predict is None:
            return self.eval_loader("test")
        folder = Path(self.hparams.predict)
        paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in PICTURE_SUFFIXES)
        if not paths:
            raise DataError(f"{folder}: no pictures ({', '.join(PICTURE_SUFFIXES)}) to caption")
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        ids = shard(len(paths), rank, world).tolist()
        self.predict_paths = paths
        dataset = CaptionDataset([(i, []) for i in ids], dict(enumerate(paths)), self.transform)
        return EvalLoader(self._loader(dataset, batch_size=self.hparams.eval_batch_size))

    def test_dataloader(self) -> EvalLoader:
        return self.eval_loader("test")

    # ----------------------------------------------------------------------- feature cache
    def use_feature_cache(
        self,
        encoder: nn.Module,
        stage: str | None = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] | None = None,
    ) -> dict[str, Path]:
        """Read, or first build, the frozen ``encoder`` 's features of every picture of the splits
        ``stage`` uses; from then on those splits' batches carry features, not pictures.

        Building runs ``encoder`` (in eval mode, on ``device``) once over the pictures in batches
        of ``eval_batch_size``; the task calls this from its ``setup``. Returns the cache files.
        With ``world_size`` processes, every process calls this with its ``rank`` and a
        ``barrier``: each builds its share of a missing cache as its own shard, all wait, then
        all read every shard.

        Raises:
            UserError: no ``feature_cache`` folder, an encoder that is not frozen, or a transform
                with random steps (a cache holds one view of each picture).
            DataError: a cache file that does not read (delete it to rebuild it).
        """
        if self.feature_cache is None:
            raise UserError("use_feature_cache needs the data module's feature_cache folder")
        check_cacheable(encoder, self.transform)
        if self.vocab is None:
            self.setup(stage)
        digest = encoder_digest(encoder)
        paths = {}
        for split in _STAGE_FEATURES.get(stage, tuple(self.splits)):
            data = self._read(split)
            if not data.image_ids:
                continue  # nothing to cache: its (empty) loader reads no picture
            pictures = {i: data.paths[i] for i in data.image_ids}
            key = cache_key(split, digest, self.transform, pictures, self.data_dir)
            path = self.feature_cache / f"{split}-{key}.npy"
            shards = world_size if world_size > 1 and len(pictures) >= world_size else 1
            target = shard_path(path, rank, shards) if shards > 1 else path
            complete = 1 if path.is_file() else complete_shards(path)  # by any number of ranks
            if complete is None and (shards > 1 or rank == 0) and not target.is_file():
                every = list(pictures.values())
                write_features(
                    target, encoder, [every[i] for i in shard(len(every), rank, shards)],
                    self._picture,
                    self.hparams.eval_batch_size, self.hparams.num_workers, torch.device(device),
                    progress=rank == 0 and sys.stderr.isatty(),
                )  # fmt: skip
            if world_size > 1 and barrier is not None:
                barrier()  # every rank, every split: the same number of barriers
            self.features[split] = read_features(path, data.image_ids, complete or shards)
            paths[split] = path
        return paths

    def _picture(self, path: Path) -> Tensor:
        return self.transform(load_image(path))

    # ----------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_list()} if self.vocab is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "vocab" in state_dict:
            self.vocab = Vocab.from_list(state_dict["vocab"])
