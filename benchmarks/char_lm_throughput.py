"""Training throughput of the char-LM task under the Lightning Trainer vs a plain PyTorch loop.

Same model, data, optimizer and gradient clipping, in the same process, alternating runs:

    python benchmarks/char_lm_throughput.py [--device cpu|cuda] [--hidden 384 --batch 32 --seq 100]

Prints characters per second for each and the ratio (Lightning / plain).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from datamodules.char_text import CharTextDataModule
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


def lightning_run(task, dm, device, warmup: int, steps: int, clip: float, bar: bool) -> float:
    clock = _Clock(warmup)
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_steps=warmup + steps, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=bar,
        limit_val_batches=0, gradient_clip_val=clip, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(task, dm)
    return steps * dm.batch_size * dm.seq_len / (clock.end - clock.start)


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
    args = parser.parse_args()
    device = torch.device(args.device)
    dm = CharTextDataModule(batch_size=args.batch, seq_len=args.seq)
    results: dict[str, list[float]] = {"plain": [], "lightning": []}
    for _ in range(args.rounds):  # alternate, so drift in machine speed hits both alike
        task = make_task(dm.vocab_size, args.hidden)
        results["plain"].append(plain_loop(task, dm, device, args.warmup, args.steps, 5.0))
        task = make_task(dm.vocab_size, args.hidden)
        results["lightning"].append(
            lightning_run(task, dm, device, args.warmup, args.steps, 5.0, args.progress_bar)
        )
    plain, light = (statistics.median(results[k]) for k in ("plain", "lightning"))
    print(
        f"device={device} torch={torch.__version__} LSTM 1x{args.hidden} "
        f"B={args.batch} T={args.seq}, median of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"plain PyTorch loop : {plain:>10,.0f} chars/s  {[round(r) for r in results['plain']]}")
    print(
        f"Lightning task     : {light:>10,.0f} chars/s  {[round(r) for r in results['lightning']]}"
    )
    print(f"ratio Lightning / plain = {light / plain:.3f}")


if __name__ == "__main__":
    main()
