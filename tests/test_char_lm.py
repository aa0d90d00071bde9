"""The char-LM task end to end: it learns, resumes exactly, samples, and saves safely."""

import functools

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.char_text import CharTextDataModule
from zoo.cores import GRU, LSTM
from zoo.models import CharRNN
from zoo.predict import CharLM
from zoo.predict.char_lm import generate_text
from zoo.tasks.char_lm import CharLanguageModel


class RecordLosses(pl.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = outputs["loss"].detach().clone()


def _task(dm, core=LSTM, dropout=0.0, lr=1e-2, dropout_mask="element"):
    return CharLanguageModel(
        dm.vocab_size,
        core=functools.partial(core, hidden_size=32),
        embedding_dim=16,
        dropout=dropout,
        dropout_mask=dropout_mask,
        optimizer=functools.partial(torch.optim.Adam, lr=lr),
    )


def _trainer(tmp_path, max_steps, callbacks=(), logger=False, **kwargs):
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        **kwargs,
    )


def test_model_learns_shakespeare(tmp_path):
    pl.seed_everything(0)
    dm = CharTextDataModule(batch_size=16, seq_len=32)
    task = _task(dm, core=GRU)
    trainer = _trainer(
        tmp_path, 150, limit_val_batches=20, val_check_interval=150, enable_checkpointing=False
    )
    trainer.fit(task, dm)
    metrics = trainer.callback_metrics
    uniform_bpc = torch.log2(torch.tensor(float(dm.vocab_size)))
    # Far below a uniform guess (6.2 bits) and below a unigram model (~4.4 bits on this text).
    assert metrics["val/bpc"] < 3.8 < uniform_bpc
    torch.testing.assert_close(
        metrics["val/bpc"], metrics["val/loss"] / torch.log(torch.tensor(2.0))
    )
    torch.testing.assert_close(metrics["val/ppl"], metrics["val/loss"].exp())


def test_resume_mid_epoch_continues_exactly(tmp_path):
    """Stop at step 5 of an epoch, resume from the checkpoint: the same losses as one long run."""
    dm_args = dict(batch_size=4, seq_len=16)
    pl.seed_everything(0)
    dm = CharTextDataModule(**dm_args)
    full = RecordLosses()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    _trainer(tmp_path, 12, [full, ckpt], limit_val_batches=0).fit(_task(dm, dropout=0.2), dm)

    pl.seed_everything(123)  # a different seed: the checkpoint must restore everything
    dm = CharTextDataModule(**dm_args)
    resumed = RecordLosses()
    path = tmp_path / "ckpt" / "epoch=0-step=5.ckpt"
    _trainer(tmp_path, 12, [resumed], limit_val_batches=0).fit(
        _task(dm, dropout=0.2), dm, ckpt_path=path
    )
    assert sorted(resumed.losses) == list(range(6, 13))
    for step, loss in resumed.losses.items():
        torch.testing.assert_close(loss, full.losses[step], rtol=0, atol=1e-6)


