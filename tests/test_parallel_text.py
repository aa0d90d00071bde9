"""Parallel text: reading and its errors, vocabularies, batch layouts, DDP sharding, round trips."""

import gzip
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.utilities import move_data_to_device

from datamodules.pairs import Batch, Ragged, TrainLoader, epoch_batches, eval_batches
from datamodules.parallel_text import ParallelTextDataModule
from datamodules.text_files import read_lines
from datamodules.vocab import BOS, EOS, PAD, UNK, Vocab
from zoo.errors import DataError

EN = [
    "The cat sleeps on the bed.",
    "The dog eats bread in the house.",
    "My brother reads a book.",
    "The children play in the garden.",
    "I don't like the rain.",
    "The sun rises in the east.",
    "We drink water and eat bread.",
    "The man opens the door of the house.",
]
FR = [
    "Le chat dort sur le lit.",
    "Le chien mange du pain dans la maison.",
    "Mon frère lit un livre.",
    "Les enfants jouent dans le jardin.",
    "Je n'aime pas la pluie.",
    "Le soleil se lève à l'est.",
    "Nous buvons de l'eau et mangeons du pain.",
    "L'homme ouvre la porte de la maison.",
]


def write(path, lines, gz=False):
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def synthetic(rng, n, vocab=30):
    """``n`` pairs of random words ``s0 s1 ...`` / ``t0 t1 ...``, Zipf-ish, lengths 1-20."""
    weights = 1 / np.arange(1, vocab + 1)
    lines = {"en": [], "fr": []}
    for _ in range(n):
        length = int(rng.integers(1, 21))
        for lang, letter, extra in (("en", "s", 0), ("fr", "t", int(rng.integers(0, 3)))):
            words = rng.choice(vocab, length + extra, p=weights / weights.sum())
            lines[lang].append(" ".join(f"{letter}{w}" for w in words))
    return lines


@pytest.fixture
def corpus(tmp_path):
    """train (200 random pairs, gzipped), valid (the 8 sentences above), test (23 random pairs)."""
    rng = np.random.default_rng(0)
    train, test = synthetic(rng, 200), synthetic(rng, 23)
    for lang in ("en", "fr"):
        write(tmp_path / f"train.{lang}.gz", train[lang], gz=True)
        write(tmp_path / f"valid.{lang}", EN if lang == "en" else FR)
        write(tmp_path / f"test.{lang}", test[lang])
    return tmp_path


def make(corpus, **kwargs):
    kwargs = {"data_dir": str(corpus), "batch_size": 8, **kwargs}
    return ParallelTextDataModule(**kwargs)


def padding_fraction(batches, lengths):
    real = sum(lengths[b].sum() for b in batches)
    return 1 - real / sum(len(b) * lengths[b].max() for b in batches)


# ------------------------------------------------------------------------------ vocabulary
def test_vocab_ranks_by_count_then_code_point_and_decodes_to_eos():
    vocab = Vocab.build([["b", "a", "c", "b"], ["c", "d", "<unk>"]], max_size=7, min_freq=1)
    assert vocab.to_list() == ["<pad>", "<unk>", "<s>", "</s>", "b", "c", "a"]  # "d" is over
    assert len(Vocab.build([["b", "a", "c", "b"]], max_size=99, min_freq=2)) == 5
    assert vocab.encode(["a", "zebra", "</s>"]) == [6, UNK, EOS]
    assert vocab.decode([BOS, 6, PAD, UNK, 4, EOS, 5]) == ["a", "<unk>", "b"]
    assert vocab.decode(torch.tensor([6, UNK, EOS]), skip_unk=True) == ["a"]
    assert Vocab.from_list(vocab.to_list()) == vocab and vocab != Vocab(vocab.tokens[:-1])
    with pytest.raises(ValueError, match="start with"):
        Vocab(["a", "<pad>"])


