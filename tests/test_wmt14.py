"""WMT'14 download: tiny look-alike archives (the real member names) served over real HTTP on
127.0.0.1 give the exact layout; bad downloads fail in one line and leave nothing behind. The test
sets go through sacreBLEU's own downloader and cache, pointed at the same server."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import logging
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from datamodules.parallel_text import ParallelTextDataModule
from datamodules.prepare import wmt14
from zoo.errors import DataError, UserError

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
OUTPUTS = [
    f"{p}.{lang}" for p in ("train", "newstest2013", "newstest2014") for lang in ("en", "fr")
]

# Raw bytes of each training member: a BOM, a CRLF line, a last line without its newline, a
# byte that is not UTF-8: all must come out as clean, aligned UTF-8 lines.
TRAIN = {
    "europarl": (
        "\ufeffResumption of the session\nI declare resumed the session.\r\n".encode(),
        "Reprise de la session\nJe déclare reprise la session.".encode(),
    ),
    "commoncrawl": (b"Hotel near the station\n", b"H\xf4tel pr\xc3\xa8s de la gare\n"),
    "un": (b"The General Assembly,\nRecalling\n", "L'Assemblée générale,\nRappelant\n".encode()),
    "news-commentary": (b"Gold at $10,000?\n", "L'or à 10 000 dollars ?\n".encode()),
    "giga": (
        b"Changing lives\nChanging society\n",
        "Changer des vies\nChanger la société\n".encode(),
    ),
}
TRAIN_EN = [
    "Resumption of the session", "I declare resumed the session.", "Hotel near the station",
    "The General Assembly,", "Recalling", "Gold at $10,000?", "Changing lives", "Changing society",
]  # fmt: skip
TRAIN_FR = [
    "Reprise de la session", "Je déclare reprise la session.", "H\ufffdtel près de la gare",
    "L'Assemblée générale,", "Rappelant", "L'or à 10 000 dollars ?", "Changer des vies",
    "Changer la société",
]  # fmt: skip
# Segments as written in the SGM files, and as sacreBLEU reads them.
TESTS = {
    "newstest2013": (["A  day in the life ", "Second sentence"], ["Une journée", "Deuxième"]),
    "newstest2014": (["AT&amp;T  is here", "Not\tthere"], ["AT&amp;T est là", "Pas là"]),
}
READ = {
    "newstest2013": (["A day in the life", "Second sentence"], ["Une journée", "Deuxième"]),
    "newstest2014": (["AT&amp;T is here", "Not there"], ["AT&amp;T est là", "Pas là"]),
}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in (wmt14.MIRROR_ENV, *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _sgm(segments: list[str], kind: str) -> bytes:
    segs = "".join(f'<seg id="{i}">{text}</seg>\n' for i, text in enumerate(segments, 1))
    return (
        f'<{kind} setid="newstest" srclang="any">\n<doc sysid="ref" docid="1" genre="news" '
        f'origlang="en">\n<p>\n{segs}</p>\n</doc>\n</{kind}>\n'
    ).encode()


# sacreBLEU's test sets: our prefix -> (its name, archive path, its en and fr members).
SACREBLEU = {
    "newstest2013": ("wmt13", "wmt13/test.tgz",
                     ("test/newstest2013-src.en.sgm", "test/newstest2013-src.fr.sgm")),
    "newstest2014": ("wmt14/full", "wmt14/test-full.tgz",
                     ("test-full/newstest2014-fren-src.en.sgm", "test-full/newstest2014-fren-ref.fr.sgm")),
}  # fmt: skip


def _members(name: str, source: wmt14.Source) -> dict[str, bytes]:
    en, fr = source.members
    en_bytes, fr_bytes = TRAIN[name]
    if name == "giga":  # gzipped sides in a plain tar
        return {en: gzip.compress(en_bytes), fr: gzip.compress(fr_bytes)}
    decoy = en.replace("fr-en", "de-en")
    return {decoy: b"Wiederaufnahme\n", en: en_bytes, fr: fr_bytes}


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _publish(root: Path, patch, edit: dict | None = None) -> dict[str, wmt14.Source]:
    """Tiny archives under ``root`` at the real paths, and a table pinning their sha256; the
    test-set archives too, with sacreBLEU's table pinning their md5 and its cache in a temporary
    folder."""
    from sacrebleu.dataset import DATASETS
    from sacrebleu.dataset.fake_sgml import FakeSGMLDataset

    table = {}
    for name, source in wmt14.SOURCES.items():
        members = _members(name, source)
        members.update((edit or {}).get(name, {}))
        path = root / source.path
        _write_tar(path, members)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        table[name] = dataclasses.replace(source, sha256=sha, md5=None, size=None)
    for prefix, (name, archive, (en, fr)) in SACREBLEU.items():
        src, ref = TESTS[prefix]
        members = {"test/README": b"decoy\n", en: _sgm(src, "srcset"), fr: _sgm(ref, "refset")}
        members.update((edit or {}).get(prefix, {}))
        _write_tar(root / archive, members)
        md5 = hashlib.md5((root / archive).read_bytes()).hexdigest()
        dataset = FakeSGMLDataset(
            name, data=[f"https://statmt.org/{archive}"], md5=[md5], langpairs={"en-fr": [en, fr]}
        )
        dataset._outdir = str(root.parent.parent / "sacrebleu" / name)
        dataset._rawdir = f"{dataset._outdir}/raw"
        patch.setitem(DATASETS, name, dataset)
    return table


TEST_ARCHIVES = [archive for _, archive, _ in SACREBLEU.values()]


class _Server:
    """``http.server`` on 127.0.0.1 (random port, daemon threads), counting requests; can
    truncate bodies (sending the full Content-Length)."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.truncate = False
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold a thread for long

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path.removeprefix("/statmt/"))
                file = root / self.path.lstrip("/")
                if not (server.truncate and file.is_file()):
                    return super().do_GET()
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/statmt"
        serve = functools.partial(self.httpd.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()


@pytest.fixture
def server(tmp_path):
    (tmp_path / "www" / "statmt").mkdir(parents=True)
    srv = _Server(tmp_path / "www")
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data, path
    return data.decode("utf-8").split("\n")[:-1]


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".tmp", ".partial")))


