"""A frozen CNN's features of every picture of a split, computed once and memory-mapped after.

The cache is handed an encoder and a way to read a picture; it knows nothing of COCO. For a split
it runs the encoder once over the pictures and saves its output ``(N, S, F)`` float32 as
``<folder>/<split>-<key>.npy`` (written to a temporary file, then renamed; read back
memory-mapped, without pickle). The key hashes the encoder's config and weights, the transform
(so the image size), the split and each picture's path, size and modification time: anything else
gets a new file. The file takes ``4 x S x F`` bytes per picture: about 400 KB for ResNet-101's
7x7x2048 grid at 224 px (some 50 GB for COCO's 123k pictures); pool the grid to shrink it.

Under data parallelism every rank runs the CNN over its own contiguous share of the pictures into
its own shard, ``<split>-<key>.<rank>-of-<world>.npy``, and all ranks then read every shard
(:class:`ShardedFeatures`); the cache folder must be one that all processes share. A complete
set of shards is read by any later run, whatever its number of processes (one process testing
what eight trained on), as the shards hold the pictures in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from zoo.errors import DataError, UserError
from zoo.files import atomic_path


class ShardedFeatures:
    """Row-indexed ``(N, S, F)`` features held in several memory-mapped ``.npy`` shards, in
    order: ``self[row]`` is row ``row`` of their concatenation, never copied as a whole."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = list(shards)
        self.starts = np.cumsum([0, *(len(s) for s in self.shards)])
        first = self.shards[0]
        self.shape, self.dtype, self.ndim = (int(self.starts[-1]), *first.shape[1:]), first.dtype, 3

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.shards[k][row - self.starts[k]]


def shard_path(path: Path, rank: int, world_size: int) -> Path:
    """The shard of ``path`` that rank ``rank`` of ``world_size`` writes."""
    return path.with_name(f"{path.stem}.{rank}-of-{world_size}.npy")


def complete_shards(path: Path) -> int | None:
    """The number of shards in a complete set of ``path`` 's shards on disk (the smallest, if
    runs of different sizes left several), or None."""
    pattern = re.compile(rf"{re.escape(path.stem)}\.(\d+)-of-(\d+)\.npy")
    counts = set()
    for found in path.parent.glob(f"{path.stem}.*-of-*.npy"):
        match = pattern.fullmatch(found.name)
        if match:
            counts.add(int(match[2]))
    for count in sorted(counts):
        if all(shard_path(path, r, count).is_file() for r in range(count)):
            return count
    return None


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


class _Pictures(Dataset):
    """The pictures at ``paths``, each read with ``load``."""

    def __init__(self, paths: Sequence[Path], load: Callable[[Path], Tensor]) -> None:
        self.paths, self.load = paths, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return self.load(self.paths[index])


def random_steps(transform: Any) -> list[str]:
    """Class names of the random steps (``Random*``) anywhere in a transform pipeline."""
    name = type(transform).__name__
    if name.startswith("Random"):
        return [name]
    return [step for inner in getattr(transform, "transforms", []) for step in random_steps(inner)]


def check_cacheable(encoder: nn.Module, transform: Any) -> None:
    """A cache holds one view of each picture from a CNN that does not change.

    Raises:
        UserError: an encoder that is not frozen, or a transform with random steps.
    """
    if not getattr(encoder, "freeze", False):
        raise UserError(
            "feature_cache needs a frozen encoder (ImageEncoder(freeze=True)): a CNN being "
            "fine-tuned changes its features at every step; unset feature_cache to fine-tune"
        )
    if steps := random_steps(transform):
        raise UserError(
            f"feature_cache holds one view of each picture, but the transform has random "
            f"steps ({', '.join(steps)}): drop them or unset feature_cache"
        )


def encoder_digest(encoder: nn.Module) -> str:
    """sha256 over an encoder's config (if it has one) and every tensor of its state."""
    config = encoder.config() if hasattr(encoder, "config") else type(encoder).__qualname__
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_key(
    split: str, encoder_sha: str, transform: Any, pictures: dict[int, Path], root: Path
) -> str:
    """What the features of ``split`` depend on: the encoder, the transform, the pictures
    (``image id -> path``, in row order; paths are hashed relative to ``root``)."""
    digest = hashlib.sha256(f"v1 {split} {encoder_sha} {transform!r}".encode())
    for image_id, path in pictures.items():
        stat = path.stat()
        with contextlib.suppress(ValueError):
            path = path.relative_to(root)
        digest.update(f"{image_id}\t{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def write_features(
    path: Path,
    encoder: nn.Module,
    pictures: Sequence[Path],
    load: Callable[[Path], Tensor],
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> None:
    """Run ``encoder`` (in eval mode, on ``device``) over ``pictures`` into ``path``: ``(N, S, F)``
    float32 rows in their order, in a temporary file renamed once complete; ``progress`` shows a
    progress bar."""
    loader = DataLoader(  # its own generator: the global random stream stays as it was
        _Pictures(pictures, load), batch_size, num_workers=num_workers,
        generator=torch.Generator(),
    )  # fmt: skip
    rank_zero_info(f"captions: caching features of {len(pictures)} pictures in {path}")
    batches = tqdm(loader, desc=f"features {path.name}", unit="batch", disable=not progress)
    training, home = encoder.training, next(encoder.parameters()).device
    encoder.eval().to(device)
    try:
        with atomic_path(path) as tmp, torch.inference_mode():
            out, row = None, 0
            for images in batches:
                features = encoder(images.to(device)).float().cpu().numpy()  # (B, S, F)
                if out is None:
                    shape = (len(pictures), *features.shape[1:])
                    out = np.lib.format.open_memmap(tmp, "w+", np.float32, shape)
                out[row : row + len(features)] = features
                row += len(features)
            out.flush()
            del out  # closes the memory map before the rename
    finally:
        encoder.to(home).train(training)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")  # no pickle: allow_pickle is off
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such feature cache shard; the feature_cache folder must be one that "
            "every process (every node) shares"
        ) from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable feature cache ({err}); delete it") from None


def read_features(
    path: Path, image_ids: Sequence[int], world_size: int = 1
) -> tuple[dict[int, int], np.ndarray | ShardedFeatures]:
    """Image id -> row, and the memory-mapped ``(N, S, F)`` features (from ``path``, or from its
    ``world_size`` shards when ``path`` itself is not there), once checked to hold one row per
    image of ``image_ids``.

    Raises:
        DataError: a file that does not read or does not fit (delete it to rebuild it), or a
            missing shard.
    """
    if path.is_file() or world_size == 1:
        features = _load(path)
    else:
        shards = [_load(shard_path(path, r, world_size)) for r in range(world_size)]
        if any(s.ndim != 3 or s.shape[1:] != shards[0].shape[1:] for s in shards):
            raise DataError(f"{path}: its shards do not hold rows of one shape; delete them")
        features = ShardedFeatures(shards)
    n = len(image_ids)
    if features.ndim != 3 or features.shape[0] != n or features.dtype != np.float32:
        raise DataError(
            f"{path}: holds {features.dtype} {features.shape}, not ({n}, S, F) float32 "
            "features of this split; delete it"
        )
    return {image_id: row for row, image_id in enumerate(image_ids)}, features
