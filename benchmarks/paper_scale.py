"""The papers' models at full size: parameters, and what a training step costs.

Every paper recipe's task is built from the recipe itself (its ``model:`` section, as
``rnn-zoo fit`` builds it) with the paper's vocabulary sizes:

1. on the meta device (no memory): parameters in all and in the recurrent cores, beside the
   paper's figures where it gives them (Sutskever et al. 2014: 384M, 64M of them recurrent);
2. then, each in a fresh process, a few real training steps through the Lightning Trainer at
   batch 2 (``--batch``) with random ids of paper-like lengths: seconds a step and peak RSS;
3. ``--device cuda`` (a lent GPU): the translation models in bf16 at the paper's batch, target
   words per second of the Lightning task and of a plain PyTorch loop over the same batches
   (Sutskever et al. report about 1,700 words/s on one GPU, 6,300 on eight).

    python benchmarks/paper_scale.py                   # table, then CPU steps at batch 2
    python benchmarks/paper_scale.py --device cuda     # + bf16 words/s at the paper's batch

Pretrained CNN weights are not loaded (``weights: null``): the parameter count is the same.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser

from zoo.classpath import resolve_class

ROOT = Path(__file__).resolve().parents[1] / "recipes"
# recipe -> (vocabulary sizes the paper used, batch, source and target length, paper's counts)
PAPERS = {
    "char_lm/karpathy-3x512": ({"vocab_size": 65}, 50, (50, 50), None),
    "translation/sutskever-wmt14-enfr": (
        {"src_vocab_size": 160_000, "tgt_vocab_size": 80_000}, 128, (30, 30), (384e6, 64e6),
    ),
    "translation/rnnsearch50-wmt14-enfr": (
        {"src_vocab_size": 30_000, "tgt_vocab_size": 30_000}, 80, (30, 30), None,
    ),
    "captioning/show-and-tell-coco": ({"vocab_size": 10_000}, 64, (0, 16), None),
    "captioning/show-attend-tell-coco": ({"vocab_size": 10_000}, 64, (0, 16), None),
}  # fmt: skip


def recipe_model(name: str) -> dict:
    model = yaml.safe_load((ROOT / f"{name}.yaml").read_text(encoding="utf-8"))["model"]
    encoder = model["init_args"].get("model", {}).get("init_args", {}).get("encoder", {})
    if "weights" in encoder.get("init_args", {}):
        encoder["init_args"]["weights"] = None  # the count is the same; nothing to download
    return model


def build_task(name: str) -> pl.LightningModule:
    """The recipe's task, instantiated by jsonargparse as LightningCLI does."""
    model = recipe_model(name)
    cls = resolve_class(model["class_path"], pl.LightningModule, prefix="zoo.tasks.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model", fail_untyped=False)
    config = parser.parse_object({"model": {**model.get("init_args", {}), **PAPERS[name][0]}})
    return parser.instantiate(config).model


def recurrent_params(task: pl.LightningModule) -> int:
    from zoo.cores import RecurrentCore

    cores = [m for m in task.modules() if isinstance(m, RecurrentCore)]
    return sum(p.numel() for core in cores for p in core.parameters())


def table() -> None:
    print("| recipe | parameters | recurrent | paper |")
    print("|---|---:|---:|---|")
    for name, (_, _, _, paper) in PAPERS.items():
        with torch.device("meta"):
            task = build_task(name)
        total, rnn = sum(p.numel() for p in task.parameters()), recurrent_params(task)
        check = ""
        if paper:
            same = (round(total / 1e6), round(rnn / 1e6)) == (
                round(paper[0] / 1e6),
                round(paper[1] / 1e6),
            )
            check = (
                f"{paper[0] / 1e6:.0f}M / {paper[1] / 1e6:.0f}M: {'same' if same else 'DIFFERENT'}"
            )
        print(f"| {name} | {total:,} | {rnn:,} | {check} |", flush=True)


def batches(name: str, task: pl.LightningModule, batch: int, steps: int, seed: int = 0) -> list:
    """``steps`` batches of random ids in the task's format."""
    g = torch.Generator().manual_seed(seed)
    vocab, _, (src_len, tgt_len), _ = PAPERS[name]
    out = []
    for i in range(steps):
        if name.startswith("char_lm"):
            ids = torch.randint(0, vocab["vocab_size"], (batch, src_len + 1), generator=g)
            out.append((ids[:, :-1], ids[:, 1:]))
        elif name.startswith("translation"):
            from datamodules.pairs import Batch

            src = torch.randint(4, vocab["src_vocab_size"], (batch, src_len), generator=g)
            tgt = torch.randint(4, vocab["tgt_vocab_size"], (batch, tgt_len + 1), generator=g)
            lengths = torch.full((batch,), src_len)
            out.append(
                Batch(src, lengths, tgt[:, :-1], tgt[:, 1:], torch.arange(batch) + i * batch)
            )
        else:
            from datamodules.caption_batches import Batch

            size = 448 if "attend" in name else 224
            images = torch.randn(batch, 3, size, size, generator=g)
            caps = torch.randint(4, vocab["vocab_size"], (batch, tgt_len + 1), generator=g)
            out.append(Batch(images, caps[:, :-1], caps[:, 1:], torch.arange(batch)))
    return out


class Batches:
    """A sized iterable of prepared batches: what Lightning takes as one train loader."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StepTimes(pl.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def on_train_batch_start(self, *args) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def lightning_steps(name: str, batch: int, steps: int, device: str, precision: str) -> list[float]:
    torch.manual_seed(0)
    task = build_task(name)
    timer = StepTimes(torch.device(device))
    trainer = pl.Trainer(
        accelerator=device, devices=1, max_steps=steps, precision=precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=Batches(batches(name, task, batch, steps)))
    return timer.times


def plain_steps(name: str, batch: int, steps: int, device: str) -> list[float]:
    """The same steps without Lightning: forward, loss, backward, clip, step, in bf16 autocast."""
    torch.manual_seed(0)
    task = build_task(name).to(device)
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    times = []
    for b in batches(name, task, batch, steps):
        b = b.to(device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = task.training_step(b, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def one(name: str, batch: int, steps: int, device: str) -> None:
    """In this (fresh) process: the steps, then one JSON line."""
    times = lightning_steps(name, batch, steps, device, "32-true")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step_s": sorted(times[1:])[len(times[1:]) // 2], "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2, help="batch of the CPU steps")
    parser.add_argument("--steps", type=int, default=4, help="CPU steps (the first is not timed)")
    parser.add_argument("--only", nargs="+", default=list(PAPERS), choices=list(PAPERS))
    args = parser.parse_args()
    table()
    print(f"\n| recipe | CPU s/step, batch {args.batch} | peak RSS (MB) |\n|---|---:|---:|")
    for name in args.only:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, str(args.batch), str(args.steps), "cpu"],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} | |", flush=True)
            continue
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {got['step_s']:.2f} | {got['peak_rss_mb']:,.0f} |", flush=True)
    if args.device == "cuda":
        print("\n| recipe | batch | Lightning bf16 words/s | plain loop words/s | ratio |")
        print("|---|---:|---:|---:|---:|")
        for name in ("translation/sutskever-wmt14-enfr", "translation/rnnsearch50-wmt14-enfr"):
            _, batch, (_, tgt_len), _ = PAPERS[name]
            words = batch * tgt_len
            light = lightning_steps(name, batch, 30, "cuda", "bf16-mixed")[5:]
            plain = plain_steps(name, batch, 30, "cuda")[5:]
            a, b = words / (sum(light) / len(light)), words / (sum(plain) / len(plain))
            print(f"| {name} | {batch} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
