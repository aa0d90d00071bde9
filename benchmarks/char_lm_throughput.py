"""Training throughput of the char-LM task under the Lightning Trainer vs a plain PyTorch loop.

Same model, data, optimizer and gradient clipping, in the same process, alternating runs:

    python benchmarks/char_lm_throughput.py [--device cpu|cuda] [--hidden 384 --batch 32 --seq 100]
    python benchmarks/char_lm_throughput.py --beside-busy     # also beside a busy process

Prints characters per second for each and the ratio (Lightning / plain). ``--beside-busy`` adds
rounds with one other process spinning on a core: the task with its threads fixed, and with
``zoo.callbacks.FollowFreeCores`` (what ``rnn-zoo fit`` adds), each against the quiet figure.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from datamodules.char_text import CharTextDataModule
from zoo.callbacks import FollowFreeCores
from zoo.cores import LSTM, detach_state
from zoo.tasks.char_lm import CharLanguageModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_task(vocab_size: int, hidden: int) -> CharLanguageModel:
    torch.manual_seed(0)
    return CharLanguageModel(
        vocab_size,
        core=functools.partial(LSTM, hidden_size=hidden),
        embedding_dim=64,
        optimizer=functools.partial(torch.optim.Adam, lr=2e-3),
    )


def plain_loop(task, dm, device, warmup: int, steps: int, clip: float) -> float:
    """chars/s of a hand-written truncated-BPTT loop over the same loader."""
    model = task.model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = iter(dm.train_dataloader())
    state = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in next(batches))
        logits, state = model(x, state)
        state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    _sync(device)
    return steps * x.numel() / (time.perf_counter() - start)


class _Clock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.end = time.perf_counter()


def lightning_run(
    task, dm, device, warmup: int, steps: int, clip: float, bar: bool, follow: bool = False
) -> float:
    clock = _Clock(warmup)
    extra = [FollowFreeCores(interval=1.0)] if follow else []
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_steps=warmup + steps, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=bar,
        limit_val_batches=0, gradient_clip_val=clip, callbacks=[clock, *extra],
    )  # fmt: skip
    trainer.fit(task, dm)
    return steps * dm.batch_size * dm.seq_len / (clock.end - clock.start)


class BusyProcess:
    """Another process spinning on one core while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--progress-bar", action="store_true", help="Lightning with its bar")
    parser.add_argument("--beside-busy", action="store_true", help="also beside a busy process")
    args = parser.parse_args()
    device = torch.device(args.device)
    dm = CharTextDataModule(batch_size=args.batch, seq_len=args.seq)
    results: dict[str, list[float]] = {"plain": [], "lightning": []}
    if args.beside_busy:
        results |= {"busy, threads fixed": [], "busy, following free cores": []}
    run = functools.partial(lightning_run, dm=dm, device=device, warmup=args.warmup,
                            steps=args.steps, clip=5.0, bar=args.progress_bar)  # fmt: skip
    threads = torch.get_num_threads()
    for _ in range(args.rounds):  # alternate, so drift in machine speed hits both alike
        task = make_task(dm.vocab_size, args.hidden)
        results["plain"].append(plain_loop(task, dm, device, args.warmup, args.steps, 5.0))
        results["lightning"].append(run(make_task(dm.vocab_size, args.hidden)))
        if args.beside_busy:
            with BusyProcess():
                fixed = run(make_task(dm.vocab_size, args.hidden))
                results["busy, threads fixed"].append(fixed)
                following = run(make_task(dm.vocab_size, args.hidden), follow=True)
                results["busy, following free cores"].append(following)
            torch.set_num_threads(threads)
    median = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"device={device} torch={torch.__version__} threads={threads} LSTM 1x{args.hidden} "
        f"B={args.batch} T={args.seq}, median of {args.rounds} rounds x {args.steps} steps"
    )
    for name, values in results.items():
        label = "plain PyTorch loop" if name == "plain" else (
            "Lightning task" if name == "lightning" else f"Lightning task, {name}")  # fmt: skip
        print(f"{label:<44}: {median[name]:>10,.0f} chars/s  {[round(r) for r in values]}")
    print(f"ratio Lightning / plain = {median['lightning'] / median['plain']:.3f}")
    for name in results:
        if name.startswith("busy"):
            print(f"{name}: {median[name] / median['lightning']:.2f} of the quiet figure")


if __name__ == "__main__":
    main()
