"""Decoding speed of a translation model, greedy vs beam search, and its training throughput.

    python benchmarks/translation_decode.py [--checkpoint RUN.ckpt] [--batch-size 64] [--beam 5]
        [--device cpu|cuda] [--threads N] [--limit N] [--train-steps 30]

Decodes the source side of the test split (the bundled Bible's 1,935 verses unless the
checkpoint's data says otherwise; ``--limit N`` takes the first N) with greedy search and with
beam search at the same batch size, batched by length as ``rnn-zoo translate`` does, and prints
sentences/s for each and the beam / greedy time ratio. Then runs training steps of the model
(teacher-forced forward, backward, gradient clipping at 1, Adam) on the bundled training batches
and prints target tokens/s. Timings exclude tokenisation; they include encoding.

Without ``--checkpoint`` the model is a freshly initialised one built from
``recipes/translation/demo-bible.yaml`` (RNNsearch, 8.5M parameters, 8k SentencePiece pieces),
exactly as ``rnn-zoo fit`` builds it. An untrained model rarely emits ``</s>``, so its hypotheses
run to the length limit ``ceil(1.5 n) + 5``: the worst case for both searches. The output says how
many hypotheses hit the limit; a trained checkpoint gives the realistic numbers.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from datamodules.pairs import pad_rows
from datamodules.parallel_text import ParallelTextDataModule
from datamodules.text_files import drop_empty, find_file, read_parallel
from zoo.checkpoint import read_checkpoint
from zoo.decoding import DecodeSettings
from zoo.models.translation import TranslationModel
from zoo.predict import Translator
from zoo.predict.translation import decode_batch, encode_lines, length_batches

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "translation" / "demo-bible.yaml"

Batches = list[tuple[torch.Tensor, torch.Tensor]]  # (B, S) ids on the device, (B,) CPU lengths


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(spec: Any) -> Any:
    """A recipe's ``class_path`` / ``init_args`` entry as a callable, nested entries included
    (what LightningCLI makes of it, for a benchmark that needs no command line)."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        args = {key: build(value) for key, value in (spec.get("init_args") or {}).items()}
        return functools.partial(getattr(importlib.import_module(module), name), **args)
    return spec


def from_recipe(
    recipe: Path, batch_size: int
) -> tuple[TranslationModel, ParallelTextDataModule, DecodeSettings]:
    """The recipe's freshly initialised model, its data module and its decoding settings."""
    config = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    torch.manual_seed(config.get("seed_everything") or 0)
    # SentencePiece in memory (~5 s): nothing written
    data = build(config["data"])(batch_size=batch_size, cache_dir=None)
    task = build(config["model"])(data.num_src_tokens, data.num_tgt_tokens)
    return task.model, data, task.decoding


def checkpoint_data(path: Path) -> ParallelTextDataModule:
    """The data module a checkpoint was trained with (its saved settings; for the test split)."""
    settings = read_checkpoint(path, "translation").get("data_hparams") or {}
    names = inspect.signature(ParallelTextDataModule.__init__).parameters
    return ParallelTextDataModule(**{k: v for k, v in settings.items() if k in names})


def source_sentences(data: ParallelTextDataModule, limit: int | None) -> tuple[list[str], int]:
    """The first ``limit`` source sentences of the test split (pairs with an empty side skipped,
    as :meth:`~ParallelTextDataModule.references` does), and the split's size."""
    prefix = data.prefixes["test"]
    paths = [find_file(data.data_dir, prefix, lang) for lang in (data.src_lang, data.tgt_lang)]
    src, _, _ = drop_empty(*read_parallel(*paths))
    return src[:limit], len(src)


def make_batches(
    data: ParallelTextDataModule, lines: list[str], batch_size: int, device: torch.device
) -> Batches:
    """Encoded, padded batches of similar lengths, on the device (as ``rnn-zoo translate``)."""
    rows = encode_lines(data, lines)
    order = length_batches(list(range(len(rows))), [len(r) for r in rows], batch_size)
    batches = []
    for index in order:
        src, src_lengths = pad_rows([rows[i] for i in index])
        batches.append((src.to(device), src_lengths))
    return batches


