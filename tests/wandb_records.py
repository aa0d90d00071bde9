"""Reading a W&B offline run (``run-<id>.wandb``) back, for tests: the SDK keeps no reader.

The file is W&B's header (``:W&B``, magic 0xBEE1, version 0) then LevelDB-log records in 32 KiB
blocks: a 7-byte header (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) and data,
each a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FILE_HEADER = 7


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, set[str]] = field(default_factory=dict)  # define_metric: name -> summaries
    history: list[dict[str, Any]] = field(default_factory=list)


def _payloads(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, parts = FILE_HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            break
        parts.append(chunk)
        if kind in (1, 4):  # full, or the last of a split record
            yield b"".join(parts)
            parts = []


def _nested(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def read_offline_run(path: str | Path, timeout: float = 60.0) -> OfflineRun:
    """What the run file of one offline W&B run holds, once its exit record is written: the
    service process may still be writing the last records when ``wandb.finish`` returns (seen
    on a loaded machine: the summary set at the last validation was not yet in the file)."""
    deadline = time.monotonic() + timeout
    while True:
        run, done = _read_run(Path(path))
        if done or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read_run(path: Path) -> tuple[OfflineRun, bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    run, done = OfflineRun(), False
    for payload in _payloads(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group = r.run_id, r.display_name, r.run_group
            run.job_type = r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _nested(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _nested(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _nested(run.summary, item)
        elif kind == "metric":
            flags = record.metric.summary
            names = {f.name for f in flags.DESCRIPTOR.fields if getattr(flags, f.name)}
            run.metrics.setdefault(record.metric.name, set()).update(names)
        elif kind == "history":
            items = record.history.item
            run.history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
            )
        elif kind == "exit":
            done = True
    return run, done


def offline_runs(folder: str | Path) -> list[Path]:
    """Every offline run file under ``folder``, oldest first."""
    return sorted(Path(folder).rglob("run-*.wandb"), key=lambda p: p.parent.name)
