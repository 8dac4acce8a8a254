"""In-memory data of the fake W&B server: entities, projects, runs, files, artifacts.

Kept apart from the HTTP/GraphQL layer so tests can build data directly (``add_run``)
or from SDK-made offline run folders (see ``wandb_server.load_offline_run``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

_ids = itertools.count(1001)
_ids_lock = threading.Lock()


def next_id() -> str:
    """A fresh numeric-string id (real W&B ids like projectId parse as ints)."""
    with _ids_lock:
        return str(next(_ids))


def iso(ts: float) -> str:
    """W&B's GraphQL DateTime format: UTC, no zone suffix, seconds precision."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def parse_iso(text: str) -> float:
    """Parse an ISO date/time (with or without zone; naive means UTC) to epoch seconds."""
    t = text.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass
class FakeArtifact:
    """One artifact version with its files (content held in memory)."""

    name: str  # collection name
    type: str
    version_index: int = 0
    aliases: list[str] = field(default_factory=list)
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    # Entries without content: path -> {"ref": uri, "digest": ..., "size": ...}
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    entity: str = ""
    project: str = ""
    id: str = field(default_factory=next_id)
    sequence_id: str = field(default_factory=next_id)
    created_at: float = 0.0
    # The manifest digest the SDK computed (set for artifacts uploaded through the server).
    client_digest: str | None = None
    # The run (its id) that created this version; None: the first run that logged it.
    producer: str | None = None
    tags: list[str] = field(default_factory=list)  # artifact-version tags
    # The manifest file as the SDK uploaded it (W&B serves that file back verbatim).
    uploaded_manifest: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        if self.uploaded_manifest is not None:
            return self.uploaded_manifest
        contents: dict[str, Any] = {}
        for path, data in sorted(self.files.items()):
            contents[path] = {"digest": b64md5(data), "size": len(data)}
        for path, ref in sorted(self.references.items()):
            contents[path] = dict(ref)
        return {
            "version": 1,
            "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"},
            "contents": contents,
        }

    def digest(self) -> str:
        if self.client_digest:
            return self.client_digest
        h = hashlib.md5()
        for path, entry in sorted(self.manifest()["contents"].items()):
            h.update(f"{path}:{entry.get('digest')}\n".encode())
        return h.hexdigest()

    def size(self) -> int:
        return sum(len(d) for d in self.files.values())


@dataclass
class FakeMembership:
    """An artifact version linked into a portfolio, numbered and aliased there.

    The version number and aliases belong to the link, not to the source version: the
    same source version can be ``v3`` with ``latest`` in its own collection and ``v0``
    with ``prod`` in a registry collection."""

    artifact: FakeArtifact
    version_index: int
    aliases: list[str] = field(default_factory=list)
    created_at: float = 0.0
    id: str = field(default_factory=next_id)


@dataclass
class FakeCollection:
    """An ``ArtifactPortfolio``: a W&B Registry collection (project ``wandb-registry-<name>``
    of the organization's entity) or a legacy Model Registry portfolio (project
    ``model-registry`` of a team entity). It holds links to source versions, no content."""

    name: str
    entity: str
    project: str
    type: str
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    members: list[FakeMembership] = field(default_factory=list)
    created_at: float = 0.0
    id: str = field(default_factory=next_id)

    def next_index(self) -> int:
        """Link numbers are never reused, even after an unlink."""
        return max((m.version_index for m in self.members), default=-1) + 1


@dataclass
class FakeSequenceInfo:
    """Editable metadata of a source collection (``ArtifactSequence``); its versions are
    the FakeArtifacts of that name in the project."""

    description: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class FakeOrg:
    """An organization: its display name, the entity owning its registries, its teams."""

    name: str
    entity: str
    teams: list[str] = field(default_factory=list)
    id: str = field(default_factory=next_id)


@dataclass
class FakeRun:
    """A run as the W&B backend stores it."""

    name: str  # the run id
    entity: str = ""
    project: str = ""
    display_name: str | None = None
    state: str = "finished"
    config: dict[str, Any] = field(default_factory=dict)  # unwrapped values
    summary: dict[str, Any] = field(default_factory=dict)
    system_metrics: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None
    host: str | None = None
    commit: str | None = None
    username: str = "tester"
    sweep_name: str | None = None
    created_at: float = 0.0
    heartbeat_at: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # rows with _step
    events: list[dict[str, Any]] = field(default_factory=list)  # system metric rows
    files: dict[str, bytes] = field(default_factory=dict)
    logged_artifacts: list[FakeArtifact] = field(default_factory=list)
    used_artifacts: list[FakeArtifact] = field(default_factory=list)
    # How many history rows the parquet export covers: None = all, 0 = no export yet.
    exported_rows: int | None = None
    # Console lines streamed through file_stream (``output.log`` is rebuilt from them).
    output_lines: list[str] = field(default_factory=list)
    exit_code: int | None = None
    id: str = field(default_factory=next_id)

    def wrapped_config(self) -> dict[str, Any]:
        return {k: {"value": v, "desc": None} for k, v in self.config.items()}

    def history_keys(self) -> dict[str, Any]:
        keys: dict[str, dict[str, int]] = {}
        for row in self.history:
            for k, v in row.items():
                tname = _type_name(v)
                keys.setdefault(k, {}).setdefault(tname, 0)
                keys[k][tname] += 1
        last = max((int(r["_step"]) for r in self.history), default=-1)
        return {
            "lastStep": last,
            "keys": {
                k: {"typeCounts": [{"type": t, "count": c} for t, c in tc.items()]}
                for k, tc in keys.items()
            },
        }


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return str(v.get("_type") or "map")
    return "unknown"


@dataclass
class FakeProject:
    name: str
    entity: str
    description: str | None = None
    created_at: float = 0.0
    runs: dict[str, FakeRun] = field(default_factory=dict)
    #: Runs removed by ``DeleteRun``: out of every listing, but their ids stay taken (W&B
    #: refuses to create a run with a deleted run's id) and, unless deleted with them,
    #: the artifacts they logged stay.
    deleted_runs: dict[str, FakeRun] = field(default_factory=dict)
    id: str = field(default_factory=next_id)


def dumps(value: Any) -> str:
    """JSON the way W&B's backend writes it: NaN/Infinity tokens kept."""
    return json.dumps(value, allow_nan=True)


def finite_or_token(value: Any) -> Any:
    """For JSON-typed GraphQL fields embedded in the response body, keep it decodable
    by strict parsers (Go's encoding/json): non-finite floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite_or_token(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_token(v) for v in value]
    return value