def test_download_writes_the_layout_and_a_rerun_fetches_nothing(tmp_path, server, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    monkeypatch.setenv(wmt14.MIRROR_ENV, server.url)  # the mirror from the environment
    data = tmp_path / "data"
    counts = wmt14.download_wmt14(data, sources=table, progress=False)
    assert counts == {
        "europarl": 2, "commoncrawl": 1, "un": 2, "news-commentary": 1, "giga": 2,
        "train": 8, "newstest2013": 2, "newstest2014": 2,
    }  # fmt: skip
    training = [s.path for s in wmt14.SOURCES.values()]
    assert sorted(server.requests) == sorted(training + TEST_ARCHIVES)
    assert (_lines(data / "train.en"), _lines(data / "train.fr")) == (TRAIN_EN, TRAIN_FR)
    for prefix, (en, fr) in READ.items():
        assert (_lines(data / f"{prefix}.en"), _lines(data / f"{prefix}.fr")) == (en, fr)
    assert sorted(p.name for p in data.iterdir()) == sorted([*OUTPUTS, "downloads", "wmt14.json"])
    assert len(list((data / "downloads").iterdir())) == len(table)
    assert _leftovers(tmp_path) == []

    assert wmt14.download_wmt14(data, sources=table, progress=False) == counts
    assert len(server.requests) == len(table) + 2  # finished: no request at all
    (data / "train.en").unlink()
    assert wmt14.download_wmt14(data, sources=table, progress=False) == counts
    assert len(server.requests) == len(table) + 2  # rebuilt from the archives and sacreBLEU's cache
    assert _lines(data / "train.en") == TRAIN_EN


def test_offline_reads_what_is_there_and_requests_nothing_else(tmp_path, server, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    data = tmp_path / "data"
    counts = wmt14.download_wmt14(data, server.url, sources=table, progress=False)
    monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")
    seen = len(server.requests)
    (data / "train.en").unlink()
    assert wmt14.download_wmt14(data, server.url, sources=table, progress=False) == counts
    with pytest.raises(DataError, match="europarl.*not downloaded, RNN_ZOO_OFFLINE is set; unset"):
        wmt14.download_wmt14(tmp_path / "other", server.url, sources=table, progress=False)
    shutil.rmtree(tmp_path / "sacrebleu")  # no cached test sets either
    with pytest.raises(DataError, match="RNN_ZOO_OFFLINE is set and sacreBLEU has no copy in"):
        wmt14.sacrebleu_test_set("wmt14/full", "en-fr", server.url)
    assert len(server.requests) == seen and _leftovers(tmp_path) == []


def test_a_subset_of_corpora_keeps_their_order(tmp_path, server, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    data = tmp_path / "data"
    counts = wmt14.download_wmt14(
        data, server.url, ["giga", "europarl"], sources=table, progress=False
    )
    assert counts["train"] == 4 and "un" not in counts
    assert _lines(data / "train.en") == TRAIN_EN[-2:] + TRAIN_EN[:2]
    assert "wmt13/training-parallel-un.tgz" not in server.requests


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.filterwarnings("ignore:.*no published checksum")
@pytest.mark.parametrize("fault", ["checksum", "404", "truncated", "truncated unpinned", "down"])
def test_a_bad_download_fails_in_one_line_and_leaves_nothing(tmp_path, server, fault, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    first = table["europarl"]  # fetched first: nothing else is on disk when it fails
    if fault == "checksum":
        table["europarl"] = dataclasses.replace(first, sha256="0" * 64)
    elif fault == "404":
        (tmp_path / "www" / "statmt" / first.path).unlink()
    elif fault == "truncated unpinned":  # no checksum: gzip's trailer catches it on extraction
        table["europarl"] = dataclasses.replace(first, sha256=None)
    server.truncate = fault.startswith("truncated")
    url = f"http://127.0.0.1:{_closed_port()}" if fault == "down" else server.url
    expected = {
        "checksum": "download rejected \\(sha256",
        "404": "download failed \\(HTTP 404",
        "truncated": "download rejected \\(sha256",
        "truncated unpinned": "not a complete, readable archive",
        "down": "download failed.*refused",
    }[fault]
    data = tmp_path / "data"
    with pytest.raises(DataError, match=expected) as err:
        wmt14.download_wmt14(data, url, sources=table, progress=False)
    message = str(err.value)
    assert f"{url}/{first.path}" in message and "\n" not in message, message
    assert not data.exists()  # not even the empty folders it made
    assert server.requests == ([] if fault == "down" else [first.path])


def test_an_unpinned_archive_warns_with_its_sha256(tmp_path, server, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    sha = table["un"].sha256
    table["un"] = dataclasses.replace(table["un"], sha256=None)
    with pytest.warns(UserWarning, match=f"training-parallel-un.tgz: no published checksum.*{sha}"):
        wmt14.download_wmt14(tmp_path / "data", server.url, sources=table, progress=False)


def test_a_stored_archive_that_fails_its_checksum_is_fetched_again(tmp_path, server, monkeypatch):
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    stale = tmp_path / "data" / "downloads" / "training-parallel-nc-v9.tgz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    wmt14.download_wmt14(tmp_path / "data", server.url, sources=table, progress=False)
    assert hashlib.sha256(stale.read_bytes()).hexdigest() == table["news-commentary"].sha256


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"training/europarl-v7.fr-en.fr": b"one\n"}, "fr-en.en has 2 lines but .*fr-en.fr has 1"),
        (
            {"test-full/newstest2014-fren-ref.fr.sgm": b"<refset>\n"},
            "src has 2 lines but .*ref has 0",
        ),
    ],
    ids=["training sides", "test segments"],
)
def test_misaligned_sides_are_refused(tmp_path, server, edit, match, monkeypatch):
    name = "europarl" if "europarl" in next(iter(edit)) else "newstest2014"
    table = _publish(tmp_path / "www" / "statmt", monkeypatch, {name: edit})
    with pytest.raises(DataError, match=match) as err:
        wmt14.download_wmt14(tmp_path / "data", server.url, sources=table, progress=False)
    assert (table[name].path if name in table else "wmt14/full") in str(err.value)
    assert not any((tmp_path / "data" / out).exists() for out in OUTPUTS)
    assert _leftovers(tmp_path) == []


def test_a_missing_member_is_named(tmp_path, server, monkeypatch):
    source = wmt14.SOURCES["commoncrawl"]
    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    _write_tar(tmp_path / "www" / "statmt" / source.path, {source.members[0]: b"only English\n"})
    table["commoncrawl"] = dataclasses.replace(table["commoncrawl"], sha256=None)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="has no member commoncrawl"):
        wmt14.download_wmt14(tmp_path / "data", server.url, sources=table, progress=False)
    assert [p.name for p in (tmp_path / "data" / "downloads").iterdir()] == [
        "training-parallel-europarl-v7.tgz"  # the bad archive was not kept
    ]