def test_vocab_comes_from_the_training_split_only_and_is_capped(corpus):
    dm = make(corpus, src_vocab_size=14, tgt_vocab_size=1000)
    assert dm.num_src_tokens == len(dm.src_vocab) == 14
    counts = Counter(" ".join(read_lines(corpus / "train.en.gz")).split())
    ranked = sorted(counts, key=lambda word: (-counts[word], word))
    assert dm.src_vocab.tokens[4:] == ranked[:10] and ranked[0] == "s0"  # Zipf: s0 first
    assert all(t.startswith("t") for t in dm.tgt_vocab.tokens[4:]) and dm.num_tgt_tokens == 34
    assert (dm.pad_id, dm.unk_id, dm.bos_id, dm.eos_id) == (0, 1, 2, 3)
    val = next(iter(dm.val_dataloader()))  # English sentences: no word of them was in training
    assert set(val.src[val.src > EOS].tolist()) == set() and (val.src == UNK).any()
    assert make(corpus, src_vocab_size=14).src_vocab == dm.src_vocab  # deterministic


# ------------------------------------------------------------------------------- batches
def test_batches_shift_the_target_and_reverse_only_source_tokens(corpus):
    plain, reverse = make(corpus), make(corpus, reverse_source=True)
    a, b = next(iter(plain.test_dataloader())), next(iter(reverse.test_dataloader()))
    torch.testing.assert_close(a.index, b.index)
    torch.testing.assert_close(a.src_lengths, b.src_lengths)
    for row, rev, length in zip(a.src, b.src, a.src_lengths.tolist()):
        assert row[length - 1] == rev[length - 1] == EOS  # </s> ends both
        torch.testing.assert_close(rev[: length - 1], row[: length - 1].flip(0))
        assert (rev[length:] == PAD).all()  # padding stays at the end
    assert (a.tgt_in[:, 0] == BOS).all()
    lengths = (a.tgt_out != PAD).sum(1)
    assert (a.tgt_out[torch.arange(len(a)), lengths - 1] == EOS).all()
    torch.testing.assert_close(
        a.tgt_in[:, 1:][a.tgt_out[:, :-1] != EOS], a.tgt_out[:, :-1][a.tgt_out[:, :-1] != EOS]
    )


def test_max_len_drops_long_training_pairs_and_counts_them(corpus):
    dm = make(corpus, max_len=8)
    src, tgt = (read_lines(corpus / f"train.{lang}.gz") for lang in ("en", "fr"))
    too_long = sum(max(len(s.split()), len(t.split())) > 8 for s, t in zip(src, tgt))
    assert dm.split_size("train") == 200 - too_long and dm.dropped_long == too_long > 50
    assert len(dm.references("train")) == dm.split_size("train")
    assert max(b.src_lengths.max() for b in dm.train_dataloader()) <= 8 + 1  # + </s>
    assert dm.split_size("test") == 23  # evaluation splits are never filtered


def test_bucketing_cuts_padding_is_seeded_and_reshuffles_each_epoch():
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(1, 60, 2000), rng.integers(1, 60, 2000)
    lengths = (src, tgt)
    bucketed = epoch_batches(lengths, 32, seed=0, epoch=0)
    plain = epoch_batches(lengths, 32, seed=0, epoch=0, bucket=False)
    for batches in (bucketed, plain):
        assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    assert padding_fraction(bucketed, src) < 0.05 < 0.4 < padding_fraction(plain, src)
    again = epoch_batches(lengths, 32, seed=0, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(bucketed, again))
    for other in (epoch_batches(lengths, 32, 0, epoch=1), epoch_batches(lengths, 32, 1, 0)):
        assert not all(np.array_equal(x, y) for x, y in zip(bucketed, other))


