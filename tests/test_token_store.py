"""The tokenise-once store of parallel text, token batches, and ``rnn-zoo prepare translation``."""

from collections import Counter

import numpy as np
import pytest
import torch

from datamodules.pairs import Ragged, TrainLoader, epoch_batches
from datamodules.parallel_text import ParallelTextDataModule
from datamodules.text_files import read_lines
from zoo.errors import DataError, UserError


def write_corpus(folder, n, seed=0):
    """``n`` training pairs of random words (lengths 1-30), 20 validation pairs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("valid", 20)):
        lines = {"en": [], "fr": []}
        for _ in range(count):
            length = int(rng.integers(1, 31))
            for lang, letter in (("en", "s"), ("fr", "t")):
                words = rng.integers(0, 40, length + int(rng.integers(0, 3)))
                lines[lang].append(" ".join(f"{letter}{w}" for w in words))
        for lang, text in lines.items():
            (folder / f"{split}.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), 2500)


def make(corpus, cache, **kwargs):
    kwargs = {"data_dir": str(corpus), "test": None, "batch_size": 16, "cache_dir": str(cache),
              "max_len": 25, **kwargs}  # fmt: skip
    return ParallelTextDataModule(**kwargs)


def rows(split):
    return [split.src[i].tolist() for i in range(len(split))], [
        split.tgt[i].tolist() for i in range(len(split))
    ]


@pytest.mark.parametrize("tokenizer", ["moses", "sentencepiece"])
def test_stored_ids_are_the_codecs_ids_of_the_kept_lines(corpus, tmp_path, tokenizer):
    dm = make(corpus, tmp_path / "cache", tokenizer=tokenizer, sp_vocab_size=60)
    dm.setup("fit")
    src_lines, tgt_lines = read_lines(corpus / "train.en"), read_lines(corpus / "train.fr")
    src_ids, tgt_ids = dm.codec.encode(src_lines, "src"), dm.codec.encode(tgt_lines, "tgt")
    kept = [i for i in range(len(src_ids)) if max(len(src_ids[i]), len(tgt_ids[i])) <= 25]
    split = dm._split("train")
    assert rows(split) == ([src_ids[i] for i in kept], [tgt_ids[i] for i in kept])
    assert dm.dropped_long == len(src_lines) - len(kept) > 100
    assert dm.references("train") == [tgt_lines[i] for i in kept]
    # the folder is a Hugging Face dataset too, with the same rows
    import datasets

    stored = datasets.load_from_disk(str(split.path))
    assert stored["src"] == rows(split)[0] and len(stored) == len(kept)


def test_word_counts_by_arrow_are_pythons_counts_of_the_pairs_that_fit(monkeypatch):
    import datasets

    from datamodules import word_ids
    from datamodules.vocab import Vocab

    rng = np.random.default_rng(1)
    pieces, src, tgt = [], [], []
    for _ in range(4):  # several Arrow batches, counts merged between them
        a = [" ".join(f"w{w}" for w in rng.integers(0, 30, rng.integers(0, 9))) for _ in range(50)]
        b = [" ".join(f"é{w}" for w in rng.integers(0, 9, rng.integers(1, 6))) for _ in range(50)]
        pieces.append(datasets.Dataset.from_dict({"src": a, "tgt": b, "ref": b}))
        src, tgt = src + a, tgt + b
    rows = datasets.concatenate_datasets(pieces)
    assert len(rows.data.table.to_batches()) == 4
    monkeypatch.setattr(word_ids, "COUNT_MERGE", 40)
    fits = [len(s.split()) <= 5 and len(t.split()) <= 5 for s, t in zip(src, tgt)]
    for side, lines in (("src", src), ("tgt", tgt)):
        words = [line.split() for line, fit in zip(lines, fits) if fit]
        counts = word_ids.word_counts(rows, side, max_len=5)
        assert counts == Counter(w for line in words for w in line)
        assert Vocab.from_counts(counts, 12, 2) == Vocab.build(words, 12, 2)


def test_two_workers_prepare_the_same_store_as_one(corpus, tmp_path, monkeypatch):
    from datamodules import token_store

    monkeypatch.setattr(token_store, "MIN_SHARD", 100)  # a pool for the training split here
    one, two = make(corpus, tmp_path / "one"), make(corpus, tmp_path / "two", workers=2)
    assert two.store._num_proc(2500) == 2 and two.store._num_proc(20) is None
    assert one.prepare() == two.prepare() == {"train": len(one._split("train")), "val": 20}
    assert one.src_vocab == two.src_vocab and one.tgt_vocab == two.tgt_vocab
    for name in ("train", "val"):
        assert rows(one._split(name)) == rows(two._split(name))
    assert not list((tmp_path / "two").glob(".*"))  # no work or temporary folders left


def test_a_failed_preparation_leaves_no_entry(corpus, tmp_path, monkeypatch):
    from datamodules import word_ids

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(word_ids, "word_ids", broken)  # mid-way through the ids
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="disk full"):
        make(corpus, cache).prepare()
    assert not list(cache.glob("split-*")) and not list(cache.glob(".*"))
    monkeypatch.undo()
    assert make(corpus, cache).prepare()["val"] == 20  # and the next try builds it


def test_a_setting_that_changes_the_ids_gets_its_own_entry(corpus, tmp_path):
    first = make(corpus, tmp_path / "cache")
    second = make(corpus, tmp_path / "cache", lowercase=True)
    second.load_state_dict(first.state_dict())  # the same vocabularies, as from a checkpoint
    assert second.codec.src_vocab == first.codec.src_vocab
    assert first._split("val").path != second._split("val").path


# ------------------------------------------------------------------------------ token batches
def test_token_batches_hold_max_tokens_and_cover_the_epoch_once():
    rng = np.random.default_rng(2)
    src = rng.integers(1, 60, 3000)
    tgt = np.clip(src + rng.integers(-3, 4, 3000), 1, None)  # lengths of a pair go together
    batches = epoch_batches((src, tgt), 0, seed=0, epoch=0, max_tokens=640)
    assert sorted(np.concatenate(batches).tolist()) == list(range(3000))
    cost = [len(b) * (np.maximum(src[b], tgt[b]).max() + 1) for b in batches]
    assert max(cost) <= 640 and np.mean(cost) > 0.8 * 640  # the batches are nearly full
    sizes = [len(b) for b in batches]
    assert min(sizes) < 15 < 30 < max(sizes)  # long pairs in small batches, short in large
    again = epoch_batches((src, tgt), 0, seed=0, epoch=0, max_tokens=640)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    later = epoch_batches((src, tgt), 0, seed=0, epoch=1, max_tokens=640)
    assert len(later) == len(batches)  # as many steps in every epoch, in another order
    assert sorted(map(tuple, later)) == sorted(map(tuple, batches))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, later))


def test_token_batches_shard_over_ranks_and_resume_mid_epoch():
    data = Ragged.from_lists([[4] * (i % 29 + 1) for i in range(500)])
    single = TrainLoader(data, data, 1, max_tokens=120)
    ranks = [TrainLoader(data, data, 1, rank=r, world_size=2, max_tokens=120) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) // 2
    seen = [set(b.index.tolist()) for loader in ranks for b in loader]
    assert sum(map(len, seen)) == len(set().union(*seen))  # disjoint
    for batch in single:
        assert batch.src.numel() <= 120 and batch.tgt_in.numel() <= 120
    full = [b.index for b in single]
    resumed = TrainLoader(data, data, 1, max_tokens=120)
    resumed.load_state_dict({"position": 7})
    torch.testing.assert_close(torch.cat([b.index for b in resumed]), torch.cat(full[7:]))


def test_the_data_module_batches_by_tokens(corpus, tmp_path):
    dm = make(corpus, tmp_path / "cache", batch_type="tokens", max_tokens=300)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) and len({len(b) for b in batches}) > 3
    assert all(b.src.numel() <= 300 and b.tgt_out.numel() <= 300 for b in batches)
    assert sum(len(b) for b in batches) == dm.split_size("train")


def test_bad_batch_settings_are_refused_in_one_line(corpus, tmp_path):
    with pytest.raises(UserError, match="max_tokens=25 cannot hold one pair of max_len=25"):
        make(corpus, tmp_path, batch_type="tokens", max_tokens=25)
    with pytest.raises(UserError, match="batch_type must be 'sentences' or 'tokens'"):
        make(corpus, tmp_path, batch_type="words")
    with pytest.raises(UserError, match="workers is too small"):
        make(corpus, tmp_path, workers=0)


# --------------------------------------------------------------------------- the command
def test_prepare_translation_fills_the_store_that_training_reads(corpus, tmp_path, capsys):
    from zoo.cli.prepare import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  class_path: datamodules.parallel_text.ParallelTextDataModule\n"
        "  init_args: {test: null, max_len: 25, cache_dir: unused}\n"
    )
    cache = tmp_path / "cache"
    argv = ["translation", "--config", str(recipe), "--data-dir", str(corpus)]
    assert main([*argv, "--cache-dir", str(cache), "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    dm = make(corpus, cache)
    assert f"train={dm.split_size('train')} val=20 pairs -> {cache} in " in out
    entries = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert entries == ["codec", "split", "split"]  # and reading them made nothing new
    char = tmp_path / "char.yaml"
    char.write_text("data:\n  class_path: datamodules.char_text.CharTextDataModule\n")
    with pytest.raises(UserError, match="char.yaml: data is datamodules.char_text.CharText"):
        main(["translation", "--config", str(char)])
    with pytest.raises(DataError, match=r"train\.en: no such file"):
        main([*argv[:3], "--data-dir", str(tmp_path), "--cache-dir", str(cache)])
