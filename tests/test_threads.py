"""Threads that follow the free cores: the meter sees another process's busy core, and a fit
beside one drops to the threads that are left, then gives the count back at the end."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from zoo.threads import CoreMeter, _busy_seconds, threads_for

STAT = """cpu  900 0 300 5000 100 0 0 0 0 0
cpu0 400 0 100 2500 50 0 0 0 0 0
cpu1 500 0 200 2500 50 0 0 0 0 0
intr 12345
"""


def test_busy_seconds_count_only_the_cpus_asked_for() -> None:
    hertz = 100  # SC_CLK_TCK on Linux
    assert _busy_seconds([0], STAT) == pytest.approx(500 / hertz)
    assert _busy_seconds([0, 1], STAT) == pytest.approx(1200 / hertz)
    assert _busy_seconds([7], STAT) is None


@pytest.mark.parametrize(
    "cpus,others,most,expected",
    [(2, 0.0, 2, 2), (2, 0.3, 2, 2), (2, 0.9, 2, 1), (2, 2.0, 2, 1), (8, 3.2, 8, 5), (8, 0, 4, 4)],
)
def test_threads_for_the_free_cores(cpus, others, most, expected) -> None:
    assert threads_for(cpus, others, most) == expected


@pytest.fixture
def busy_process():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it start spinning
    yield spin
    spin.kill()
    spin.wait()


@pytest.mark.skipif(not CoreMeter().cpus or CoreMeter()._last is None, reason="no /proc/stat")
def test_meter_sees_another_process_busy(busy_process) -> None:
    meter = CoreMeter()
    time.sleep(1.0)
    assert 0.6 < meter.others() <= len(meter.cpus)


@pytest.mark.skipif(len(CoreMeter().cpus) != 2 or CoreMeter()._last is None, reason="2 cores")
def test_fit_beside_a_busy_process_drops_to_one_thread(busy_process, tmp_path) -> None:
    import functools

    import pytorch_lightning as pl

    from datamodules.char_text import CharTextDataModule
    from zoo.callbacks import FollowFreeCores
    from zoo.cores import LSTM
    from zoo.tasks.char_lm import CharLanguageModel

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dm = CharTextDataModule(batch_size=8, seq_len=32)
        task = CharLanguageModel(dm.vocab_size, core=functools.partial(LSTM, hidden_size=64))
        follow = FollowFreeCores(interval=0.3)
        trainer = pl.Trainer(
            accelerator="cpu", max_time="00:00:00:03", max_steps=100_000, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, callbacks=[follow], default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(task, dm)
        assert follow.changes and follow.changes[0][1] == 1  # one core was taken: one thread
        assert torch.get_num_threads() == 2  # given back at the end
    finally:
        torch.set_num_threads(threads)