@pytest.mark.parametrize("n", [160, 170])  # 20 batches of 8; 22 batches, the last short
def test_training_ranks_split_one_process_batches(n):
    lengths = Ragged.from_lists([[5] * (i % 13 + 1) for i in range(n)])
    single = TrainLoader(lengths, lengths, 8, seed=3)
    ranks = [TrainLoader(lengths, lengths, 8, seed=3, rank=r, world_size=3) for r in range(3)]
    everyone = {frozenset(b.index.tolist()) for b in single}
    per_rank = [[frozenset(b.index.tolist()) for b in loader] for loader in ranks]
    assert [len(p) for p in per_rank] == [len(loader) for loader in ranks] == [len(single) // 3] * 3
    union = set().union(*per_rank)
    assert len(union) == sum(map(len, per_rank))  # disjoint
    assert union <= everyone and len(everyone - union) == len(single) % 3  # the rest is dropped


def test_training_loader_resumes_mid_epoch():
    data = Ragged.from_lists([[4] * (i % 7 + 1) for i in range(100)])
    full = [b.index for b in TrainLoader(data, data, 8)]
    loader = TrainLoader(data, data, 8, consumed=lambda: 5)
    assert loader.state_dict() == {"position": 5}
    loader.load_state_dict({"position": 5})
    torch.testing.assert_close(torch.cat([b.index for b in loader]), torch.cat(full[5:]))
    assert len(list(loader)) == len(loader)  # the next epoch starts from the beginning


@pytest.mark.parametrize("n, batch_size", [(23, 4), (17, 1), (8, 16), (2, 3)])
def test_evaluation_ranks_see_each_sentence_once_in_equal_batch_counts(n, batch_size):
    lengths = (np.arange(n) % 5, np.arange(n) % 3)
    ranks = [eval_batches(lengths, batch_size, r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) >= 1
    every = np.concatenate([b for batches in ranks for b in batches])
    assert sorted(every.tolist()) == list(range(n))
    assert max(len(b) for batches in ranks for b in batches) <= max(batch_size, 2)
    with pytest.raises(DataError, match="has 2 pairs, fewer than the 3 processes"):
        eval_batches((np.ones(2), np.ones(2)), batch_size, 0, world_size=3)


def test_data_module_shards_by_trainer_rank(corpus):
    dm = make(corpus, eval_batch_size=4)
    seen, steps = [], []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)
        seen += [i for b in dm.test_dataloader() for i in b.index.tolist()]
        steps.append(len(dm.train_dataloader()))
    assert sorted(seen) == list(range(23)) and steps == [12, 12]  # ceil(200 / 8) // 2


def test_batch_moves_with_lightning_and_keeps_lengths_on_cpu(corpus):
    batch = next(iter(make(corpus).val_dataloader()))
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, Batch)
    assert moved.src.is_meta and moved.tgt_in.is_meta and moved.tgt_out.is_meta
    assert moved.src_lengths.device.type == moved.index.device.type == "cpu"
    doubled = apply_to_collection(batch, torch.Tensor, lambda t: t * 2)
    torch.testing.assert_close(doubled.src, batch.src * 2)


# ---------------------------------------------------------------------------- round trips
def test_detokenize_recovers_ordinary_sentences(corpus):
    dm = make(corpus, train="valid", test=None)  # every word of the references is known
    refs = dm.references("val")
    out = {
        i: dm.detokenize(row)
        for b in dm.val_dataloader()
        for i, row in zip(b.index.tolist(), b.tgt_out)
    }
    assert [out[i] for i in range(len(refs))] == refs == FR
    assert (
        dm.detokenize([BOS, *dm.tgt_vocab.encode(["Le", "chat", "dort"]), EOS, 5]) == "Le chat dort"
    )


def test_encode_source_maps_unknown_words_and_refuses_long_lines(corpus):
    dm = make(corpus, train="valid", max_len=8, reverse_source=True)
    src, lengths = dm.encode_source(["The cat sleeps.", "", "Zebras sleep."])
    assert lengths.tolist() == [5, 1, 4] and src.shape == (3, 5)
    assert dm.src_vocab.decode(src[0].tolist() + [EOS]) == [".", "sleeps", "cat", "The"]
    assert src[1, 0] == EOS and src[2, :4].tolist() == [
        dm.src_vocab.encode(["."])[0],
        UNK,
        UNK,
        EOS,
    ]
    with pytest.raises(ValueError, match="line 2 has 25 tokens, more than 24"):
        dm.encode_source(["ok", " ".join("a" * 25)])
    with pytest.raises(DataError, match="every pair is longer than max_len=3"):
        make(corpus, train="valid", max_len=3).setup()


