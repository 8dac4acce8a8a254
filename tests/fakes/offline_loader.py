"""Turn an SDK-made offline run folder into what the W&B backend would hold after sync.

Metadata comes from the project's own ``WandbOfflineReader`` (config, summary, tags,
files, artifacts); history rows and system-metric rows are re-read from the transaction
log, as ``wandb sync`` would upload them. Nested history dicts are stored flattened to
``a.b`` keys (the backend's history keys); media dicts stay whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.history import flatten as _flatten
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.offline_records import history_value as _history_value
from bridge.adapters.wandb.offline_records import json_value as _json
from bridge.adapters.wandb.offline_records import path_of as _path
from bridge.adapters.wandb.offline_records import set_path as _set_path
from bridge.adapters.wandb.txlog import TxlogReader

from .wandb_store import FakeArtifact, FakeRun

_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running"}


def _rows(log: str, start_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    history: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for _, rec in TxlogReader(log).records():
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            nested: dict[str, Any] = {}
            for item in rec.history.item:
                _set_path(nested, _path(item), _history_value(item))
            flat: list[tuple[str, Any]] = []
            for k, v in nested.items():
                _flatten(k, v, flat)
            row = dict(flat)
            if "_step" not in row:
                row["_step"] = int(rec.history.step.num)
            history.append(row)
        elif kind == "stats":
            ts = rec.stats.timestamp.seconds + rec.stats.timestamp.nanos / 1e9
            row = {"_timestamp": ts, "_runtime": max(ts - start_s, 0.0), "_wandb": True}
            for s in rec.stats.item:
                row[f"system.{s.key}"] = _json(s.value_json)
            events.append(row)
    return history, events


def _metadata_json(run: Any) -> bytes:
    """The ``wandb-metadata.json`` wandb-core uploads when it syncs a run: built from the
    run record (host, git) and the environment record (os, python, program ...)."""
    tags = run.extra_tags
    meta = {
        "os": tags.get("wandb.os"),
        "python": tags.get("wandb.python"),
        "host": run.host,
        "program": tags.get("wandb.program"),
        "codePath": tags.get("wandb.code_path"),
        "executable": tags.get("wandb.executable"),
        "git": {"remote": run.git_remote, "commit": run.git_commit},
    }
    meta["git"] = {k: v for k, v in meta["git"].items() if v} or None
    return json.dumps({k: v for k, v in meta.items() if v}, indent=2).encode()


def fake_run_from_offline(folder: Path, **overrides: Any) -> FakeRun:
    """A :class:`FakeRun` from one offline run folder (overrides set FakeRun fields)."""
    reader = WandbOfflineReader(str(folder), ReaderOptions())
    headers = list(reader.list_runs())
    if len(headers) != 1:
        raise ValueError(f"{folder}: expected one run, found {len(headers)}")
    run = reader.read_run(headers[0])
    start_s = (run.start_time_ms or 0) / 1000
    end_s = (run.end_time_ms or run.start_time_ms or 0) / 1000
    history: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for part in run.header.locator.get("parts", []):
        h, e = _rows(part["log"], start_s)
        history.extend(h)
        events.extend(e)
    files: dict[str, bytes] = {}
    for ref in run.files:
        with reader.open_file(ref) as fh:
            files[ref.path.removeprefix("files/")] = fh.read()
    files.setdefault("wandb-metadata.json", _metadata_json(run))
    logged: list[FakeArtifact] = []
    used: list[FakeArtifact] = []
    versions: dict[str, int] = {}
    for art in run.artifacts:
        content: dict[str, bytes] = {}
        refs: dict[str, dict[str, Any]] = {}
        for entry in art.manifest:
            if entry.ref:
                refs[entry.path] = {"ref": entry.ref, "digest": entry.digest, "size": entry.size}
            elif entry.local_path and Path(entry.local_path).is_file():
                content[entry.path] = Path(entry.local_path).read_bytes()
        idx = versions.get(art.name, 0)
        versions[art.name] = idx + 1
        fake = FakeArtifact(
            name=art.name,
            type=art.type,
            version_index=idx,
            aliases=[a for a in art.aliases if a != f"v{idx}"] or ["latest"],
            description=art.description,
            metadata=dict(art.metadata),
            files=content,
            references=refs,
            created_at=end_s,
        )
        (logged if art.direction == "logged" else used).append(fake)
    summary = dict(run.summary)
    fields: dict[str, Any] = {
        "name": run.header.native_id,
        "entity": run.header.project.entity or "",
        "project": run.header.project.name,
        "display_name": run.name,
        "state": _STATUS.get(run.status, "finished"),
        "config": dict(run.config),
        "summary": summary,
        "tags": list(run.tags),
        "notes": run.notes,
        "group": run.group,
        "job_type": run.job_type,
        "host": run.host,
        "commit": run.git_commit,
        "username": run.user or "tester",
        "created_at": start_s,
        "heartbeat_at": end_s if math.isfinite(end_s) else start_s,
        "history": history,
        "events": events,
        "files": files,
        "logged_artifacts": logged,
        "used_artifacts": used,
    }
    fields.update(overrides)
    return FakeRun(**fields)
