"""Captioning throughput: training from a feature cache vs through the frozen CNN, and decoding
speed of greedy vs beam search.

    python benchmarks/captioning_throughput.py [--image-size 224] [--batch 16] [--steps 5]
        [--model attend|tell] [--arch resnet18] [--beams 3 5] [--device cpu|cuda] [--threads N]

Same model (a frozen ``--arch`` encoder with random weights, an LSTM decoder), same pictures (the
shapes data set, drawn at 64 px and resized to ``--image-size``), same optimizer, in the same
process, alternating rounds; medians. Training steps include loading the batch (decoding and
resizing the PNGs, or reading the cache's rows) with ``num_workers=0``. Prints:

* training (picture, caption) pairs/s through the CNN and from the cache, and their ratio; the
  one-off time to build the cache is printed beside them;
* captions/s of greedy search and of each beam size, at the same batch size, decoding from the
  cached features (so the search alone is timed; the CNN forward is in the first line). An
  untrained model rarely ends a caption, so every hypothesis runs to ``--max-len``: the worst
  case for every search.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from datamodules.coco_captions import CocoCaptionsDataModule
from datamodules.prepare.shapes import make_shapes
from datamodules.vocab import BOS, EOS
from zoo.cores import LSTM
from zoo.decoding import beam_search, greedy_search
from zoo.models.captioning import CaptioningModel, ImageEncoder, ShowAndTell, ShowAttendTell


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(args: argparse.Namespace, vocab_size: int) -> CaptioningModel:
    torch.manual_seed(0)
    encoder = ImageEncoder(args.arch, weights=None, freeze=True)
    decoder = functools.partial(LSTM, hidden_size=args.hidden)
    if args.model == "tell":
        return ShowAndTell(vocab_size, encoder, decoder, embedding_dim=args.embedding)
    return ShowAttendTell(
        vocab_size, encoder, decoder, embedding_dim=args.embedding, attention_size=args.embedding
    )


def train_pairs_per_s(
    model: CaptioningModel,
    dm: CocoCaptionsDataModule,
    device: torch.device,
    warmup: int,
    steps: int,
) -> float:
    """(picture, caption) pairs/s of plain teacher-forced training steps, loading included."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batches, pairs = iter(dm.train_dataloader()), 0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start, pairs = time.perf_counter(), 0
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(dm.train_dataloader())
            batch = next(batches)
        pairs += len(batch)
        batch = batch.to(device)
        logits = model(batch.images, batch.captions_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.captions_out.flatten(), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return pairs / (time.perf_counter() - start)


@torch.no_grad()
def captions_per_s(
    model: CaptioningModel, features: torch.Tensor, beam: int, max_len: int, batch: int
) -> float:
    """Captions/s decoding ``features`` (N, S, F) in batches of ``batch``."""
    model.eval()
    _sync(features.device)
    start = time.perf_counter()
    for chunk in features.split(batch):
        state, size = model.encode(chunk), len(chunk)
        if beam == 1:
            greedy_search(model.decode_step, state, BOS, EOS, max_len, batch_size=size)
        else:
            beam_search(
                model.decode_step, model.reorder_state, state, BOS, EOS, max_len,
                beam_size=beam, batch_size=size,
            )  # fmt: skip
    _sync(features.device)
    return len(features) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("attend", "tell"), default="attend")
    parser.add_argument("--arch", default="resnet18", help="torchvision ResNet (random weights)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--hidden", type=int, default=256, help="LSTM units")
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="pairs per training batch")
    parser.add_argument("--decode-batch", type=int, help="pictures per decoding batch (--batch)")
    parser.add_argument("--pictures", type=int, default=32, help="training and decoding pictures")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beams", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="rnn-zoo-bench-") as root:
        make_shapes(Path(root), args.pictures, args.pictures, 0, image_size=64)
        data = functools.partial(
            CocoCaptionsDataModule, root, image_size=args.image_size, min_count=1,
            batch_size=args.batch, eval_batch_size=args.decode_batch or args.batch,
        )  # fmt: skip
        direct, cached = data(), data(feature_cache=str(Path(root) / "cache"))
        direct.setup("fit")
        model = make_model(args, direct.vocab_size).to(device)
        start = time.perf_counter()
        cached.use_feature_cache(model.encoder, "fit", device)
        build = time.perf_counter() - start
        runs: dict[str, list[float]] = {"through the CNN": [], "from the cache": []}
        for _ in range(args.rounds):  # alternate, so drift in machine speed hits both alike
            for name, dm in zip(runs, (direct, cached)):
                runs[name].append(train_pairs_per_s(model, dm, device, args.warmup, args.steps))
        features = torch.tensor(cached.features["val"][1]).to(device)  # (N, S, F), a copy
        searches = {"greedy": 1, **{f"beam {b}": b for b in args.beams}}
        decoding: dict[str, list[float]] = {name: [] for name in searches}
        captions_per_s(model, features[:2], 2, 4, 2)  # warm-up
        batch = args.decode_batch or args.batch
        for _ in range(args.rounds):
            for name, beam in searches.items():
                decoding[name].append(captions_per_s(model, features, beam, args.max_len, batch))

    params = sum(p.numel() for p in model.parameters())
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    print(
        f"model: {type(model).__name__}, frozen {args.arch} (random weights) at "
        f"{args.image_size} px -> {tuple(features.shape[1:])} features, LSTM {args.hidden}, "
        f"{params / 1e6:.1f}M parameters; medians of {args.rounds} alternating rounds"
    )
    print(
        f"training, batch {args.batch}, {args.steps} steps per round "
        f"(cache built once in {build:.1f} s for {args.pictures * 2} pictures):"
    )
    for name, values in runs.items():
        rounded = [round(v, 1) for v in values]
        print(f"  {name:<16}: {statistics.median(values):>9,.1f} pairs/s  {rounded}")
    ratio = statistics.median(runs["from the cache"]) / statistics.median(runs["through the CNN"])
    print(f"  cache / CNN = {ratio:.1f}x")
    print(f"decoding {len(features)} pictures, batch {batch}, max length {args.max_len}:")
    for name, values in decoding.items():
        rounded = [round(v, 1) for v in values]
        print(f"  {name:<8}: {statistics.median(values):>9,.1f} captions/s  {rounded}")


if __name__ == "__main__":
    main()
