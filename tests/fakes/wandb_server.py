"""A loopback W&B-compatible server for tests.

``wandb.Api`` (0.31) sends GraphQL through the Go ``wandb-core`` subprocess, so Python
mocks cannot intercept it; this is a real HTTP server on 127.0.0.1 that the real client
talks to: ``wandb.Api(api_key=srv.api_key, overrides={"base_url": srv.url})``.

Every GraphQL request is first validated like a spec-compliant server does it, against
an SDL of the modelled subset of W&B's schema (:mod:`tests.fakes.gql_schema`,
``wandb_schema.graphql``): a document a real server rejects is rejected here too. Valid
documents are executed against resolver objects (:mod:`tests.fakes.gql_mini`), so
responses have exactly the shape the client asked for. A field in the SDL nobody
implemented answers a GraphQL error naming the operation. History
exports are real parquet files written with pyarrow and served by the same server.

It also takes writes from the real SDK: ``wandb.init(mode="online")`` with
``WANDB_BASE_URL=srv.url`` / ``WANDB_API_KEY=srv.api_key`` (or ``wandb.Settings(base_url=,
api_key=)``) creates, streams, uploads and resumes runs here; see
:mod:`tests.fakes.wandb_upload` for the protocol and the history-export policy.

Artifact collections, links, aliases and the W&B Registry (an organization ``acme-corp``
whose entity ``acme-org`` owns ``wandb-registry-model`` / ``-dataset``; the legacy
``model-registry`` portfolios) are in :mod:`tests.fakes.wandb_registry`;
``FakeWandbServer(registry=False)`` plays a server without the Registry.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.parse
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .gql_mini import GqlError, Node, Unimplemented, execute, operation_name
from .gql_schema import request_errors
from .wandb_registry import (
    ArtifactFields,
    EntityNode,
    ProjectFields,
    RegistryStore,
    RootFields,
    internal_id,
)
from .wandb_store import (
    FakeArtifact,
    FakeProject,
    FakeRun,
    b64md5,
    dumps,
    finite_or_token,
    iso,
    parse_iso,
)
from .wandb_upload import HttpGqlError, Mutations, UploadError, Uploads

__all__ = ["FakeWandbServer", "FakeRun", "FakeArtifact", "FakeProject"]

#: Server features the fake announces besides the Registry ones (``srv.registry.features``)
#: (names from wandb.proto ServerFeature).
FEATURES: list[str] = []


def _connection(
    items: list[Any], after: str | None, first: int | None, key: Callable[[Any], str]
) -> dict[str, Any]:
    """Relay paging: ``edges{node,cursor}`` + ``pageInfo``; cursors are item keys."""
    start = 0
    if after:
        keys = [key(i) for i in items]
        if after not in keys:
            raise GqlError(f"invalid cursor {after!r}")
        start = keys.index(after) + 1
    n = len(items) - start if first is None else max(int(first), 0)
    page = items[start : start + n]
    edges = [{"node": i, "cursor": key(i)} for i in page]
    return {
        "edges": edges,
        "totalCount": len(items),
        "pageInfo": {
            "__typename": "PageInfo",
            "endCursor": edges[-1]["cursor"] if edges else after,
            "hasNextPage": start + len(page) < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
        },
    }


# ---------------------------------------------------------------- run filters / order


def _run_field(run: FakeRun, name: str) -> Any:
    simple: dict[str, Callable[[FakeRun], Any]] = {
        "name": lambda r: r.name,
        "displayName": lambda r: r.display_name,
        "display_name": lambda r: r.display_name,
        "state": lambda r: r.state,
        "tags": lambda r: r.tags,
        "group": lambda r: r.group,
        "jobType": lambda r: r.job_type,
        "createdAt": lambda r: r.created_at,
        "created_at": lambda r: r.created_at,
        "heartbeatAt": lambda r: r.heartbeat_at,
        "heartbeat_at": lambda r: r.heartbeat_at,
        "sweep": lambda r: r.sweep_name,
        "username": lambda r: r.username,
    }
    if name in simple:
        return simple[name](run)
    if name.startswith("config.") and name.endswith(".value"):
        return run.config.get(name[len("config.") : -len(".value")])
    if name.startswith("summary_metrics."):
        return run.summary.get(name[len("summary_metrics.") :])
    raise GqlError(f"fake server: run filter/order on {name!r} not implemented")


def _cmp_value(field_name: str, value: Any) -> Any:
    if field_name in ("createdAt", "created_at", "heartbeatAt", "heartbeat_at") and isinstance(
        value, str
    ):
        return parse_iso(value)
    return value


def _match(run: FakeRun, flt: Any) -> bool:
    if not flt:
        return True
    if not isinstance(flt, dict):
        raise GqlError(f"fake server: bad filter {flt!r}")
    for key, cond in flt.items():
        if key == "$and":
            if not all(_match(run, c) for c in cond):
                return False
            continue
        if key == "$or":
            if not any(_match(run, c) for c in cond):
                return False
            continue
        actual = _run_field(run, key)
        if not _cond(key, actual, cond):
            return False
    return True


def _cond(key: str, actual: Any, cond: Any) -> bool:
    many = isinstance(actual, list)
    if not isinstance(cond, dict):
        return (_cmp_value(key, cond) in actual) if many else actual == _cmp_value(key, cond)
    for op, arg in cond.items():
        if op == "$in":
            vals = [_cmp_value(key, a) for a in arg]
            ok = any(a in vals for a in actual) if many else actual in vals
        elif op == "$nin":
            vals = [_cmp_value(key, a) for a in arg]
            ok = not any(a in vals for a in actual) if many else actual not in vals
        elif op in ("$eq", "$ne"):
            eq = (_cmp_value(key, arg) in actual) if many else actual == _cmp_value(key, arg)
            ok = eq if op == "$eq" else not eq
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            if actual is None:
                return False
            a, b = actual, _cmp_value(key, arg)
            ok = {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
        elif op == "$exists":
            ok = (actual is not None) == bool(arg)
        else:
            raise GqlError(f"fake server: filter operator {op} not implemented")
        if not ok:
            return False
    return True


def _order(runs: list[FakeRun], order: str | None) -> list[FakeRun]:
    order = order or "+created_at"
    desc = order.startswith("-")
    name = order.lstrip("+-")
    return sorted(runs, key=lambda r: (_run_field(r, name), int(r.id)), reverse=desc)


# ---------------------------------------------------------------- resolvers


class _Root(RootFields, Node):
    typename = "Query"

    def __init__(self, srv: FakeWandbServer) -> None:
        self.srv = srv

    def f_viewer(self, a: dict[str, Any]) -> Any:
        return _User(self.srv.default_entity, self.srv)

    def f_serverInfo(self, a: dict[str, Any]) -> Any:
        return {
            "features": [
                {"name": n, "isEnabled": True} for n in FEATURES + self.srv.registry.features
            ],
            "cliVersionInfo": {},
            "latestLocalVersionInfo": None,
        }

    def f_project(self, a: dict[str, Any]) -> Any:
        ent = a.get("entityName") or self.srv.default_entity
        p = self.srv.projects.get((ent, a.get("name") or ""))
        return _Project(p, self.srv) if p else None

    def f_model(self, a: dict[str, Any]) -> Any:
        """``model`` is the old name of ``project`` (RunResumeStatus still uses it)."""
        return self.f_project(a)

    def f_models(self, a: dict[str, Any]) -> Any:
        ent = a.get("entityName") or self.srv.default_entity
        projs = [_Project(p, self.srv) for (e, _), p in self.srv.projects.items() if e == ent]
        projs.sort(key=lambda p: int(p.p.id))
        return _connection(projs, a.get("after"), a.get("first"), lambda p: p.p.id)

    def f_artifact(self, a: dict[str, Any]) -> Any:
        art = self.srv.artifact_by_id(str(a.get("id")))
        return _Artifact(art, self.srv) if art else None


class _User(Node):
    typename = "User"

    def __init__(self, entity: str, srv: FakeWandbServer) -> None:
        self.entity, self.srv = entity, srv

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        data = {
            "id": "1",
            "name": "Tester",
            "username": self.entity,
            "email": "tester@example.com",
            "admin": False,
            "flags": "{}",
            "entity": self.entity,
            "deletedAt": None,
            "apiKeys": {"edges": []},
            "teams": {"edges": [{"node": {"name": e}} for e in self.srv.entities()]},
        }
        if name not in data:
            raise Unimplemented(f"field User.{name}")
        return data[name]


class _Project(ProjectFields, Node):
    typename = "Project"

    def __init__(self, p: FakeProject, srv: FakeWandbServer) -> None:
        self.p, self.srv = p, srv

    def f_id(self, a: dict[str, Any]) -> Any:
        return self.p.id

    def f_internalId(self, a: dict[str, Any]) -> Any:
        return internal_id(self.p.id)

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.p.name

    def f_entityName(self, a: dict[str, Any]) -> Any:
        return self.p.entity

    def f_entity(self, a: dict[str, Any]) -> Any:
        return EntityNode(self.p.entity, self.srv)

    def f_description(self, a: dict[str, Any]) -> Any:
        return self.p.description

    def f_createdAt(self, a: dict[str, Any]) -> Any:
        return iso(self.p.created_at)

    def f_isBenchmark(self, a: dict[str, Any]) -> Any:
        return False

    def f_readOnly(self, a: dict[str, Any]) -> Any:
        return False

    def f_user(self, a: dict[str, Any]) -> Any:
        return _User(self.p.entity, self.srv)

    def _filtered(self, a: dict[str, Any]) -> list[FakeRun]:
        raw = a.get("filters")
        flt = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
        return [r for r in self.p.runs.values() if _match(r, flt)]

    def f_runCount(self, a: dict[str, Any]) -> Any:
        return len(self._filtered(a))

    def f_runs(self, a: dict[str, Any]) -> Any:
        runs = _order(self._filtered(a), a.get("order"))
        nodes = [_Run(r, self.srv) for r in runs]
        return _connection(nodes, a.get("after"), a.get("first"), lambda n: n.r.id)

    def f_run(self, a: dict[str, Any]) -> Any:
        r = self.p.runs.get(a.get("name") or "")
        return _Run(r, self.srv) if r else None

    def f_bucket(self, a: dict[str, Any]) -> Any:
        """``bucket`` is the old name of ``run`` (RunResumeStatus: missingOk -> null)."""
        return self.f_run(a)


class _Run(Node):
    typename = "Run"

    def __init__(self, r: FakeRun, srv: FakeWandbServer) -> None:
        self.r, self.srv = r, srv

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        r = self.r
        # Each field computed only when asked for (historyKeys reads every row).
        plain: dict[str, Callable[[], Any]] = {
            "id": lambda: r.id,
            "projectId": lambda: self.srv.projects[(r.entity, r.project)].id,
            "name": lambda: r.name,
            "displayName": lambda: r.display_name,
            "sweepName": lambda: r.sweep_name,
            "state": lambda: r.state,
            "group": lambda: r.group,
            "jobType": lambda: r.job_type,
            "commit": lambda: r.commit,
            "host": lambda: r.host,
            "readOnly": lambda: False,
            "createdAt": lambda: iso(r.created_at),
            "heartbeatAt": lambda: iso(r.heartbeat_at),
            "updatedAt": lambda: iso(r.heartbeat_at),
            "description": lambda: r.notes,
            "notes": lambda: r.notes,
            "tags": lambda: list(r.tags),
            "historyLineCount": lambda: len(r.history),
            "fileCount": lambda: len(r.files),
            "config": lambda: dumps(r.wrapped_config()),
            "summaryMetrics": lambda: dumps(r.summary),
            "systemMetrics": lambda: dumps(r.system_metrics),
            "historyKeys": lambda: finite_or_token(r.history_keys()),
            "user": lambda: {"id": "1", "name": r.username, "username": r.username},
            # Resume status (RunResumeStatus): line counts are the file_stream offsets;
            # wandb-core starts the resumed history at the last ``_step`` of historyTail
            # (else of summaryMetrics) + 1 when historyLineCount > 0 (``starting_step``).
            "logLineCount": lambda: len(r.output_lines),
            "eventsLineCount": lambda: len(r.events),
            "historyTail": lambda: json.dumps([dumps(row) for row in r.history[-10:]]),
            "eventsTail": lambda: json.dumps([dumps(row) for row in r.events[-10:]]),
        }
        if name == "state":
            return self.srv.run_state(r)
        if name in plain:
            return plain[name]()
        return super().resolve(name, args)

    def f_project(self, a: dict[str, Any]) -> Any:
        return _Project(self.srv.projects[(self.r.entity, self.r.project)], self.srv)

    def f_wandbConfig(self, a: dict[str, Any]) -> Any:
        """Keys of the ``_wandb`` config entry; a run without one still counts as started
        (RunResumeStatus treats a missing ``t`` as "run does not exist yet")."""
        internal = self.r.config.get("_wandb")
        internal = internal if isinstance(internal, dict) else {}
        keys = a.get("keys") or list(internal)
        out = {k: internal[k] for k in keys if k in internal}
        out.setdefault("t", {})
        return dumps(out)

    def f_history(self, a: dict[str, Any]) -> Any:
        lo = a.get("minStep")
        hi = a.get("maxStep")
        n = a.get("samples")
        # The live store holds what the parquet export does not cover yet. Steps increase
        # along a run's history (wandb_upload reports a row that breaks it): a page is found
        # by bisection, as the backend's step index finds it, not by reading every row
        # (which made each scan_history page cost the whole run).
        hist, first = self.r.history, self.srv.exported(self.r)
        i0 = first if lo is None else bisect_left(hist, lo, first, key=_step_of)
        i1 = len(hist) if hi is None else max(i0, bisect_left(hist, hi, i0, key=_step_of))
        rows = hist[i0:i1]
        if n is not None and a.get("minStep") is None and len(rows) > n:
            # Unbounded history(samples) is sampled, like the real backend.
            idx = sorted({round(i * (len(rows) - 1) / max(n - 1, 1)) for i in range(n)})
            rows = [rows[i] for i in idx]
        elif n is not None:
            rows = rows[: int(n)]
        return [dumps(row) for row in rows]

    def f_events(self, a: dict[str, Any]) -> Any:
        n = a.get("samples")
        rows = self.r.events
        if n is not None and len(rows) > n:
            idx = sorted({round(i * (len(rows) - 1) / max(n - 1, 1)) for i in range(n)})
            rows = [rows[i] for i in idx]
        return [dumps(row) for row in rows]

    def f_sampledHistory(self, a: dict[str, Any]) -> Any:
        out = []
        for spec_raw in a.get("specs") or []:
            spec = json.loads(spec_raw)
            keys = spec.get("keys") or []
            rows = [
                {k: row[k] for k in keys if k in row}
                for row in self.r.history
                if all(k in row for k in keys)
            ]
            out.append(finite_or_token(rows[: int(spec.get("samples", 500))]))
        return out

    def f_parquetHistory(self, a: dict[str, Any]) -> Any:
        n = self.srv.exported(self.r)
        urls = [self.srv.parquet_url(self.r, n)] if n > 0 else []
        live_keys = a.get("liveKeys") or []
        live = []
        for row in self.r.history[n:]:
            live.append(finite_or_token(row if not live_keys else _pick(row, live_keys)))
        return {"parquetUrls": urls, "liveData": live}

    def f_files(self, a: dict[str, Any]) -> Any:
        names = a.get("names") or []
        pattern = a.get("pattern")
        items = sorted(self.r.files)
        if names:
            items = [n for n in items if n in names]
        elif pattern:
            rx = "^" + "".join(
                ".*" if c == "%" else "." if c == "_" else _re_escape(c) for c in pattern
            )
            import re

            items = [n for n in items if re.match(rx + "$", n)]
        nodes = [_File(self.r, n, self.srv) for n in items]
        return _connection(nodes, a.get("after"), a.get("first"), lambda f: f.fid)

    def f_outputArtifacts(self, a: dict[str, Any]) -> Any:
        nodes = [_Artifact(x, self.srv) for x in self.r.logged_artifacts]
        return _connection(nodes, a.get("after"), a.get("first"), lambda n: n.a.id)

    def f_inputArtifacts(self, a: dict[str, Any]) -> Any:
        nodes = [_Artifact(x, self.srv) for x in self.r.used_artifacts]
        return _connection(nodes, a.get("after"), a.get("first"), lambda n: n.a.id)


def _re_escape(c: str) -> str:
    import re

    return re.escape(c)


def _step_of(row: dict[str, Any]) -> Any:
    return row["_step"]


def _pick(row: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    base: dict[str, Any] = {k: row[k] for k in ("_step", "_timestamp", "_runtime") if k in row}
    base.update({k: row[k] for k in keys if k in row})
    return base


class _File(Node):
    typename = "File"

    def __init__(self, r: FakeRun, name: str, srv: FakeWandbServer) -> None:
        self.r, self.name, self.srv = r, name, srv
        self.fid = srv.file_id(r, name)

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        data = self.r.files[self.name]
        url = self.srv.file_url(self.r, self.name)
        plain = {
            "id": self.fid,
            "name": self.name,
            "url": url,
            "directUrl": url,
            "sizeBytes": len(data),
            "mimetype": "application/octet-stream",
            "updatedAt": iso(self.r.heartbeat_at),
            "md5": b64md5(data),
        }
        if name not in plain:
            raise Unimplemented(f"field File.{name}")
        return plain[name]


class _Artifact(ArtifactFields, Node):
    typename = "Artifact"

    def __init__(self, art: FakeArtifact, srv: FakeWandbServer) -> None:
        self.a, self.srv = art, srv

    def _project(self) -> dict[str, Any]:
        p = self.srv.projects.get((self.a.entity, self.a.project))
        pid = p.id if p else "1"
        return {
            "__typename": "Project",
            "id": pid,
            "internalId": internal_id(pid),
            "name": self.a.project,
            "entityName": self.a.entity,
            "entity": {"id": "1", "name": self.a.entity},
        }

    def _collection(self) -> dict[str, Any]:
        return {
            "__typename": "ArtifactSequence",
            "id": self.a.sequence_id,
            "name": self.a.name,
            "project": self._project(),
        }

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        a = self.a
        plain = {
            "id": a.id,
            "artifactSequence": self._collection(),
            "versionIndex": a.version_index,
            "artifactType": {"id": "1", "name": a.type},
            "description": a.description,
            "metadata": dumps(a.metadata),
            "ttlDurationSeconds": -2,
            "ttlIsInherited": True,
            "historyStep": None,
            "state": "COMMITTED",
            "size": a.size(),
            "digest": a.digest(),
            "digestAlgorithm": "MANIFEST_MD5",
            "commitHash": a.digest()[:20],
            "fileCount": len(a.files) + len(a.references),
            "createdAt": iso(a.created_at),
            "updatedAt": iso(a.created_at),
            "currentManifest": {
                "id": a.id,
                "file": {"directUrl": self.srv.manifest_url(a), "url": self.srv.manifest_url(a)},
            },
        }
        if name in plain:
            return plain[name]
        return super().resolve(name, args)

    def f_filesByManifestEntries(self, a: dict[str, Any]) -> Any:
        entries = a.get("entries") or []
        wanted = [e.get("name") for e in entries] if entries else sorted(self.a.files)
        nodes = [
            {
                "name": n,
                "directUrl": self.srv.artifact_file_url(self.a, n),
                "id": f"{self.a.id}:{n}",
            }
            for n in wanted
            if n in self.a.files
        ]
        return _connection(nodes, None, None, lambda n: n["id"])


# ---------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _HTTP
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _fault(self, op: str) -> bool:
        fw = self.server.fake
        code = fw.pick_fault(op)
        if code is None:
            return False
        if code == 429:
            self._json(
                429,
                {"errors": [{"message": "rate limit exceeded"}]},
                {"Retry-After": "1", "RateLimit-Reset": "1"},
            )
        else:
            self._json(503, {"errors": [{"message": "service unavailable"}]})
        return True

    def do_GET(self) -> None:  # noqa: N802
        fw = self.server.fake
        path = urllib.parse.urlparse(self.path).path
        fw.count("GET " + path.split("/")[1] if path.count("/") else path)
        if self._fault("GET"):
            return
        blob = fw.blob(path)
        if blob is None:
            self._send(404, b"not found", "text/plain")
        else:
            self._send(200, blob, "application/octet-stream")

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def do_PUT(self) -> None:  # noqa: N802
        """Uploads to the URLs handed out by CreateRunFiles / artifact mutations."""
        fw = self.server.fake
        body = self._body()
        path = urllib.parse.urlparse(self.path).path
        fw.count("PUT " + (path.split("/")[2] if path.count("/") > 1 else path))
        if self._fault("PUT"):
            return
        try:
            fw.uploads.put(path, body)
        except UploadError as exc:
            fw.errors.append(f"PUT {path}: {exc}")
            self._send(exc.code, str(exc).encode(), "text/plain")
            return
        self._send(200, b"", "text/plain")

    def _file_stream(self, path: str, body: bytes) -> None:
        fw = self.server.fake
        fw.count("file_stream")
        if not fw.authorized(self.headers.get("Authorization")):
            fw.count("401")
            self._json(401, {"error": "user is not logged in"})
            return
        if self._fault("file_stream"):
            return
        ent, proj, run = (urllib.parse.unquote(p) for p in path.split("/")[2:5])
        try:
            req = json.loads(body)
            fw.file_streams.append((run, req))
            self._json(200, fw.uploads.file_stream(ent, proj, run, req))
        except UploadError as exc:
            fw.errors.append(f"file_stream {path}: {exc}")
            self._json(exc.code, {"error": str(exc)})
        except (ValueError, TypeError, KeyError) as exc:
            fw.errors.append(f"file_stream {path}: {exc!r}")
            self._json(400, {"error": f"bad file_stream request: {exc}"})

    def do_POST(self) -> None:  # noqa: N802
        fw = self.server.fake
        body = self._body()
        path = urllib.parse.urlparse(self.path).path
        if path.startswith("/files/") and path.endswith("/file_stream") and path.count("/") == 5:
            self._file_stream(path, body)
            return
        if path != "/graphql":
            # wandb-core posts telemetry (/sdk/otel/...); accept and drop it.
            self._send(200, b"{}", "application/json")
            return
        if not fw.authorized(self.headers.get("Authorization")):
            fw.count("401")
            self._json(401, {"errors": [{"message": "user is not logged in"}]})
            return
        try:
            req = json.loads(body)
        except ValueError:
            self._json(400, {"errors": [{"message": "bad json"}]})
            return
        query = req.get("query") or ""
        op = operation_name(query, req.get("operationName"))
        fw.count(op)
        fw.queries.append((op, query, req.get("variables") or {}))
        _log_document(op, query, req.get("variables") or {})
        if self._fault(op):
            return
        self._json(*fw.respond(op, query, req.get("variables") or {}, req.get("operationName")))


def _shape(value: Any) -> Any:
    """A variable value with long strings cut (the log keeps shapes, not payloads)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:3]]
    return value[:80] if isinstance(value, str) else value


