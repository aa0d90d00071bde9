"""Published weights: safetensors round trips, refusing code, resolution cache / shipped / mirror."""

from __future__ import annotations

import datetime
import functools
import hashlib
import http.server
import json
import pickle
import re
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from datamodules.vocab import CharVocab
from zoo import hub, predict, published
from zoo.checkpoint import read_checkpoint
from zoo.cli.export import main as export_main
from zoo.cli.pretrained import main as pretrained_main
from zoo.cores import GRU, LSTM, LayerNormLSTM
from zoo.errors import CheckpointError, PretrainedError, UserError
from zoo.files import sha256_of
from zoo.models import CharRNN
from zoo.predict import export
from zoo.predict.char_lm import generate_text

NAME = "char_lm-lstm-tiny-v1"
VOCAB = CharVocab(list("\n abcde"))
TOKENS = torch.tensor([[1, 3, 4, 2, 5, 6, 0, 3]])  # (B, T)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    """A private cache, no mirror, online, and no proxy between us and 127.0.0.1."""
    monkeypatch.setenv("RNN_ZOO_HOME", str(tmp_path / "cache"))
    for var in ("RNN_ZOO_MIRROR", "RNN_ZOO_OFFLINE", "RNN_ZOO_MANIFEST", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _tiny_model(core=LSTM, tie_weights: bool = False) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(len(VOCAB), functools.partial(core, hidden_size=8), 8, tie_weights=tie_weights)


def _save_ckpt(path: Path, model: CharRNN, edit: Callable[[dict], object] | None = None) -> Path:
    """A Lightning-style checkpoint (prefixed state_dict, hyper_parameters, vocab), then ``edit``."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["val_loss.total"] = torch.tensor(3.0)  # a metric's state: not the model's
    checkpoint = {
        "epoch": 2,
        "global_step": 10,
        "state_dict": state,
        "hyper_parameters": {"task": "char_lm", "model": model.config()},
        "vocab": list(VOCAB.chars),
    }
    if edit is not None:
        edit(checkpoint)
    torch.save(checkpoint, path)
    return path


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(TOKENS)[0]  # (B, T, V)


def _export(tmp_path: Path, model: CharRNN | None = None, fp16: bool = False) -> Path:
    model = model or _tiny_model()
    tmp_path.mkdir(exist_ok=True)
    name = NAME.replace("lstm", type(model.core).__name__.lower())  # named for its core
    name = name.replace("layernormlstm", "layernorm_lstm")  # "_" may join its words
    out = tmp_path / "out" / f"{name}.safetensors"
    predict.export_checkpoint(_save_ckpt(tmp_path / "run.ckpt", model), out, name, fp16=fp16)
    return out


# --- the file format ------------------------------------------------------------------------


@pytest.mark.parametrize("core", [LSTM, GRU, LayerNormLSTM], ids=lambda c: c.__name__)
def test_round_trip_fp32_gives_identical_logits(tmp_path, core):
    model = _tiny_model(core)
    loaded = predict.load_file(_export(tmp_path, model))
    assert loaded.task == "char_lm" and not loaded.model.training
    assert loaded.vocab == VOCAB
    assert torch.equal(_logits(loaded.model), _logits(model))
    sample = functools.partial(generate_text, prime="ab", length=30, seed=0)
    assert sample(loaded.model, loaded.vocab) == sample(model, VOCAB)


def test_tied_weights_are_stored_once_and_tied_again(tmp_path):
    model = _tiny_model(tie_weights=True)
    path = _export(tmp_path, model)
    loaded = predict.load_file(path).model
    assert loaded.head.weight is loaded.embedding.weight
    assert torch.equal(_logits(loaded), _logits(model))
    assert predict.load_file(path).meta["num_params"] == sum(p.numel() for p in model.parameters())


def test_fp16_storage_is_half_the_size_and_loads_as_fp32(tmp_path):
    model = _tiny_model()
    fp32, fp16 = _export(tmp_path / "a", model), _export(tmp_path / "b", model, fp16=True)
    assert fp16.stat().st_size < 0.8 * fp32.stat().st_size
    loaded = predict.load_file(fp16).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=5e-3, rtol=5e-3)
    assert not torch.equal(_logits(loaded), _logits(model))  # it really was rounded


def test_export_returns_the_manifest_entry_and_leaves_no_temp_file(tmp_path):
    model = _tiny_model()
    out = tmp_path / "out" / f"{NAME}.safetensors"
    entry = predict.export_checkpoint(_save_ckpt(tmp_path / "run.ckpt", model), out, NAME)
    assert entry == {
        "name": NAME,
        "task": "char_lm",
        "file": out.name,
        "size": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "recipe": None,
        "data": None,
        "licence": None,
        "date": datetime.date.today().isoformat(),
        "metrics": {},
    }
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    loaded = predict.load_file(out)
    assert {k: loaded.meta[k] for k in ("name", "size", "sha256")} == {
        k: entry[k] for k in ("name", "size", "sha256")
    }


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(err.value) and "\n" not in str(err.value), str(err.value)


def _rewrite(path: Path, drop=(), add=None, header=None, metadata=...) -> None:
    """Rewrite a published file with changed tensors or metadata."""
    with safe_open(str(path), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    state.update(add or {})
    if header is not None:
        metadata = {published.METADATA_KEY: json.dumps(header)}
    elif metadata is ...:
        metadata = {published.METADATA_KEY: json.dumps(_header(path))}
    save_file(state, str(path), metadata=metadata)


def _header(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()[published.METADATA_KEY])


def _wider_config(path: Path) -> dict:
    header = _header(path)
    header["model"]["core"]["init_args"]["hidden_size"] = 16
    return header


BROKEN = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"\x07" * 300),
    "empty": lambda p: p.write_bytes(b""),
    "no metadata": lambda p: _rewrite(p, metadata=None),
    "metadata not JSON": lambda p: _rewrite(p, metadata={published.METADATA_KEY: "{task"}),
    "metadata without model": lambda p: _rewrite(p, header={"task": "char_lm", "extras": {}}),
    "unknown task": lambda p: _rewrite(p, header={**_header(p), "task": "poetry"}),
    "missing key": lambda p: _rewrite(p, drop=("head.bias",)),
    "unexpected key": lambda p: _rewrite(p, add={"head.scale": torch.ones(3)}),
    "shape mismatch": lambda p: _rewrite(p, header=_wider_config(p)),
    "vocab size mismatch": lambda p: _rewrite(
        p, header={**_header(p), "extras": {"vocab": ["x", "y"]}}
    ),
}


@pytest.mark.parametrize("breakage", BROKEN)
def test_broken_files_fail_with_one_line_naming_the_file(tmp_path, breakage):
    path = _export(tmp_path)
    BROKEN[breakage](path)
    with pytest.raises(CheckpointError) as err:
        predict.load_file(path)
    _one_line_naming(err, path)


def test_config_mismatch_says_what_differs(tmp_path):
    path = _export(tmp_path)
    _rewrite(path, drop=("head.bias",), add={"head.scale": torch.ones(3)})
    with pytest.raises(CheckpointError, match="missing head.bias; unexpected head.scale"):
        predict.load_file(path)
    _rewrite(path, drop=("head.scale",), add={"head.bias": torch.zeros(len(VOCAB))})
    _rewrite(path, header=_wider_config(path))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*\(32, 8\) vs \(64, 8\)"):
        predict.load_file(path)


def _widen(checkpoint: dict) -> None:
    checkpoint["hyper_parameters"]["model"]["core"]["init_args"]["hidden_size"] = 16


@pytest.mark.parametrize(
    "name, edit, error, match",
    [
        ("char_lm-LSTM-tiny-v1", None, hub.PretrainedError, "is not <task>-<core>-<dataset>-v<N>"),
        ("poetry-lstm-tiny-v1", None, hub.PretrainedError, "unknown task 'poetry'"),
        (
            "char_lm-gru-tiny-v1",
            None,
            hub.PretrainedError,
            "'char_lm-gru-tiny-v1': the checkpoint's model is lstm, not gru; name it "
            "char_lm-lstm-tiny-v1",
        ),
        (NAME, lambda c: c.pop("vocab"), CheckpointError, "has no vocab"),
        (NAME, lambda c: c["hyper_parameters"].pop("model"), CheckpointError, "does not match"),
        (NAME, _widen, CheckpointError, r"does not match the weights \(ValueError: shape mismatch"),
        (
            NAME,
            lambda c: c["hyper_parameters"].update(task="translation"),
            CheckpointError,
            "is a translation checkpoint, not char_lm",
        ),
    ],
)
def test_export_refuses_bad_input(tmp_path, name, edit, error, match):
    ckpt = _save_ckpt(tmp_path / "run.ckpt", _tiny_model(), edit)
    with pytest.raises(error, match=match):
        predict.export_checkpoint(ckpt, tmp_path / "out.safetensors", name)
    assert not (tmp_path / "out.safetensors").exists()


class _Exploit:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("container", ["torch.save zip", "bare pickle"])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, container):
    marker = tmp_path / "marker"
    payload = {"state_dict": {}, "hyper_parameters": {"task": "char_lm"}, "x": _Exploit(marker)}
    ckpt = tmp_path / "evil.ckpt"
    if container == "bare pickle":
        ckpt.write_bytes(pickle.dumps(payload))
        pickle.loads(ckpt.read_bytes())  # the payload is live: a full unpickle runs it
    else:
        torch.save(payload, ckpt)
        torch.load(ckpt, weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()
    as_safetensors = shutil.copy(ckpt, tmp_path / f"{NAME}.safetensors")
    with pytest.raises(CheckpointError):
        read_checkpoint(ckpt, "char_lm")
    with pytest.raises(CheckpointError):
        predict.export_checkpoint(ckpt, tmp_path / "out.safetensors", NAME)
    with pytest.raises(CheckpointError) as err:
        predict.load_file(as_safetensors)
    _one_line_naming(err, as_safetensors)
    assert not marker.exists()


# --- manifest and resolution ----------------------------------------------------------------


def _publish(tmp_path: Path, ship: bool = False, **changes) -> tuple[Path, dict, CharRNN]:
    """Export a tiny model to ``tmp_path/mirror`` and write a one-entry manifest for it."""
    model = _tiny_model()
    out = tmp_path / "mirror" / f"{NAME}.safetensors"
    entry = predict.export_checkpoint(_save_ckpt(tmp_path / "run.ckpt", model), out, NAME)
    entry.update(recipe="recipes/char_lm/tiny.yaml", data="seven characters", licence="MIT")
    entry.update(metrics={"val_bpc": 2.5}, **changes)
    manifest = tmp_path / "repo" / "checkpoints" / "manifest.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(yaml.safe_dump({"checkpoints": [entry]}, sort_keys=False))
    if ship:
        shutil.copy(out, manifest.parent)
    return manifest, entry, model


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


class _MirrorServer:
    """``http.server`` on 127.0.0.1 serving ``root``, counting requests; can truncate bodies."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.truncate = False
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                file = root / self.path.lstrip("/")
                if not (mirror.truncate and file.is_file()):
                    return super().do_GET()
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])  # then HTTP/1.0 closes the connection

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/zoo"
        root.mkdir(exist_ok=True)
        (root / "zoo").mkdir(exist_ok=True)
        serve = functools.partial(self.server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    server = _MirrorServer(tmp_path / "www")
    monkeypatch.setenv("RNN_ZOO_MIRROR", server.url)
    yield server
    server.server.shutdown()
    server.server.server_close()


def _serve(tmp_path: Path, entry: dict) -> None:
    shutil.copy(tmp_path / "mirror" / entry["file"], tmp_path / "www" / "zoo")


def test_download_verifies_then_a_second_load_comes_from_the_cache(tmp_path, mirror):
    manifest, entry, model = _publish(tmp_path)
    _serve(tmp_path, entry)
    first = predict.load_pretrained(NAME, manifest=manifest)
    assert mirror.requests == [f"/zoo/{entry['file']}"]
    assert _cache_files(tmp_path) == [entry["file"]]
    assert first.meta == entry and torch.equal(_logits(first.model), _logits(model))
    second = predict.load_pretrained(NAME, manifest=manifest)
    assert len(mirror.requests) == 1
    assert torch.equal(_logits(second.model), _logits(model))


@pytest.mark.parametrize("fault", ["wrong checksum", "truncated", "404"])
def test_a_bad_download_is_rejected_and_leaves_no_file(tmp_path, mirror, fault):
    sha = "0" * 64 if fault == "wrong checksum" else None
    manifest, entry, _ = _publish(tmp_path, **({"sha256": sha} if sha else {}))
    if fault != "404":
        _serve(tmp_path, entry)
    mirror.truncate = fault == "truncated"
    expected = {"wrong checksum": "sha256", "truncated": "bytes, expected", "404": "HTTP 404"}
    with pytest.raises(hub.PretrainedError, match=expected[fault]) as err:
        hub.download(NAME, manifest=manifest, progress=False)
    assert mirror.url in str(err.value) and "\n" not in str(err.value)
    assert len(mirror.requests) == 1
    assert _cache_files(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_down_is_a_clear_error(tmp_path, monkeypatch):
    manifest, _, _ = _publish(tmp_path)
    monkeypatch.setenv("RNN_ZOO_MIRROR", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(hub.PretrainedError, match="download failed.*refused"):
        hub.download(NAME, manifest=manifest, progress=False)
    assert _cache_files(tmp_path) == []


def test_a_corrupt_cached_file_is_fetched_again(tmp_path, mirror):
    manifest, entry, _ = _publish(tmp_path)
    _serve(tmp_path, entry)
    cached = tmp_path / "cache" / entry["file"]
    cached.parent.mkdir()
    cached.write_bytes(b"stale")
    assert hub.download(NAME, manifest=manifest, progress=False) == cached
    assert len(mirror.requests) == 1 and sha256_of(cached) == entry["sha256"]


def test_offline_never_connects(tmp_path, mirror, monkeypatch):
    manifest, entry, _ = _publish(tmp_path)
    _serve(tmp_path, entry)
    monkeypatch.setenv("RNN_ZOO_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("offline mode opened a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(hub.PretrainedError, match="RNN_ZOO_OFFLINE"):
        predict.load_pretrained(NAME, manifest=manifest)
    (tmp_path / "cache").mkdir()
    shutil.copy(tmp_path / "mirror" / entry["file"], tmp_path / "cache")
    assert predict.load_pretrained(NAME, manifest=manifest).meta["name"] == NAME
    assert mirror.requests == []


def test_a_shipped_file_is_used_and_verified(tmp_path, mirror):
    manifest, entry, _ = _publish(tmp_path, ship=True)
    _serve(tmp_path, entry)
    assert hub.download(NAME, manifest=manifest) == manifest.parent / entry["file"]
    shipped = manifest.parent / entry["file"]
    shipped.write_bytes(shipped.read_bytes()[:-1] + b" ")
    with pytest.raises(hub.PretrainedError, match="shipped file does not match"):
        hub.download(NAME, manifest=manifest)
    assert mirror.requests == [] and _cache_files(tmp_path) == []


def test_no_mirror_and_not_local_says_how_to_get_it(tmp_path):
    manifest, _, _ = _publish(tmp_path)
    with pytest.raises(hub.PretrainedError, match="RNN_ZOO_MIRROR"):
        hub.download(NAME, manifest=manifest)


def test_a_file_of_another_task_than_its_entry_is_refused(tmp_path):
    manifest, entry, _ = _publish(tmp_path, ship=True, task="translation")
    with pytest.raises(CheckpointError, match="is a char_lm model, not translation") as err:
        predict.load_pretrained(NAME, manifest=manifest)
    _one_line_naming(err, manifest.parent / entry["file"])


def test_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    manifest, _, _ = _publish(tmp_path)
    monkeypatch.setenv("RNN_ZOO_MANIFEST", str(manifest))  # the environment's manifest
    assert hub.list_pretrained() == [NAME]
    assert hub.pretrained_info(NAME)["sha256"] == sha256_of(
        tmp_path / "mirror" / f"{NAME}.safetensors"
    )
    with pytest.raises(
        hub.PretrainedError, match=f"unknown pretrained model 'nope'; known: {NAME}"
    ):
        predict.load_pretrained("nope")


@pytest.mark.parametrize(
    "text, match",
    [
        ("checkpoints: [", "not valid YAML"),
        ("- name: x", "needs 'checkpoints:'"),
        ("checkpoints: [{file: a}]", "needs 'checkpoints:'"),
        (f"checkpoints: [{{name: {NAME}, file: ../../x, sha256: {'0' * 64}}}]", "bare file name"),
        (f"checkpoints: [{{name: {NAME}, file: x, sha256: abc}}]", "64 lowercase hex"),
    ],
)
def test_a_malformed_manifest_is_a_clear_error(tmp_path, text, match):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    with pytest.raises(hub.PretrainedError, match=match):
        hub.download(NAME, manifest=manifest)


def test_a_manifest_that_is_no_text_file_is_a_clear_error(tmp_path):
    latin1 = tmp_path / "manifest.yaml"
    latin1.write_bytes("checkpoints: [{name: caf\xe9}]".encode("latin-1"))
    with pytest.raises(hub.PretrainedError, match="manifest.yaml: not UTF-8 text; not a manifest"):
        hub.list_pretrained(latin1)
    with pytest.raises(hub.PretrainedError, match=f"{tmp_path}: a folder, not a manifest file"):
        hub.list_pretrained(tmp_path)


# --- command line ---------------------------------------------------------------------------


def test_export_and_pretrained_commands(tmp_path, capsys, monkeypatch):
    ckpt = _save_ckpt(tmp_path / "run.ckpt", _tiny_model())
    assert export_main(["--checkpoint", str(ckpt), "--name", NAME, "--out", str(tmp_path)]) == 0
    (entry,) = yaml.safe_load(capsys.readouterr().out)
    assert entry["sha256"] == sha256_of(tmp_path / f"{NAME}.safetensors")
    entry.update(recipe="recipes/char_lm/tiny.yaml", data="d", licence="MIT", metrics={"bpc": 2})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"checkpoints": [entry]}))
    monkeypatch.setenv("RNN_ZOO_MANIFEST", str(manifest))
    assert pretrained_main(["list"]) == 0 and capsys.readouterr().out == f"{NAME}\n"
    assert pretrained_main(["info", NAME]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == entry
    assert pretrained_main(["download", NAME]) == 0  # shipped next to the manifest
    assert capsys.readouterr().out.strip() == str(tmp_path / f"{NAME}.safetensors")
    with pytest.raises(UserError, match="unknown pretrained model"):
        pretrained_main(["info", "nope"])


def test_export_never_replaces_a_file_unless_forced(tmp_path, capsys):
    """A published file is named by its checksum in the manifest: exporting over it by mistake
    would break every download of it. The second export is refused and the file kept."""
    args = ["--name", NAME, "--out", str(tmp_path)]
    first = _save_ckpt(tmp_path / "a.ckpt", _tiny_model())
    second = _save_ckpt(tmp_path / "b.ckpt", _tiny_model(tie_weights=True))  # other weights
    assert export_main(["--checkpoint", str(first), *args]) == 0
    out = tmp_path / f"{NAME}.safetensors"
    digest = sha256_of(out)
    with pytest.raises(PretrainedError, match=f"{out}: already exists.*bump -v<N>.*--force"):
        export_main(["--checkpoint", str(second), *args])
    assert sha256_of(out) == digest
    assert export_main(["--checkpoint", str(second), *args, "--force"]) == 0
    assert sha256_of(out) != digest
    capsys.readouterr()


# --- the schema of every manifest entry (torchvision's test_extended_models) ----------------

REPO = Path(__file__).resolve().parent.parent
USER_CACHE = hub.cache_dir()  # read before the autouse fixture points the cache at tmp_path
FIELDS = {
    "name": str,
    "task": str,
    "file": str,
    "size": int,
    "sha256": str,
    "num_params": int,
    "recipe": str,
    "data": str,
    "licence": str,
    "date": (str, datetime.date),
    "metrics": dict,
}


def _schema_problems(entry: dict, root: Path) -> list[str]:
    """What is wrong with an entry's fields (``root``: the repository, for the recipe path)."""
    if set(entry) != set(FIELDS):
        return [f"fields {sorted(set(entry) ^ set(FIELDS))} missing or unknown"]
    problems = [
        f"{k} has type {type(entry[k]).__name__}"
        for k, t in FIELDS.items()
        if not isinstance(entry[k], t)
    ]
    if problems:
        return problems
    match = published.NAME_PATTERN.fullmatch(entry["name"])
    checks = {
        "name is <task>-<core>-<dataset>-v<N>": match is not None,
        "name starts with its task": match is not None and match[1] == entry["task"],
        "task has a builder": entry["task"] in predict.PREDICTORS,
        "file is NAME.safetensors": entry["file"] == f"{entry['name']}.safetensors",
        "sha256 is 64 hex digits": re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None,
        "size and num_params are positive": entry["size"] > 0 and entry["num_params"] > 0,
        "recipe exists": (root / entry["recipe"]).is_file(),
        "data and licence are filled in": bool(entry["data"].strip() and entry["licence"].strip()),
        "date is ISO 8601": _is_date(entry["date"]),
        "metrics are name -> number": bool(entry["metrics"])
        and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in entry["metrics"].items()
        ),
    }
    return [check for check, ok in checks.items() if not ok]


def _is_date(value) -> bool:
    try:
        return isinstance(value, datetime.date) or bool(datetime.date.fromisoformat(value))
    except ValueError:
        return False


def _check_entry(entry: dict, manifest: Path, root: Path, cache: Path) -> None:
    """Fields, then the local copy (shipped, else cached): size, sha256, task, parameters."""
    assert _schema_problems(entry, root) == []
    local = [p / entry["file"] for p in (manifest.parent, cache)]
    path = next((p for p in local if p.is_file()), None)
    if path is None:
        pytest.skip(f"{entry['file']} is not shipped or cached; `rnn-zoo pretrained download`")
    assert path.stat().st_size == entry["size"]
    assert sha256_of(path) == entry["sha256"]
    loaded = predict.load_file(path)
    assert loaded.task == entry["task"] and loaded.meta["name"] == entry["name"]
    assert sum(p.numel() for p in loaded.model.parameters()) == entry["num_params"]
    core = entry["name"].split("-")[1].replace("_", "")
    assert core == export.architecture(loaded.model)  # the name says which model it is


def test_the_real_manifest_parses_with_unique_names():
    names = [entry["name"] for entry in hub.read_manifest(hub.DEFAULT_MANIFEST)["checkpoints"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "entry",
    hub.read_manifest(hub.DEFAULT_MANIFEST)["checkpoints"],
    ids=lambda entry: entry["name"],
)
def test_manifest_entry(entry):
    _check_entry(entry, hub.DEFAULT_MANIFEST, REPO, USER_CACHE)


def test_manifest_schema_on_a_published_entry(tmp_path):
    manifest, entry, _ = _publish(tmp_path, ship=True)
    recipe = tmp_path / "repo" / entry["recipe"]
    recipe.parent.mkdir(parents=True)
    recipe.write_text("# tiny\n")
    (written,) = hub.read_manifest(manifest)["checkpoints"]
    _check_entry(written, manifest, tmp_path / "repo", hub.cache_dir())
    bad = {**written, "name": "char_lm-lstm-tiny", "metrics": {}, "date": "soon"}
    assert _schema_problems(bad, tmp_path / "repo") == [
        "name is <task>-<core>-<dataset>-v<N>",
        "name starts with its task",
        "file is NAME.safetensors",
        "date is ISO 8601",
        "metrics are name -> number",
    ]
    ckpt = _save_ckpt(tmp_path / "r.ckpt", _tiny_model())
    unfilled = predict.export_checkpoint(ckpt, tmp_path / "u.safetensors", NAME)  # placeholders
    assert _schema_problems(unfilled, tmp_path / "repo") == [
        "recipe has type NoneType",
        "data has type NoneType",
        "licence has type NoneType",
    ]
