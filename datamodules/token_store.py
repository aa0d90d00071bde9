"""Tokenise once, memory-map always: the splits of a parallel corpus as token ids on disk.

One split goes, once, through::

    text files -> Arrow rows (stripped src, tgt) -> [N processes] tokens -> [N processes] ids
               -> <root>/split-<key>/ (Arrow files: src ids, tgt ids, reference line; meta.json)

and every later run, and every rank of a data-parallel run, reads the rows its batches need from
those files (:class:`StoredSplit`, one ``pread`` a row), so a process's memory does not grow with
the corpus beyond each row's length and position. The vocabularies (a Moses shortlist or SentencePiece models) are built from
the training split once too, and kept beside the splits as ``codec-<key>.pt``.

Storage and the parallel map are Hugging Face ``datasets`` (Arrow files written in pieces,
``Dataset.map(num_proc=N)``), picked over ``litdata`` because a corpus here is one table read by
row index, not a stream of samples. Keys hash the files' bytes and every setting that changes the
ids, so changing either builds a new entry and a stale one is never read.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from datamodules.stored_split import StoredSplit, write_index
from datamodules.text_files import iter_pairs
from datamodules.tokenizers import (
    TextCodec,
    _digest,
    _version,
    moses_words,
    train_sentencepiece,
)
from datamodules.vocab import Vocab
from datamodules.word_ids import fitting, moses_ids, word_counts
from zoo.errors import DataError, UserError
from zoo.files import atomic_path, sha256_of

STORE_VERSION = "1"
SP_SAMPLE = 1 << 17  # at most this many pairs train SentencePiece (every k-th pair above it)
MAP_BATCH = 1000  # rows per call of the tokenising functions
MIN_SHARD = 2500  # rows a process must get to repay starting it (~0.5 s: measured, Moses)


@dataclass(frozen=True)
class SplitFiles:
    """Where a split's text is: two aligned files (``src``, ``tgt``) or one TSV (``src``)."""

    src: Path
    tgt: Path | None = None

    @property
    def origin(self) -> str:
        return f"{self.src} | {self.tgt}" if self.tgt else str(self.src)

    def digest(self) -> str:
        files = (self.src, self.tgt) if self.tgt else (self.src,)
        return _digest("tsv" if self.tgt is None else "pair", *(_file_sha(f) for f in files))


_SHAS: dict[tuple[str, int, int], str] = {}


def _file_sha(path: Path) -> str:
    """sha256 of a file, computed once per process for its path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHAS:
        _SHAS[key] = sha256_of(path)
    return _SHAS[key]


# ------------------------------------------------------------------- the map functions
def _write_text(files: SplitFiles, path: Path, rows: int = 1 << 14) -> None:
    """The split's stripped pairs as an Arrow stream file, written ``rows`` pairs at a time."""
    schema = pa.schema([("src", pa.string()), ("tgt", pa.string())])
    pairs = iter_pairs(files.src, files.tgt)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while chunk := list(islice(pairs, rows)):
            src, tgt = zip(*chunk)
            writer.write_batch(pa.record_batch([pa.array(src), pa.array(tgt)], schema=schema))


def _tokens(batch: dict[str, list], tokenizer: str, langs: Sequence[str], lowercase: bool) -> dict:
    """Pairs with text on both sides, as the vocabularies see them: Moses tokens (space-joined)
    or, for SentencePiece, the (lowercased) text; ``ref`` keeps the stripped target line."""
    keep = [i for i, (s, t) in enumerate(zip(batch["src"], batch["tgt"])) if s and t]
    out: dict[str, list] = {"ref": [batch["tgt"][i] for i in keep]}
    for side, lang in zip(("src", "tgt"), langs):
        lines = [batch[side][i] for i in keep]
        lines = [line.lower() for line in lines] if lowercase else lines
        out[side] = moses_words(lines, lang) if tokenizer == "moses" else lines
    return out


def _ids(batch: dict[str, list], codec: TextCodec, max_len: int | None) -> dict:
    """Tokens -> ids, dropping pairs over ``max_len`` tokens on either side (training)."""
    if codec.tokenizer == "moses":
        src = [codec.src_vocab.encode(t.split()) for t in batch["src"]]
        tgt = [codec.tgt_vocab.encode(t.split()) for t in batch["tgt"]]
    else:
        src, tgt = codec.encode(batch["src"], "src"), codec.encode(batch["tgt"], "tgt")
    keep = range(len(src))
    if max_len is not None:
        keep = [i for i in keep if len(src[i]) <= max_len and len(tgt[i]) <= max_len]
    return {
        "src": [src[i] for i in keep],
        "tgt": [tgt[i] for i in keep],
        "ref": [batch["ref"][i] for i in keep],
    }