def test_the_data_module_downloads_only_when_files_are_missing(tmp_path, server, monkeypatch):
    monkeypatch.setattr(wmt14, "SOURCES", _publish(tmp_path / "www" / "statmt", monkeypatch))
    monkeypatch.setenv(wmt14.MIRROR_ENV, server.url)
    data = tmp_path / "wmt"
    splits = {"val": "newstest2013", "test": "newstest2014"}
    with pytest.raises(DataError, match="no such directory"):  # download defaults to False
        ParallelTextDataModule(data_dir=str(data), **splits).references("test")
    with pytest.raises(UserError, match="en-fr"):
        ParallelTextDataModule(data_dir=str(data), download=True, tgt_lang="de").prepare_data()
    assert server.requests == [] and not data.exists()
    module = ParallelTextDataModule(data_dir=str(data), download=True, **splits)
    assert module.references("test") == READ["newstest2014"][1]  # fetched before reading
    assert len(server.requests) == len(wmt14.SOURCES) + 2
    again = ParallelTextDataModule(data_dir=str(data), download=True, **splits)
    again.prepare_data()
    assert again.references("val") == READ["newstest2013"][1]
    assert len(server.requests) == len(wmt14.SOURCES) + 2


@pytest.mark.parametrize(
    "fault, why", [("checksum", r"MD5 sum of downloaded file was incorrect \(got "), ("404", "404")]
)
def test_a_bad_test_set_download_fails_in_one_line_and_is_not_kept(
    tmp_path, server, fault, why, monkeypatch, caplog
):
    from sacrebleu.dataset import DATASETS

    table = _publish(tmp_path / "www" / "statmt", monkeypatch)
    if fault == "checksum":
        DATASETS["wmt13"].md5 = ["0" * 32]
    else:
        (tmp_path / "www" / "statmt" / "wmt13" / "test.tgz").unlink()
    match = f"wmt13/test.tgz: sacreBLEU could not fetch its test set wmt13 \\(.*{why}"
    with pytest.raises(DataError, match=match) as raised:
        wmt14.download_wmt14(tmp_path / "data", server.url, sources=table, progress=False)
    assert "\n" not in str(raised.value)
    # sacreBLEU's own lines went into that one line, not on to the root logger (and the terminal).
    assert not [record for record in caplog.records if record.name.startswith("sacrebleu")]
    assert logging.getLogger("sacrebleu").propagate and not logging.getLogger("sacrebleu").handlers
    assert not any((tmp_path / "data" / out).exists() for out in OUTPUTS)
    raw = Path(DATASETS["wmt13"]._rawdir)
    assert not list(raw.glob("*.tgz"))  # the next try downloads again
