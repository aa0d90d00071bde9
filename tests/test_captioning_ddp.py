"""Captioning under DDP: 2 processes (gloo, CPU), each decoding half the pictures, report the corpus
scores of one process, because the captions are gathered and scored as one corpus."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.caption_batches import shard
from zoo.metrics import score_captions

ROOT = Path(__file__).resolve().parent.parent
RECIPE = str(ROOT / "recipes" / "captioning" / "tiny.yaml")
KEYS = ("val/bleu1", "val/bleu4", "val/rouge_l", "val/cider")

pytestmark = pytest.mark.usefixtures("one_thread")


def _last_row(log_dir: Path) -> dict:
    rows = list(csv.DictReader(open(next(log_dir.rglob("metrics.csv")))))
    return [r for r in rows if r.get("val/bleu4")][-1]


def test_ddp_caption_scores_match_one_process(tmp_path: Path) -> None:
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    common = ["--config", RECIPE, "--model.init_args.meteor", "false",
              "--trainer.enable_progress_bar", "false"]  # fmt: skip
    args = [*common, "--trainer.default_root_dir", str(tmp_path / "fit"),
            "--trainer.max_steps", "30", "--trainer.check_val_every_n_epoch", "100"]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    checkpoint = tmp_path / "tiny.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    single = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    captions = cli.model.last_captions
    assert single["val/bleu1"] > 10  # it decodes something worth comparing

    # What averaging each rank's own scores would report: not the corpus scores.
    references = cli.datamodule.references("val")
    ids = sorted(captions)
    per_rank = []
    for rank in range(2):
        mine = [ids[j] for j in shard(len(ids), rank, 2)]
        per_rank.append(
            score_captions(
                {i: references[i] for i in mine},
                {i: " ".join(captions[i]) for i in mine},
                meteor=False,
            )
        )
    mean_of_ranks = {f"val/{k}": 100 * sum(s[k] for s in per_rank) / 2 for k in per_rank[0]}
    assert any(abs(mean_of_ranks[k] - single[k]) > 1 for k in ("val/bleu4", "val/cider"))

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "validate", *common, "--ckpt_path", str(checkpoint),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out),
           "--trainer.default_root_dir", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    ddp = _last_row(out)
    for key in KEYS:
        assert float(ddp[key]) == pytest.approx(single[key], rel=1e-5), key