@torch.no_grad()
def time_decoding(
    model: TranslationModel, batches: Batches, beam_size: int, decoding: DecodeSettings
) -> tuple[float, float, float, float]:
    """Seconds to decode every batch (wall clock, and this process's CPU time, which a busy
    machine disturbs less), mean output length (tokens), and the share of hypotheses that
    stopped at the length limit."""
    settings = decoding.override(beam_size=beam_size)
    device = batches[0][0].device
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    lengths, limits = [], []
    for src, src_lengths in batches:
        hyps = decode_batch(model, src, src_lengths, settings)
        lengths += [len(h) for h in hyps.best]
        limits += settings.max_lengths(src_lengths).tolist()
    _sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    at_limit = sum(n >= limit for n, limit in zip(lengths, limits)) / len(lengths)
    return seconds, cpu, sum(lengths) / len(lengths), at_limit


def training_tokens_per_s(
    model: TranslationModel,
    data: ParallelTextDataModule,
    device: torch.device,
    warmup: int,
    steps: int,
    clip: float = 1.0,
) -> float:
    """Target tokens/s of plain training steps (the task's loss: mean cross-entropy per token)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = iter(data.train_dataloader())
    tokens = 0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start, tokens = time.perf_counter(), 0
        batch = next(batches)
        tokens += int((batch.tgt_out != model.pad_id).sum())  # counted on the CPU: no sync
        batch = batch.to(device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        loss = F.cross_entropy(
            logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=model.pad_id
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    _sync(device)
    model.eval()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a translation .ckpt (default: untrained)")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="without --checkpoint")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--limit", type=int, help="decode only the first N test sentences")
    parser.add_argument("--train-steps", type=int, help="timed training steps (30; 3 with --limit)")
    parser.add_argument("--rounds", type=int, default=3, help="greedy / beam rounds; medians")
    parser.add_argument("--exhaustive", action="store_true", help="beam search without early stop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.checkpoint:
        translator = Translator.from_checkpoint(args.checkpoint, device)
        model, decoding = translator.model, translator.decoding
        data = checkpoint_data(args.checkpoint)
        data.load_state_dict(translator.codec.state_dict())
        origin = f"{args.checkpoint}"
    else:
        model, data, decoding = from_recipe(args.recipe, args.batch_size)
        model.to(device).eval()
        origin = f"{args.recipe.name}, freshly initialised (untrained)"
    data.batch_size = args.batch_size
    if args.exhaustive:
        decoding = decoding.override(early_stopping=False)
    lines, total = source_sentences(data, args.limit)
    batches = make_batches(data, lines, args.batch_size, device)
    src, src_lengths = batches[0]
    time_decoding(model, [(src[:4], src_lengths[:4])], args.beam, decoding)  # warm-up
    searches = {"greedy": 1, f"beam {args.beam}": args.beam}
    runs: dict[str, list] = {name: [] for name in searches}
    for _ in range(args.rounds):  # alternate, so drift in machine speed hits both alike
        for name, beam in searches.items():
            runs[name].append(time_decoding(model, batches, beam, decoding))
    results = {name: [statistics.median(column) for column in zip(*rows)]
               for name, rows in runs.items()}  # fmt: skip
    steps = args.train_steps or (3 if args.limit else 30)
    warmup = 1 if args.limit else 3
    train = training_tokens_per_s(model, data, device, warmup, steps)

    params = sum(p.numel() for p in model.parameters())
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    print(f"model: {type(model).__name__}, {params / 1e6:.1f}M parameters, {origin}")
    print(
        f"decoding {len(lines):,} of {total:,} test sentences ({data.data_dir.name}), "
        f"batch size {args.batch_size}, max length ceil({decoding.max_len_a} n) + "
        f"{decoding.max_len_b}"
    )
    stop = "early stopping" if decoding.early_stopping else "exhaustive"
    print(f"  medians of {args.rounds} alternating rounds; beam search with {stop}")
    for name, (seconds, cpu, mean_len, at_limit) in results.items():
        print(
            f"  {name:<8}: {len(lines) / seconds:>9,.1f} sentences/s  ({seconds:.2f} s wall, "
            f"{cpu:.2f} s CPU; {mean_len:.1f} tokens per output, {at_limit:.0%} at the length "
            "limit)"
        )
    beam, greedy = results[f"beam {args.beam}"], results["greedy"]
    print(
        f"  beam {args.beam} / greedy time ratio = {beam[0] / greedy[0]:.2f} wall, "
        f"{beam[1] / greedy[1]:.2f} CPU"
    )
    if not args.checkpoint:
        print("  (untrained: outputs run to the length limit, the worst case for decoding)")
    print(
        f"training: {train:>9,.0f} target tokens/s  (forward + backward + Adam, clip 1, "
        f"batch {args.batch_size}, {steps} steps after {warmup} warm-up)"
    )


if __name__ == "__main__":
    main()