def test_state_is_carried_and_reset_each_epoch(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    dm = CharTextDataModule([str(text)], batch_size=2, seq_len=20, val_fraction=0.1)
    task = _task(dm)
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(pl_module._train_state is None)

    trainer = _trainer(tmp_path, -1, [Spy()], max_epochs=2, limit_val_batches=0)
    trainer.fit(task, dm)
    per_epoch = len(dm.train_dataloader())
    assert seen == ([True] + [False] * (per_epoch - 1)) * 2


def test_checkpoint_samples_and_keeps_vocab(tmp_path):
    pl.seed_everything(0)
    dm = CharTextDataModule(batch_size=8, seq_len=32)
    task = _task(dm)
    trainer = _trainer(tmp_path, 30, limit_val_batches=2)
    trainer.fit(task, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    lm = CharLM.from_checkpoint(path)
    model, vocab = lm.model, lm.vocab
    assert vocab == dm.vocab
    x, _ = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(model(x)[0], task.model.cpu().eval()(x)[0])
    text = generate_text(model, vocab, "ROMEO:", 80, temperature=0.7, seed=3)
    assert text.startswith("ROMEO:") and len(text) == 86
    assert set(text) <= set(vocab.chars[1:])  # never the unknown symbol
    assert text == generate_text(model, vocab, "ROMEO:", 80, temperature=0.7, seed=3)
    greedy = generate_text(model, vocab, "a", 5, greedy=True)
    ids = vocab.encode("a")
    state = None
    for _ in range(5):
        logits, state = model.step(ids[-1:], state)
        ids = torch.cat([ids, logits.argmax(-1)])
    assert greedy == vocab.decode(ids)


def test_predict_gives_bits_per_character_matching_test_bpc(tmp_path):
    pl.seed_everything(0)
    dm = CharTextDataModule(batch_size=8, seq_len=32, eval_batch_size=4)
    task = _task(dm)
    trainer = _trainer(
        tmp_path,
        10,
        limit_val_batches=0,
        limit_test_batches=6,
        limit_predict_batches=6,
        enable_checkpointing=False,
    )
    trainer.fit(task, dm)
    bpc = trainer.test(task, dm, verbose=False)[0]["test/bpc"]
    bits = torch.cat([b.flatten() for b in trainer.predict(task, dm)])
    assert bits.shape == (6 * 4 * 32,)
    assert bits.mean().item() == pytest.approx(bpc, rel=1e-5)


def test_sample_callback_logs_a_growing_table(tmp_path):
    from zoo.callbacks import SampleText

    class TextLogger(pl.loggers.CSVLogger):
        tables = []

        def log_text(self, key, columns, data, step):
            self.tables.append((key, columns, [row[:] for row in data], step))

    pl.seed_everything(0)
    dm = CharTextDataModule(batch_size=4, seq_len=16)
    logger = TextLogger(tmp_path)
    callback = SampleText(steps=[2, 4], length=20, prime="A", echo=False)
    _trainer(tmp_path, 5, [callback], limit_val_batches=0, logger=logger).fit(_task(dm), dm)
    assert [(t[0], t[3], len(t[2])) for t in logger.tables] == [
        ("samples", 2, 1),
        ("samples", 4, 2),
    ]
    step, text = logger.tables[-1][2][-1]
    assert step == 4 and text.startswith("A") and len(text) == 21


def test_sequence_dropout_mask_is_shared_across_time_steps():
    torch.manual_seed(0)
    model = CharRNN(10, functools.partial(LSTM, hidden_size=8), 4, dropout=0.25)
    locked = CharRNN(
        10, functools.partial(LSTM, hidden_size=8), 4, dropout=0.25, dropout_mask="sequence"
    )
    x = torch.ones(64, 20, 32)
    dropped = locked.drop(x)
    # One mask per sequence and feature: every time step of a row sees the same one.
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    torch.testing.assert_close(dropped.unique(), torch.tensor([0.0, 1 / 0.75]))
    kept = (dropped[:, 0] > 0).float().mean().item()
    assert 0.70 < kept < 0.80  # 2,048 draws at p = 0.75
    # The element mask differs between time steps; neither touches anything in eval mode.
    element = model.drop(x)
    assert not torch.equal(element, element[:, :1].expand_as(element))
    locked.eval()
    assert torch.equal(locked.drop(x), x)
    everything = CharRNN(10, functools.partial(LSTM, hidden_size=8), 4, 1.0, False, "sequence")
    leaf = x.clone().requires_grad_()
    dropped = everything.drop(leaf)
    assert torch.equal(dropped, torch.zeros_like(x))  # as nn.Dropout(1.0): no NaN
    dropped.sum().backward()  # and still in the graph (DDP needs every parameter used)
    assert torch.equal(leaf.grad, torch.zeros_like(x))


def test_dropout_mask_is_kept_in_the_config_and_checked():
    factory = functools.partial(GRU, hidden_size=8)
    model = CharRNN(10, factory, 4, dropout=0.1, dropout_mask="sequence")
    config = model.config()
    assert CharRNN.from_config(config).dropout_mask == "sequence"
    del config["dropout_mask"]  # a config written before the argument existed
    assert CharRNN.from_config(config).dropout_mask == "element"
    with pytest.raises(ValueError, match="'locked'"):
        CharRNN(10, factory, 4, dropout_mask="locked")


def test_model_learns_with_sequence_dropout(tmp_path):
    pl.seed_everything(0)
    dm = CharTextDataModule(batch_size=16, seq_len=32)
    task = _task(dm, core=LSTM, dropout=0.1, dropout_mask="sequence")
    trainer = _trainer(
        tmp_path, 150, limit_val_batches=20, val_check_interval=150, enable_checkpointing=False
    )
    trainer.fit(task, dm)
    assert trainer.callback_metrics["val/bpc"] < 3.8