def test_sentencepiece_is_deterministic_round_trips_and_survives_a_checkpoint(corpus, tmp_path):
    dm = make(corpus, train="valid", tokenizer="sentencepiece", sp_vocab_size=80, test=None)
    assert dm.src_vocab == dm.tgt_vocab and 20 < dm.num_tgt_tokens <= 80
    assert dm.src_vocab.tokens[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    refs = dm.references("val")
    batches = list(dm.val_dataloader())
    out = {i: dm.detokenize(row) for b in batches for i, row in zip(b.index.tolist(), b.tgt_out)}
    assert [out[i] for i in range(len(refs))] == FR
    path = tmp_path / "dm.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": pl.__version__,
            "datamodule_hyper_parameters": dict(dm.hparams, data_dir=str(tmp_path / "gone")),
            "ParallelTextDataModule": dm.state_dict(),
        },
        path,
    )
    state = torch.load(path, weights_only=True)["ParallelTextDataModule"]
    assert state["tgt_sp_model"].dtype == torch.uint8
    again = ParallelTextDataModule.load_from_checkpoint(path, weights_only=True)
    assert again.tgt_vocab == dm.tgt_vocab  # restored without reading any data
    torch.testing.assert_close(again.encode_source(EN)[0], dm.encode_source(EN)[0])
    assert again.detokenize(batches[0].tgt_out[0]) == out[batches[0].index[0].item()]
    fresh = make(corpus, train="valid", tokenizer="sentencepiece", sp_vocab_size=80, test=None)
    torch.testing.assert_close(fresh.encode_source(FR)[0], dm.encode_source(FR)[0])


def test_word_vocab_survives_a_checkpoint_state(corpus):
    dm = make(corpus)
    state = dm.state_dict()
    other = make(corpus, src_vocab_size=10)
    other.load_state_dict(state)
    assert other.src_vocab == dm.src_vocab
    torch.testing.assert_close(
        next(iter(other.test_dataloader())).src, next(iter(dm.test_dataloader())).src
    )


def test_tsv_gives_the_same_pairs_as_two_files(corpus, tmp_path):
    tsv = write(tmp_path / "pairs.tsv", [f"{e}\t{f}" for e, f in zip(EN, FR)])
    a = make(corpus, train="valid", val_tsv=str(tsv))
    assert a.references("val") == make(corpus, train="valid").references("val")
    torch.testing.assert_close(
        a.encode_source(EN)[0], make(corpus, train_tsv=str(tsv)).encode_source(EN)[0]
    )


def test_bundled_bible_is_found_and_reads_quickly():
    dm = ParallelTextDataModule(train="valid", val="test", test=None, batch_size=32)
    assert dm.data_dir.name == "bible-enfr" and dm.skipped_empty == {}
    assert len(dm.references("val")) == 1935 and dm.skipped_empty == {"val": 0}
    assert 3000 < dm.num_src_tokens < dm.num_tgt_tokens < 30000
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 32 and batch.src.shape[1] <= 51 and dm.dropped_long > 0
    assert dm.skipped_empty == {"train": 0, "val": 0}


# ---------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"train\.en: no such file \(nor train\.en\.gz\)"):
        ParallelTextDataModule(data_dir=str(tmp_path)).setup()
    with pytest.raises(DataError, match="no such directory"):
        ParallelTextDataModule(data_dir=str(tmp_path / "nope")).setup()


def test_unaligned_files_name_both_counts(tmp_path):
    write(tmp_path / "train.en", EN)
    write(tmp_path / "train.fr", FR[:5])
    with pytest.raises(DataError, match=r"train\.en has 8 lines but .*train\.fr has 5"):
        ParallelTextDataModule(data_dir=str(tmp_path)).setup()


