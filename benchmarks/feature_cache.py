"""What building the captioning feature cache costs, in one process and in two DDP ranks that
each compute their own shard (``datamodules.feature_cache``).

N synthetic COCO-format pictures (the generated shapes set, ``rnn-zoo prepare shapes``) at
``--image-size`` go through a frozen, randomly initialised CNN (``--arch``, default resnet18);
the same pictures with 1 process of 2 threads, then 2 processes (gloo) of 1 thread each:

    python benchmarks/feature_cache.py [--pictures 400] [--arch resnet18] [--image-size 224]

Prints pictures per second for each and the file sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules.coco_captions import CocoCaptionsDataModule
from datamodules.prepare.shapes import make_shapes
from zoo.layers import ImageEncoder


def build(data: Path, cache: Path, args, rank: int = 0, world: int = 1, barrier=None) -> float:
    torch.manual_seed(0)
    encoder = ImageEncoder(args.arch, weights=None, freeze=True)
    dm = CocoCaptionsDataModule(
        str(data), image_size=args.image_size, min_count=1, eval_batch_size=32,
        feature_cache=str(cache),
    )  # fmt: skip
    dm.setup("fit")
    start = time.perf_counter()
    dm.use_feature_cache(encoder, "fit", "cpu", rank, world, barrier)
    return time.perf_counter() - start


def _rank(rank: int, world: int, data: Path, cache: Path, args, port: int, out) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        seconds = build(data, cache, args, rank, world, dist.barrier)
        out.put((rank, seconds))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=400, help="training pictures")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="feature-cache-"))
    try:
        data = work / "shapes"
        make_shapes(data, args.pictures, 20, 20, args.image_size, 0)
        total = args.pictures + 20  # train and val are cached for fitting
        torch.set_num_threads(2)
        one = build(data, work / "one", args)
        queue = mp.get_context("spawn").SimpleQueue()
        procs = [
            mp.get_context("spawn").Process(
                target=_rank, args=(r, 2, data, work / "two", args, 29517, queue)
            )
            for r in range(2)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        two = max(queue.get()[1] for _ in procs)
        size = sum(p.stat().st_size for p in (work / "one").glob("*.npy")) / 2**20
        print("| processes | pictures/s | seconds |\n|---:|---:|---:|")
        print(f"| 1 (2 threads) | {total / one:.1f} | {one:.1f} |")
        print(f"| 2 DDP ranks, a shard each (1 thread each) | {total / two:.1f} | {two:.1f} |")
        shards = sorted(p.name for p in (work / "two").glob("*.npy"))
        print(f"\n{total} pictures, {size:.0f} MB of features; shards: {', '.join(shards)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
