"""Batches of pictures and captions for captioning, and the loaders that shard them per rank.

A caption ``y`` becomes ``captions_in = <s> y`` and ``captions_out = y </s>`` (teacher forcing).
Loaders are plain iterables (Lightning adds no sampler to them). Training batches come in an
order drawn from ``(seed, epoch)``, each rank its own share, and the loader records how far the
epoch got, so a fit resumed mid-epoch runs the batches the whole one would have. Evaluation
loaders take this rank's contiguous share of the images, so every image is decoded exactly once
over all ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.images import load_image
from datamodules.resume import Resumable
from datamodules.vocab import BOS, EOS, PAD
from zoo.errors import DataError


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


class EvalLoader:
    """This rank's evaluation batches: a plain iterable (Lightning adds no sampler to it)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class EpochBatches(Sampler[list[int]]):
    """Rank ``rank``'s training batches of an epoch (a ``DataLoader``'s ``batch_sampler``).

    Epoch ``e`` orders ``range(n)`` by a permutation drawn from ``(seed, e)``; rank ``r`` takes
    items ``r, r + world_size, ...`` of it (the last ``n % world_size`` are left out, so every
    rank runs as many batches) and cuts them into batches of ``batch_size``, the last one
    shorter. :attr:`start` skips that many batches once: the rest of a resumed epoch.

    Args:
        epoch: callable returning the current epoch (default: always 0).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        if n < world_size:
            raise DataError(f"has {n} training captions, fewer than the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.start = 0

    def batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        mine = order[: self.n - self.n % self.world_size][self.rank :: self.world_size]
        return [
            mine[i : i + self.batch_size].tolist() for i in range(0, len(mine), self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        yield from self.batches(self.epoch() if self.epoch else 0)[start:]

    def __len__(self) -> int:
        return -(-(self.n // self.world_size) // self.batch_size)


class TrainLoader(Resumable):
    """This rank's training batches: a ``DataLoader`` over :class:`EpochBatches`, stateful for
    exact mid-epoch resume (``state_dict`` records the batches of the epoch that training
    processed, as ``consumed`` counts them)."""

    def __init__(self, loader: DataLoader, consumed: Callable[[], int] | None = None) -> None:
        if not isinstance(loader.batch_sampler, EpochBatches):
            raise TypeError("TrainLoader needs a DataLoader whose batch_sampler is EpochBatches")
        self.loader, self.dataset, self.consumed = loader, loader.dataset, consumed

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def start_at(self, batch: int) -> None:
        self.loader.batch_sampler.start = batch


def shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``range(n)``; shares differ by at most one."""
    if n < world_size:
        raise DataError(f"has {n} images, fewer than the {world_size} processes")
    return np.array_split(np.arange(n), world_size)[rank]
