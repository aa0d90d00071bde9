"""Character data: reading, vocabulary, and the truncated-BPTT batch layout."""

import gzip

import numpy as np
import pytest
import torch

from datamodules.char_text import BUNDLED_SHAKESPEARE, CharTextDataModule, StreamLoader
from datamodules.text_files import read_text
from datamodules.vocab import CharVocab
from zoo.errors import DataError


def test_windows_continue_each_stream_across_batches():
    ids = torch.arange(1, 203)  # 202 "characters"
    loader = StreamLoader(ids, batch_size=4, seq_len=10, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 5  # stream length (201 // 4 = 50) / 10
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        assert x0.shape == (4, 10)
        torch.testing.assert_close(y0[:, :-1], x0[:, 1:])  # targets are the next characters
        torch.testing.assert_close(x1[:, 0], y0[:, -1])  # batch i + 1 starts where i ended
    # stream s is one contiguous stretch of the corpus
    stream1 = torch.cat([x[1] for x, _ in batches])
    torch.testing.assert_close(stream1, ids[50:100])


def test_ranks_split_streams_like_one_big_batch():
    ids = torch.arange(1000)
    single = list(StreamLoader(ids, batch_size=6, seq_len=7, drop_last=False))
    per_rank = [
        list(StreamLoader(ids, 3, 7, rank=r, world_size=2, drop_last=False)) for r in (0, 1)
    ]
    assert len(single) == len(per_rank[0]) == len(per_rank[1])
    for i, (x, y) in enumerate(single):
        torch.testing.assert_close(torch.cat([per_rank[0][i][0], per_rank[1][i][0]]), x)
        torch.testing.assert_close(torch.cat([per_rank[0][i][1], per_rank[1][i][1]]), y)


def test_evaluation_scores_every_character_once():
    ids = torch.arange(1001)
    loader = StreamLoader(ids, batch_size=4, seq_len=32, drop_last=False)
    targets = torch.cat([y.flatten() for _, y in loader])
    torch.testing.assert_close(targets.sort().values, torch.arange(1, 1001))


def test_loader_resumes_from_saved_position():
    ids = torch.arange(500)
    loader = StreamLoader(ids, 2, 10, consumed=lambda: 7)
    assert loader.state_dict() == {"position": 7}
    fresh = StreamLoader(ids, 2, 10)
    fresh.load_state_dict({"position": 7})
    first = next(iter(fresh))[0]
    torch.testing.assert_close(first, list(StreamLoader(ids, 2, 10))[7][0])
    assert len(list(fresh)) == len(fresh)  # the next epoch starts from 0 again
    fresh.load_state_dict({"position": len(fresh)})  # saved at an epoch's end
    assert len(list(fresh)) == len(fresh)


def test_vocab_comes_from_training_split_only(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abab" * 50 + "z" * 50, encoding="utf-8")  # train = the first 200
    dm = CharTextDataModule(
        [str(path)], batch_size=2, seq_len=4, val_fraction=0.1, test_fraction=0.1
    )
    assert dm.vocab.chars[1:] == ["a", "b"]
    assert set(dm.split("val").tolist()) == {0}  # "z" was never seen in training


def test_vocab_encode_decode_and_strict():
    vocab = CharVocab.from_points(torch.tensor([ord(c) for c in "hello wörld"]).numpy())
    ids = vocab.encode("wörld")
    assert vocab.decode(ids) == "wörld"
    with pytest.raises(ValueError, match="'Z'"):
        vocab.encode("Zoo", strict=True)


def test_gzip_and_multiple_files(tmp_path):
    a, b = tmp_path / "a.txt.gz", tmp_path / "b.txt"
    a.write_bytes(gzip.compress(b"first part\n"))
    b.write_text("second part\n", encoding="utf-8")
    dm = CharTextDataModule([str(a), str(b)], val_fraction=0, test_fraction=0)
    assert dm.vocab.decode(dm.split("train")) == "first part\nsecond part\n"


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"caf\xe9 latin-1", "not UTF-8 .*offset 3"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        read_text(path)
    assert str(path) in str(err.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


@pytest.mark.parametrize("paths", [[], [""]])
def test_an_empty_list_of_paths_is_refused_rather_than_read_as_the_default(paths):
    """Only a missing data.paths means the bundled Shakespeare; ``--data.paths '[]'`` trained on it
    silently, with exit status 0."""
    with pytest.raises(DataError, match=r"data.paths is \[.*\]: name at least one text file"):
        CharTextDataModule(paths)
    assert CharTextDataModule(None).paths == [str(BUNDLED_SHAKESPEARE)]  # the default stays


def test_corpus_shorter_than_one_batch(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("tiny corpus", encoding="utf-8")
    dm = CharTextDataModule([str(path)], batch_size=8, seq_len=50)
    with pytest.raises(DataError, match="too short") as err:
        dm.train_dataloader()
    assert "short.txt" in str(err.value)


# ----------------------------------------------------------------------------- unit: byte
def test_bytes_are_memory_mapped_and_served_as_ids_of_the_training_bytes(tmp_path):
    rng = torch.Generator().manual_seed(0)
    corpus = torch.randint(0, 205, (40_000,), generator=rng, dtype=torch.uint8)  # 205 values
    corpus[-2_000:] = 250  # a byte seen only in the test split
    path = tmp_path / "bytes.bin"
    path.write_bytes(corpus.numpy().tobytes())
    dm = CharTextDataModule([str(path)], batch_size=4, seq_len=25, unit="byte")
    assert dm.vocab_size == 1 + 205  # the unknown slot, then every byte value of training
    train = dm.split("train")
    assert len(train) == 36_000 and isinstance(dm._bytes, np.memmap)
    assert train.data_ptr() == dm._bytes.ctypes.data  # the file's pages, not a copy
    x, y = next(iter(dm.train_dataloader()))
    expected = dm._table[corpus[: 4 * 8999].long()].view(4, 8999)[:, :25]  # (36000 - 1) // 4
    torch.testing.assert_close(x, expected)  # ids of the bytes, stream by stream
    assert dm.vocab.decode(x[0, :5]) == "".join(chr(b) for b in corpus[:5].tolist())
    last_test = list(dm.test_dataloader())[-1][1]
    assert (last_test == 0).all()  # the test-only byte is unknown


def test_byte_unit_counts_utf8_bytes_and_reads_gzip(tmp_path):
    path = tmp_path / "text.txt.gz"
    path.write_bytes(gzip.compress("café crème ".encode() * 400))
    chars = CharTextDataModule([str(path)], batch_size=2, seq_len=10)
    by_bytes = CharTextDataModule([str(path)], batch_size=2, seq_len=10, unit="byte")
    assert len(chars.split("train")) < len(by_bytes.split("train"))  # é and è are 2 bytes
    assert by_bytes.vocab_size == chars.vocab_size + 1  # 0xc3 + 0xa9 + 0xa8 for é, è
    vocab = by_bytes.vocab
    assert vocab.unit == "byte" and len(vocab.encode("é")) == 2 and len(vocab.encode("ç")) == 2
    assert vocab.decode(vocab.encode("café crème")) == "café crème"
    assert vocab.decode(vocab.encode("ça")) == "\ufffd\ufffda"  # ç's two bytes were never seen
    ids = vocab.encode("é crème é").tolist()  # é is 2 bytes: every cut splits some character
    for cut in range(1, len(ids)):
        decode = vocab.stream_decoder()
        pieces = [decode(ids[:cut]), decode(ids[cut:], final=True)]
        assert "".join(pieces) == "é crème é" and "\ufffd" not in pieces[0], cut
    decode = vocab.stream_decoder()
    assert decode(ids[:1]) == "" and decode([], final=True) == "\ufffd"  # a character cut short
    with pytest.raises(DataError, match="data.unit must be 'char' or 'byte'"):
        CharTextDataModule([str(path)], unit="word")


def test_a_byte_model_learns(tmp_path, one_thread):
    import functools

    import pytorch_lightning as pl

    from zoo.cores import LSTM
    from zoo.predict.char_lm import CharLM
    from zoo.tasks.char_lm import CharLanguageModel

    path = tmp_path / "abc.bin"
    path.write_bytes(bytes(range(7)) * 3000)  # a cycle: every byte says what comes next
    dm = CharTextDataModule([str(path)], batch_size=8, seq_len=20, unit="byte")
    task = CharLanguageModel(
        dm.vocab_size, core=functools.partial(LSTM, hidden_size=32), embedding_dim=8,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
    )  # fmt: skip
    trainer = pl.Trainer(
        max_steps=60, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    (result,) = trainer.test(task, datamodule=dm, verbose=False)
    assert result["test/bpc"] < 0.2  # log2(7) = 2.8 bits when nothing is learnt
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    lm = CharLM.build(task.model.config(), task.model.state_dict(), checkpoint)
    assert lm.vocab == dm.vocab and lm.vocab.unit == "byte"
    assert lm.evaluate(bytes(range(7)).decode() * 60, seq_len=20)["bpc"] < 0.3