def _log_document(op: str, query: str, variables: dict[str, Any]) -> None:
    """Append the request to ``$FAKE_WANDB_DOC_LOG`` (JSON lines) when set: how the SDL
    in ``wandb_schema.graphql`` is checked against what the clients really send."""
    path = os.environ.get("FAKE_WANDB_DOC_LOG")
    if path:
        line = json.dumps({"op": op, "query": query, "variables": _shape(variables)})
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


class _HTTP(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeWandbServer


class FakeWandbServer:
    """W&B-compatible GraphQL + file server on 127.0.0.1, for tests.

    ``fail_rate`` injects 429 (with ``Retry-After: 1``) / 503 answers, deterministic per
    ``seed``, to GraphQL ops, downloads ("GET"), uploads ("PUT") and "file_stream" alike
    (``fault_ops`` narrows it to some of them); ``counts`` holds requests per operation
    name ("GET files" for downloads, "PUT run"/"PUT blob"/"PUT manifest", "file_stream").

    The SDK write path (``wandb.init(mode="online")``) is in :mod:`tests.fakes.wandb_upload`;
    ``uploads.export_on_finish`` picks whether finished runs get a parquet export.
    ``crash_after`` (seconds) makes a "running" run without heartbeats read as "crashed".
    ``registry`` (default on) announces the Registry server features and gives the default
    entity an organization with registries (``srv.registry``, see ``wandb_registry``).
    """

    def __init__(
        self,
        api_key: str = "k" * 40,
        default_entity: str = "acme",
        fail_rate: float = 0.0,
        seed: int = 0,
        registry: bool = True,
    ) -> None:
        self.api_key = api_key
        self.default_entity = default_entity
        self.fail_rate = fail_rate
        self.fault_codes: tuple[int, ...] = (429, 503)
        self._rng = random.Random(seed)
        self.projects: dict[tuple[str, str], FakeProject] = {}
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.queries: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._http: _HTTP | None = None
        self._thread: threading.Thread | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-wandb-"))
        self._parquet: dict[tuple[str, int], Path] = {}
        self.fault_ops: frozenset[str] | None = None
        self.crash_after: float | None = None
        self.uploads = Uploads(self)
        #: Collections, links, aliases and the organization with its registries.
        self.registry = RegistryStore(self, enabled=registry)
        #: Every decoded file_stream request body, as (run id, body).
        self.file_streams: list[tuple[str, dict[str, Any]]] = []
        #: Upload requests the server refused (for test diagnostics).
        self.errors: list[str] = []
        #: Requests refused by validation, as (operation name, errors): a real server
        #: would have refused them too.
        self.rejected: list[tuple[str, list[dict[str, Any]]]] = []

    # -- lifecycle
    def start(self) -> FakeWandbServer:
        self._http = _HTTP(("127.0.0.1", 0), _Handler)
        self._http.fake = self
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeWandbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._http is not None, "server not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def set_faults(
        self,
        rate: float,
        seed: int = 0,
        codes: tuple[int, ...] = (429, 503),
        ops: tuple[str, ...] | None = None,
    ) -> None:
        """Answer ``rate`` of requests with one of ``codes`` (deterministic per seed);
        ``ops`` limits faults to those operation names ("file_stream", "PUT", "GET", ...)."""
        with self._lock:
            self.fail_rate, self.fault_codes = rate, codes
            self.fault_ops = frozenset(ops) if ops is not None else None
            self._rng = random.Random(seed)

    # -- data
    def entities(self) -> list[str]:
        return sorted({e for e, _ in self.projects} | {self.default_entity})

    def add_project(self, entity: str, name: str, description: str | None = None) -> FakeProject:
        key = (entity, name)
        if key not in self.projects:
            self.projects[key] = FakeProject(
                name=name, entity=entity, description=description, created_at=time.time()
            )
        return self.projects[key]

    def add_run(self, run: FakeRun) -> FakeRun:
        """Store a run (entity/project taken from the run); returns it for tweaking."""
        proj = self.add_project(run.entity or self.default_entity, run.project or "demo")
        run.entity, run.project = proj.entity, proj.name
        for art in run.logged_artifacts + run.used_artifacts:
            art.entity = art.entity or proj.entity
            art.project = art.project or proj.name
        proj.runs[run.name] = run
        return run

    def get_run(self, entity: str, project: str, run_id: str) -> FakeRun:
        return self.projects[(entity, project)].runs[run_id]

    def load_offline_run(self, folder: Path, **overrides: Any) -> FakeRun:
        """Load a run made by the real SDK in offline mode (see ``offline_loader``)."""
        from .offline_loader import fake_run_from_offline

        return self.add_run(fake_run_from_offline(Path(folder), **overrides))

    def artifacts(self, proj: FakeProject) -> list[FakeArtifact]:
        """Distinct artifact versions logged or used by the project's runs (also deleted
        runs: W&B keeps their artifacts unless they were deleted with the run)."""
        seen: dict[str, FakeArtifact] = {}
        for r in list(proj.runs.values()) + list(proj.deleted_runs.values()):
            for a in r.logged_artifacts + r.used_artifacts:
                if a.entity == proj.entity and a.project == proj.name:
                    seen.setdefault(a.id, a)
        return list(seen.values())

    def artifact_by_id(self, aid: str) -> FakeArtifact | None:
        for p in self.projects.values():
            for a in self.artifacts(p):
                if a.id == aid:
                    return a
        return None

    def run_state(self, r: FakeRun) -> str:
        """The state W&B shows: a "running" run whose heartbeats stopped is "crashed"."""
        if (
            r.state == "running"
            and self.crash_after is not None
            and time.time() - r.heartbeat_at > self.crash_after
        ):
            return "crashed"
        return r.state

    def exported(self, r: FakeRun) -> int:
        """How many leading history rows the parquet export covers."""
        n = r.exported_rows
        return len(r.history) if n is None else min(n, len(r.history))

    # -- urls and blobs
    def file_id(self, r: FakeRun, name: str) -> str:
        return base64.urlsafe_b64encode(f"{r.id}:{name}".encode()).decode()

    def file_url(self, r: FakeRun, name: str) -> str:
        q = urllib.parse.quote
        return f"{self.url}/files/{q(r.entity)}/{q(r.project)}/{q(r.name)}/{q(name)}"

    def parquet_url(self, r: FakeRun, n_rows: int) -> str:
        key = (r.id, n_rows)
        with self._lock:
            if key not in self._parquet:
                path = self._tmp / f"history-{r.id}-{n_rows}.parquet"
                write_history_parquet(r.history[:n_rows], path)
                self._parquet[key] = path
        return f"{self.url}/parquet/{r.id}/{n_rows}/history.parquet"

    def manifest_url(self, a: FakeArtifact) -> str:
        return f"{self.url}/artifacts/{a.id}/manifest.json"

    def artifact_file_url(self, a: FakeArtifact, name: str) -> str:
        return f"{self.url}/artifacts/{a.id}/files/{urllib.parse.quote(name)}"

    def blob(self, path: str) -> bytes | None:
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if parts[:1] == ["files"] and len(parts) >= 5:
            ent, proj, run = parts[1:4]
            name = "/".join(parts[4:])
            p = self.projects.get((ent, proj))
            r = p.runs.get(run) if p else None
            return r.files.get(name) if r else None
        if parts[:1] == ["parquet"] and len(parts) == 4:
            for (rid, n), fpath in self._parquet.items():
                if rid == parts[1] and str(n) == parts[2]:
                    return fpath.read_bytes()
            return None
        if parts[:1] == ["artifacts"] and len(parts) >= 3:
            art = self.artifact_by_id(parts[1])
            if art is None:
                return None
            if parts[2] == "manifest.json":
                return json.dumps(art.manifest()).encode()
            if parts[2] == "files":
                return art.files.get("/".join(parts[3:]))
        return None

    # -- request handling
    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return key == self.api_key

    def count(self, op: str) -> None:
        with self._lock:
            self.counts[op] += 1

    def pick_fault(self, op: str) -> int | None:
        if self.fail_rate <= 0 or (self.fault_ops is not None and op not in self.fault_ops):
            return None
        with self._lock:
            if self._rng.random() >= self.fail_rate:
                return None
            code = self._rng.choice(self.fault_codes)
            self.faults[f"{op}:{code}"] += 1
            return code

    def respond(
        self,
        op: str,
        query: str,
        variables: dict[str, Any],
        operation_name: str | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, body): 200 with ``data`` or ``errors``, or the status an error
        carries (``HttpGqlError``, e.g. 409 for a deleted run's id). A request a
        spec-compliant server refuses (see ``gql_schema``) is answered 200 with ``errors``
        only, before anything runs."""
        invalid = request_errors(query, variables, operation_name)
        if invalid:
            with self._lock:
                self.rejected.append((op, invalid))
            return 200, {"errors": invalid}
        try:
            return 200, {"data": execute(query, variables, _Root(self), None, Mutations(self))}
        except Unimplemented as exc:
            msg = f"fake server: operation {op} not implemented ({exc})"
        except HttpGqlError as exc:
            return exc.code, {"errors": [{"message": str(exc), "path": []}], "data": None}
        except GqlError as exc:
            msg = f"fake server: operation {op}: {exc}"
        return 200, {"errors": [{"message": msg, "path": []}], "data": None}

    def answer(
        self,
        op: str,
        query: str,
        variables: dict[str, Any],
        operation_name: str | None = None,
    ) -> dict[str, Any]:
        """The response body (whatever its HTTP status)."""
        return self.respond(op, query, variables, operation_name)[1]

    def ops_seen(self) -> list[str]:
        """Distinct GraphQL operation names received, in first-seen order."""
        return list(dict.fromkeys(op for op, _, _ in self.queries))


def _column(values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.bool_())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array(
        [None if v is None else (v if isinstance(v, str) else dumps(v)) for v in values],
        type=pa.string(),
    )


def write_history_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """History rows as W&B's export lays them out: ``_step`` (int64), ``_timestamp``,
    ``_runtime`` (double) and one column per key; absent values are nulls, NaN stays NaN,
    media/objects are JSON strings."""
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    cols: dict[str, pa.Array] = {
        "_step": pa.array([int(r["_step"]) for r in rows], type=pa.int64())
    }
    for k in keys:
        if k == "_step":
            continue
        vals = [r.get(k) for r in rows]
        if k in ("_timestamp", "_runtime"):
            cols[k] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
        else:
            cols[k] = _column(vals)
    pq.write_table(pa.table(cols), path, row_group_size=max(1, min(len(rows), 10_000)))