# ------------------------------------------------------------------------ building one
_SCRATCH: list[Path] = []


def scratch_root() -> Path:
    """A folder of this process, removed at exit: the store when no ``cache_dir`` is set."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="rnn-zoo-tokens-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
    return _SCRATCH[0]


class TokenStore:
    """Prepared splits and vocabularies under ``root`` (see the module docstring).

    Args:
        root: the cache folder (``data.cache_dir``).
        workers: processes that tokenise (``Dataset.map(num_proc=...)``).
        progress: show the ``datasets`` progress bars (``rnn-zoo prepare translation``).
    """

    def __init__(self, root: str | Path, workers: int = 1, progress: bool = False) -> None:
        if workers < 1:
            raise UserError(f"workers must be at least 1, not {workers}")
        self.root, self.workers, self.progress = Path(root), workers, progress
        self._texts: dict[str, Any] = {}  # this process's tokenised text, by key
        self._work: Path | None = None

    # -- the vocabularies
    def codec(self, train: SplitFiles, settings: dict[str, Any]) -> TextCodec:
        """The training split's vocabularies for ``settings`` (the data module's tokenizer,
        vocabulary sizes, languages, lowercase, max_len ...), built once and kept."""
        key = _digest(STORE_VERSION, train.digest(), _settings_key(settings), _versions())
        path = self.root / f"codec-{key}.pt"
        codec_settings = {k: settings[k] for k in _CODEC_FIELDS}
        if path.is_file():
            state = torch.load(path, weights_only=True)
            return TextCodec.from_state({"tokenizer": settings["tokenizer"], **state}, settings)
        rows = self._tokenised(train, settings)
        if settings["tokenizer"] == "sentencepiece":
            models = _sp_models(rows, settings, self.root)
            codec = TextCodec.from_sentencepiece(models, **codec_settings)
        else:
            max_len = settings["max_len"]
            if not sum(len(batch) for batch in fitting(rows, max_len)):
                raise DataError(f"{train.origin}: every pair is longer than max_len={max_len}")
            vocabs = [
                Vocab.from_counts(word_counts(rows, side, max_len),
                                  settings[f"{side}_vocab_size"], settings["min_freq"])
                for side in ("src", "tgt")
            ]  # fmt: skip
            codec = TextCodec("moses", *vocabs, **codec_settings)
        with atomic_path(path) as tmp:
            torch.save(codec.state_dict(), tmp)
        return codec

    # -- a split
    def split(
        self, files: SplitFiles, codec: TextCodec, settings: dict[str, Any], train: bool
    ) -> StoredSplit:
        """The split in ids (training pairs over ``max_len`` dropped), built once and kept."""
        fingerprint = _fingerprint(codec)
        max_len = settings["max_len"] if train else None
        key = _digest(
            STORE_VERSION, files.digest(), fingerprint, str(max_len), _settings_key(settings),
            _versions(),
        )  # fmt: skip
        path = self.root / f"split-{key}"
        if not (path / "meta.json").is_file():
            try:
                self._build(path, files, codec, settings, max_len)
            finally:
                self.close()  # the tokenised text of this process is not needed any more
        return StoredSplit(path)

    def _build(
        self, path: Path, files: SplitFiles, codec: TextCodec, settings: dict, max_len: int | None
    ) -> None:
        rows = self._tokenised(files, settings)
        if codec.tokenizer == "moses":  # words looked up in their shortlist by Arrow, here
            ids = moses_ids(rows, codec, max_len, self._scratch() / f"ids-{path.name}.arrow")
        else:  # SentencePiece encodes in the workers
            ids = rows.map(
                _ids, batched=True, batch_size=MAP_BATCH, num_proc=self._num_proc(len(rows)),
                fn_kwargs={"codec": codec, "max_len": max_len}, features=_features("ids"),
                load_from_cache_file=False, new_fingerprint=f"ids-{path.name}",
                cache_file_name=str(self._scratch() / f"ids-{path.name}.arrow"), desc="ids",
            )  # fmt: skip
        if max_len is not None and not len(ids):
            raise DataError(f"{files.origin}: every pair is longer than max_len={max_len}")
        meta = {
            "origin": files.origin, "pairs": len(ids),
            "skipped_empty": self._texts[files][1], "dropped_long": len(rows) - len(ids),
        }  # fmt: skip
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            ids.save_to_disk(str(tmp), num_shards=1)
            state = json.loads((tmp / "state.json").read_text(encoding="utf-8"))
            meta["file"] = state["_data_files"][0]["filename"]
            write_index(tmp, tmp / meta["file"])
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            os.rename(tmp, path)
        except OSError as err:
            if not (path / "meta.json").is_file():  # else another process got there first
                raise _unwritable(self.root, err) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        """Remove this process's intermediate files (tokenised text)."""
        self._texts.clear()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    # -- helpers
    def _num_proc(self, rows: int) -> int | None:
        workers = min(self.workers, max(1, rows // MIN_SHARD))
        return workers if workers > 1 else None

    def _scratch(self) -> Path:
        if self._work is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                self._work = Path(tempfile.mkdtemp(prefix=".work-", dir=self.root))
            except OSError as err:
                raise _unwritable(self.root, err) from None
            atexit.register(shutil.rmtree, self._work, ignore_errors=True)  # if never closed
        return self._work

    def _tokenised(self, files: SplitFiles, settings: dict[str, Any]) -> Any:
        """The split's pairs with text on both sides, tokenised (kept for this process)."""
        if files not in self._texts:
            import datasets

            (datasets.enable_progress_bars if self.progress else datasets.disable_progress_bars)()
            work = self._scratch()
            path = work / f"text-{uuid.uuid4().hex[:8]}.arrow"
            _write_text(files, path)
            text = datasets.Dataset.from_file(str(path))
            langs = (settings["src_lang"], settings["tgt_lang"])
            num_proc = self._num_proc(len(text))
            if num_proc and settings["tokenizer"] == "moses":
                for lang in langs:  # built once here (~0.4 s): the forked workers inherit them
                    moses_words(["."], lang)
            rows = text.map(
                _tokens, batched=True, batch_size=MAP_BATCH,
                num_proc=num_proc, remove_columns=["src", "tgt"],
                fn_kwargs={"tokenizer": settings["tokenizer"], "langs": langs,
                           "lowercase": settings["lowercase"]},
                features=_features("tokens"), load_from_cache_file=False,
                new_fingerprint=_digest("tokens", files.digest(), _settings_key(settings)),
                cache_file_name=str(work / f"tokens-{uuid.uuid4().hex[:8]}.arrow"),
                desc="tokens",
            )  # fmt: skip
            if not len(rows):
                raise DataError(f"{files.origin}: no sentence pairs with text on both sides")
            self._texts[files] = (rows, len(text) - len(rows))
        return self._texts[files][0]


_CODEC_FIELDS = ("src_lang", "tgt_lang", "lowercase", "max_len", "reverse_source")


def _unwritable(root: Path, err: OSError) -> UserError:
    return UserError(
        f"{root}: cannot write the token store here ({err.strerror or err}); set data.cache_dir "
        "to a folder you can write"
    )


def _versions() -> str:
    """The tokenisers' versions: a new release may split words or pieces differently."""
    return " ".join(f"{p}={_version(p)}" for p in ("sacremoses", "sentencepiece"))


def _settings_key(settings: dict[str, Any]) -> str:
    """The settings that change tokens or vocabularies (source reversal happens per batch)."""
    return json.dumps({k: v for k, v in settings.items() if k != "reverse_source"}, sort_keys=True)


def _sp_models(rows: Any, settings: dict[str, Any], cache: Path) -> dict[str, bytes]:
    """SentencePiece models from the training text (every line, or an even sample of
    ``SP_SAMPLE`` of them on a large corpus)."""
    step = max(1, -(-len(rows) // SP_SAMPLE))
    table = rows.data.table
    src, tgt = (table[side][::step].to_pylist() for side in ("src", "tgt"))
    size, cache = settings["sp_vocab_size"], str(cache)
    if settings["sp_joint"]:
        joint = train_sentencepiece(src + tgt, size, cache)
        return {"src": joint, "tgt": joint}
    return {
        "src": train_sentencepiece(src, size, cache),
        "tgt": train_sentencepiece(tgt, size, cache),
    }


def _fingerprint(codec: TextCodec) -> str:
    """What the ids depend on: the vocabularies' tokens and the SentencePiece models."""
    models = [hashlib.sha256(codec.sp_models[side]).hexdigest() for side in sorted(codec.sp_models)]
    return _digest(
        codec.tokenizer, *codec.src_vocab.to_list(), "", *codec.tgt_vocab.to_list(), *models
    )


def _features(kind: str) -> Any:
    """The Arrow columns of the text, tokens and ids tables."""
    from datasets import Features, List, Value

    text = {"src": Value("string"), "tgt": Value("string")}
    if kind == "text":
        return Features(text)
    if kind == "tokens":
        return Features({**text, "ref": Value("string")})
    return Features({"src": List(Value("int32")), "tgt": List(Value("int32")),
                     "ref": Value("string")})  # fmt: skip