def test_non_utf8_line_is_named(tmp_path):
    write(tmp_path / "train.en", EN)
    (tmp_path / "train.fr").write_bytes(b"a\nb\n" + "caf\xe9\n".encode("latin-1") * 6)
    with pytest.raises(DataError, match=r"train\.fr: line 3 is not UTF-8 \(byte 0xe9\)"):
        ParallelTextDataModule(data_dir=str(tmp_path)).setup()


def test_tsv_line_without_one_tab(tmp_path):
    tsv = write(tmp_path / "p.tsv", ["a\tb", "c d", "e\tf"])
    with pytest.raises(DataError, match=r"p\.tsv: line 2 has 0 tabs"):
        ParallelTextDataModule(train_tsv=str(tsv)).setup()


def test_empty_sides_are_skipped_with_a_count(corpus, tmp_path):
    write(tmp_path / "valid.en", ["a b", "  ", "c", "d"])
    write(tmp_path / "valid.fr", ["x y", "z", "", "w"])
    dm = make(corpus, train="valid", test=None, data_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="skipped 2 pairs with an empty side"):
        assert dm.references("train") == ["x y", "w"]
    assert dm.skipped_empty["train"] == 2


class _Recorder(pl.LightningModule):
    """Just enough of a translation task to see what Lightning hands it."""

    def __init__(self, num_src_tokens: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(num_src_tokens, 2)
        self.seen: dict[str, list] = {"train": [], "val": []}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        assert isinstance(batch, Batch) and batch.src_lengths.device.type == "cpu"
        self.seen["train"].append((self.current_epoch, batch.index.tolist()))
        return self.embed(batch.src).mean()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.seen["val"].extend(batch.index.tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_reshuffles_each_epoch_and_validates_every_sentence(corpus):
    dm = make(corpus, batch_size=50)
    model = _Recorder(dm.num_src_tokens)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    epochs = [[idx for e, idx in model.seen["train"] if e == epoch] for epoch in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 4 and epochs[0] != epochs[1]
    for epoch, order in enumerate(epochs):
        expected = TrainLoader(dm._split("train").src, dm._split("train").tgt, 50).batches(epoch)
        assert order == [b.tolist() for b in expected]
    assert sorted(model.seen["val"]) == sorted(list(range(8)) * 2)  # once per validation run


def test_lightning_cli_parser_checks_the_arguments():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ParallelTextDataModule, "data")
    config = parser.parse_args(["--data.tokenizer=sentencepiece", "--data.max_len=80"])
    assert config.data.tokenizer == "sentencepiece" and config.data.src_vocab_size == 30000
    with pytest.raises(Exception, match="tokenizer"):
        parser.parse_args(["--data.tokenizer=bpe"])


def test_cache_dir_keeps_the_prepared_splits_for_the_next_process(corpus, tmp_path, monkeypatch):
    import datamodules.tokenizers as tokenizers

    cache = tmp_path / "cache"
    first = make(corpus, train="valid", val="test", cache_dir=str(cache), lowercase=True)
    first.setup()
    assert len(list(cache.glob("codec-*.pt"))) == 1 and len(list(cache.glob("split-*"))) == 2
    assert not list(cache.glob(".work-*"))  # the intermediate tokenised text is gone
    monkeypatch.setattr(tokenizers, "_moses_tokenizer", None)  # a process that cannot tokenise
    second = make(corpus, train="valid", val="test", cache_dir=str(cache), lowercase=True)
    second.setup()
    assert second.tgt_vocab == first.tgt_vocab and "le" in second.tgt_vocab.tokens
    assert "Le" not in second.tgt_vocab.tokens and second.references("train") == FR
    for name in ("train", "val"):
        a, b = first._split(name), second._split(name)
        assert [a.src[i].tolist() for i in range(len(a))] == [
            b.src[i].tolist() for i in range(len(b))
        ]
    with pytest.raises(TypeError):  # a new setting is a new entry, tokenised again
        make(corpus, train="valid", val="test", cache_dir=str(cache)).setup()
