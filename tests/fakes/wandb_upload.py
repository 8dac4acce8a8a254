"""Write path of the fake W&B server: what ``wandb.init(mode="online")`` sends.

wandb-core (the SDK's Go side) talks to three endpoints while a run is live:

- GraphQL mutations (``UpsertBucket``, ``CreateRunFiles``, the artifact mutations) —
  answered by :class:`Mutations`;
- ``POST /files/{entity}/{project}/{run}/file_stream`` — JSON (optionally gzipped)
  ``{"files": {name: {"offset": n, "content": [line, ...]}}, "complete", "exitcode",
  "uploaded", "preempting"}`` — applied by :meth:`Uploads.file_stream`;
- ``PUT`` on the upload URLs this server hands out (run files, artifact manifests,
  artifact contents) — stored by :meth:`Uploads.put`.

Everything lands in the same :class:`~tests.fakes.wandb_store.FakeRun` /
:class:`~tests.fakes.wandb_store.FakeArtifact` objects the read path serves, so a run
written by the real SDK reads back through the real ``wandb.Api``.

History export policy: streamed rows are the *live* part (served by ``HistoryPage`` /
``liveData``) while the run is running; when ``file_stream`` reports ``complete`` the
parquet export is materialized for every row so far (``export_on_finish``). Rows
appended later by a resumed run are live again until that run completes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.adapters.wandb.history import flatten

from .gql_mini import GqlError, Node
from .wandb_registry import RegistryMutations
from .wandb_store import FakeArtifact, FakeProject, FakeRun, next_id

if TYPE_CHECKING:
    from .wandb_server import FakeWandbServer

HISTORY = "wandb-history.jsonl"
EVENTS = "wandb-events.jsonl"
SUMMARY = "wandb-summary.json"
OUTPUT = "output.log"
_CONSOLE_PREFIX = re.compile(r"^(ERROR )?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)? ")


class UploadError(Exception):
    """A bad upload request; ``code`` is the HTTP status to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class HttpGqlError(GqlError):
    """A GraphQL error W&B answers with an HTTP status other than 200 (``code``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Pending:
    """An artifact version between ``CreateArtifact`` and ``CommitArtifact``."""

    art: FakeArtifact
    run: FakeRun | None
    manifest: dict[str, Any] | None = None


@dataclass
class Uploads:
    """Upload-side state of one fake server (pending artifacts, content blobs)."""

    srv: FakeWandbServer
    #: Materialize the parquet export when a run completes (else rows stay live).
    export_on_finish: bool = True
    blobs: dict[str, bytes] = field(default_factory=dict)  # base64 md5 -> content
    pending: dict[str, _Pending] = field(default_factory=dict)
    manifests: dict[str, str] = field(default_factory=dict)  # manifest id -> artifact id
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- runs
    def find_run(self, entity: str, project: str, name: str) -> FakeRun | None:
        p = self.srv.projects.get((entity, project))
        return p.runs.get(name) if p else None

    def upsert_run(self, inp: dict[str, Any]) -> tuple[FakeRun, bool]:
        """Create or update a run; ``None`` inputs leave fields unchanged (as W&B does).

        ``id`` alone (the run's storage id, what the public API's ``Run.update()`` and
        ``Summary.update()`` send) names an existing run wherever it is: nothing is created.
        """
        srv = self.srv
        with self.lock:
            if inp.get("id") and not inp.get("name") and not inp.get("modelName"):
                found = next(
                    (
                        r
                        for p in srv.projects.values()
                        for r in p.runs.values()
                        if r.id == inp["id"]
                    ),
                    None,
                )
                if found is None:
                    raise GqlError(f"run {inp['id']!r} not found")
                inp = {**inp, "entityName": found.entity, "modelName": found.project}
                inp["name"] = found.name
            entity = inp.get("entityName") or srv.default_entity
            proj = srv.add_project(entity, inp.get("modelName") or "uncategorized")
            name = inp.get("name")
            if name and name in proj.deleted_runs:
                # What W&B answers (HTTP 409) for the id of a deleted run (wandb#1192).
                raise HttpGqlError(
                    409, f"run {name} was previously created and deleted; try a new run name"
                )
            run = proj.runs.get(name) if name else None
            if run is None and inp.get("id"):
                run = next((r for r in proj.runs.values() if r.id == inp["id"]), None)
            inserted = run is None
            if run is not None and run.exported_rows is None:
                # A fixture run (all exported) being resumed: what comes next is live.
                run.exported_rows = len(run.history)
            if run is None:
                now = time.time()
                name = name or secrets.token_hex(4)
                run = srv.add_run(
                    FakeRun(
                        name=name,
                        entity=entity,
                        project=proj.name,
                        state="running",
                        display_name=f"fake-run-{len(proj.runs) + 1}",
                        created_at=now,
                        heartbeat_at=now,
                        exported_rows=0,  # nothing exported yet: streamed rows are live
                    )
                )
            # ``description`` is the old name of the notes; ``Run.update()`` sends both (the
            # one loaded with the run and the edited ``notes``), and its edit is what W&B keeps.
            if inp.get("description") is not None:
                run.notes = inp["description"]
            simple = {
                "displayName": "display_name",
                "notes": "notes",
                "groupName": "group",
                "jobType": "job_type",
                "host": "host",
                "commit": "commit",
                "sweep": "sweep_name",
                "state": "state",
            }
            for key, attr in simple.items():
                if inp.get(key) is not None:
                    setattr(run, attr, inp[key])
            if inp.get("tags") is not None:
                run.tags = list(inp["tags"])
            if inp.get("config") is not None:
                run.config = _unwrap_config(json.loads(inp["config"]))
            if inp.get("summaryMetrics") is not None:
                run.summary = json.loads(inp["summaryMetrics"])
            return run, inserted

    def delete_run(self, storage_id: str, delete_artifacts: bool) -> FakeRun:
        """``DeleteRun``: the run leaves its project's listings (``project.run`` answers
        null); its id stays taken. Its logged artifacts stay unless ``delete_artifacts``."""
        with self.lock:
            for proj in self.srv.projects.values():
                run = next((r for r in proj.runs.values() if r.id == storage_id), None)
                if run is None:
                    continue
                del proj.runs[run.name]
                if delete_artifacts:
                    run.logged_artifacts = []
                proj.deleted_runs[run.name] = run
                return run
            raise GqlError(f"run {storage_id!r} not found")

    # -- file_stream
    def file_stream(
        self, entity: str, project: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply one file_stream request: lines land at their ``offset`` (retries are
        idempotent), the summary line replaces the summary, ``complete`` ends the run."""
        with self.lock:
            run = self.find_run(entity, project, name)
            if run is None:
                raise UploadError(404, f"run {entity}/{project}/{name} not found")
            for fname, chunk in (body.get("files") or {}).items():
                offset = int(chunk.get("offset") or 0)
                lines = [str(x) for x in chunk.get("content") or []]
                if fname == HISTORY:
                    rows = [_history_row(x) for x in lines]
                    self.srv.errors.extend(_step_order_errors(run, offset, rows))
                    _put(run.history, offset, rows)
                elif fname == EVENTS:
                    _put(run.events, offset, [json.loads(x) for x in lines])
                    if run.events:
                        run.system_metrics = dict(run.events[-1])
                elif fname == SUMMARY:
                    if lines:
                        run.summary = json.loads(lines[-1])
                elif fname == OUTPUT:
                    # Lines come as "[ERROR ]<timestamp> <text>"; the file has the text only.
                    # Rebuilt from every streamed line, so a resumed run's log holds both
                    # sessions (the SDK's own PUT of output.log holds only its session).
                    _put(run.output_lines, offset, lines)
                    text = "".join(_CONSOLE_PREFIX.sub("", x) + "\n" for x in run.output_lines)
                    run.files[OUTPUT] = text.encode()
                else:
                    raise UploadError(400, f"file_stream: unknown file {fname!r}")
            run.heartbeat_at = time.time()
            if body.get("complete"):
                code = int(body.get("exitcode") or 0)
                run.exit_code = code
                run.state = "finished" if code == 0 else "failed"
                if self.export_on_finish:
                    run.exported_rows = len(run.history)
            elif body.get("preempting"):
                run.state = "preempting"
            elif run.state != "running":
                run.state = "running"  # a resumed process is streaming again
        return {"exitcode": None, "limits": {}}

    # -- PUT targets
    def run_file_url(self, run: FakeRun, name: str) -> str:
        q = urllib.parse.quote
        return f"{self.srv.url}/upload/run/{q(run.entity)}/{q(run.project)}/{q(run.name)}/{q(name)}"

    def put(self, path: str, data: bytes) -> None:
        """Store an upload; the path is one of the URLs handed out by the mutations."""
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        with self.lock:
            if parts[:2] == ["upload", "run"] and len(parts) >= 6:
                run = self.find_run(parts[2], parts[3], parts[4])
                if run is None:
                    raise UploadError(404, "no such run")
                run.files["/".join(parts[5:])] = data
                return
            if parts[:2] == ["upload", "manifest"] and len(parts) == 3:
                pend = self.pending.get(parts[2])
                if pend is None:
                    raise UploadError(404, f"artifact {parts[2]} is not pending")
                pend.manifest = json.loads(data)
                return
            if parts[:2] == ["upload", "blob"] and len(parts) == 3:
                digest = base64.b64encode(base64.urlsafe_b64decode(parts[2])).decode()
                if base64.b64encode(hashlib.md5(data).digest()).decode() != digest:
                    raise UploadError(400, "content does not match its md5")
                self.blobs[digest] = data
                return
        raise UploadError(404, f"no upload target {path}")

    # -- artifacts
    def versions(self, proj: FakeProject, name: str) -> list[FakeArtifact]:
        committed = [a for a in self.srv.artifacts(proj) if a.name == name]
        pending = [
            p.art
            for p in self.pending.values()
            if p.art.name == name and (p.art.entity, p.art.project) == (proj.entity, proj.name)
        ]
        return sorted(committed + pending, key=lambda a: a.version_index)

    def commit(self, aid: str) -> FakeArtifact:
        with self.lock:
            pend = self.pending.get(aid)
            if pend is None:
                raise GqlError(f"artifact {aid} is not pending")
            art = pend.art
            contents = (pend.manifest or {}).get("contents") or {}
            for path, entry in contents.items():
                if entry.get("ref"):
                    art.references[path] = {
                        k: entry[k] for k in ("ref", "digest", "size") if k in entry
                    }
                    continue
                blob = self.blobs.get(entry.get("digest", ""))
                if blob is None:
                    raise GqlError(f"commitArtifact: content of {path!r} was never uploaded")
                art.files[path] = blob
            art.uploaded_manifest = pend.manifest
            del self.pending[aid]
            if pend.run is not None:
                pend.run.logged_artifacts.append(art)
            # Aliases are unique per collection: "latest" and the requested ones move here.
            self.srv.registry.commit_aliases(art)
            return art


class Mutations(RegistryMutations, Node):
    """GraphQL mutation root: the operations wandb-core sends while a run is live (and the
    link/alias/collection mutations of :class:`~tests.fakes.wandb_registry.RegistryMutations`)."""

    typename = "Mutation"

    def __init__(self, srv: FakeWandbServer) -> None:
        self.srv = srv
        self.up = srv.uploads

    def _run_node(self, run: FakeRun) -> Any:
        from .wandb_server import _Run

        return _Run(run, self.srv)

    def f_upsertBucket(self, a: dict[str, Any]) -> Any:
        run, inserted = self.up.upsert_run(a.get("input") or {})
        return {"bucket": self._run_node(run), "inserted": inserted}

    def f_deleteRun(self, a: dict[str, Any]) -> Any:
        """``Run.delete(delete_artifacts=...)`` of the public API (input ``id`` = storage id)."""
        inp = a.get("input") or {}
        self.up.delete_run(str(inp.get("id") or ""), bool(inp.get("deleteArtifacts")))
        return {"clientMutationId": inp.get("clientMutationId")}

    def _run_of(self, inp: dict[str, Any]) -> FakeRun:
        ent = inp.get("entityName") or self.srv.default_entity
        run = self.up.find_run(ent, inp.get("projectName") or "", inp.get("runName") or "")
        if run is None:
            raise GqlError(f"run {inp.get('runName')!r} not found")
        return run

    def f_createRunFiles(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        run = self._run_of(inp)
        files = [{"name": n, "uploadUrl": self.up.run_file_url(run, n)} for n in inp["files"]]
        return {"runID": run.id, "uploadHeaders": [], "files": files}

    def f_markRunFilesUploaded(self, a: dict[str, Any]) -> Any:
        return {"success": True}

    def f_createArtifact(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        srv, up = self.srv, self.up
        with up.lock:
            ent = inp.get("entityName") or srv.default_entity
            proj = srv.add_project(ent, inp.get("projectName") or "uncategorized")
            names = inp.get("artifactCollectionNames") or [inp.get("artifactCollectionName")]
            name = str(names[0])
            run = proj.runs.get(inp.get("runName") or "")
            versions = up.versions(proj, name)
            digest = inp.get("digest")
            latest = versions[-1] if versions else None
            seq = {"latestArtifact": {"id": latest.id} if latest else None}
            aliases = [
                al["alias"] if isinstance(al, dict) else str(al) for al in inp.get("aliases") or []
            ]
            for old in versions:
                if old.client_digest == digest and old.id not in up.pending:
                    # Same content as a committed version: W&B returns that version, and
                    # the aliases asked for move to it.
                    if run is not None and old not in run.logged_artifacts:
                        run.logged_artifacts.append(old)
                    coll = srv.registry.source_of(old)
                    for alias in aliases:
                        srv.registry.set_alias(coll, old, alias)
                    return {
                        "artifact": {"id": old.id, "state": "COMMITTED", "artifactSequence": seq}
                    }
            art = FakeArtifact(
                name=name,
                type=inp.get("artifactTypeName") or "unspecified",
                version_index=len(versions),
                aliases=list(dict.fromkeys(x for x in aliases if x != "latest")),
                description=inp.get("description"),
                metadata=json.loads(inp["metadata"]) if inp.get("metadata") else {},
                entity=ent,
                project=proj.name,
                sequence_id=versions[0].sequence_id if versions else next_id(),
                created_at=time.time(),
                client_digest=digest,
                producer=run.name if run is not None else None,
            )
            up.pending[art.id] = _Pending(art, run)
        return {"artifact": {"id": art.id, "state": "PENDING", "artifactSequence": seq}}

    def _manifest_payload(self, aid: str, mid: str) -> dict[str, Any]:
        url = f"{self.srv.url}/upload/manifest/{aid}"
        return {
            "artifactManifest": {
                "id": mid,
                "file": {"id": f"manifest-{mid}", "uploadUrl": url, "uploadHeaders": []},
            }
        }

    def f_createArtifactManifest(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        aid = str(inp.get("artifactID"))
        if aid not in self.up.pending:
            raise GqlError(f"artifact {aid} is not pending")
        mid = next_id()
        self.up.manifests[mid] = aid
        return self._manifest_payload(aid, mid)

    def f_updateArtifactManifest(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        mid = str(inp.get("artifactManifestID"))
        aid = self.up.manifests.get(mid)
        if aid is None or aid not in self.up.pending:
            raise GqlError(f"manifest {mid} not found")
        if inp.get("digest"):
            self.up.pending[aid].art.client_digest = inp["digest"]
        return self._manifest_payload(aid, mid)

    def f_createArtifactFiles(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        edges: list[dict[str, Any]] = []
        for f in inp.get("artifactFiles") or []:
            key = base64.urlsafe_b64encode(base64.b64decode(f["md5"])).decode()
            edges.append(
                {
                    "node": {
                        "storagePath": f"wandb_artifacts/{f['artifactID']}/{key}",
                        "uploadUrl": f"{self.srv.url}/upload/blob/{key}",
                        "uploadHeaders": [],
                        "uploadMultipartUrls": None,
                        "artifact": {"id": f["artifactID"]},
                    }
                }
            )
        return {"files": {"edges": edges}}

    def f_commitArtifact(self, a: dict[str, Any]) -> Any:
        art = self.up.commit(str((a.get("input") or {}).get("artifactID")))
        return {"artifact": {"id": art.id, "digest": art.digest()}}

    def f_useArtifact(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        run = self._run_of(inp)
        art = self.srv.artifact_by_id(str(inp.get("artifactID")))
        if art is None:
            raise GqlError(f"artifact {inp.get('artifactID')} not found")
        if art not in run.used_artifacts:
            run.used_artifacts.append(art)
        return {"artifact": {"id": art.id}}


def _unwrap_config(raw: Any) -> dict[str, Any]:
    """``{"lr": {"value": 0.1, "desc": ..}}`` (what the SDK sends) -> ``{"lr": 0.1}``."""
    if not isinstance(raw, dict):
        raise GqlError("config must be a JSON object")
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items()}


def _history_row(line: str) -> dict[str, Any]:
    """One history line -> a stored row (nested dicts flattened to ``a.b`` keys)."""
    obj = json.loads(line)  # NaN / Infinity tokens are accepted
    flat: list[tuple[str, Any]] = []
    for k, v in obj.items():
        flatten(k, v, flat)
    row = dict(flat)
    if "_step" in row:
        row["_step"] = int(row["_step"])
    return row


def _step_order_errors(run: FakeRun, offset: int, rows: list[dict[str, Any]]) -> list[str]:
    """A run's history is one series in increasing ``_step`` (wandb-core refuses a lower
    step; a resumed run continues at the server's last ``_step`` + 1; exports and
    ``scan_history(min_step, max_step)`` page by it): a streamed row at or below the row
    before it would be shadowed or lost, so the fake reports it (``srv.errors``)."""
    prev = run.history[offset - 1].get("_step") if 0 < offset <= len(run.history) else None
    errors = []
    for row in rows:
        step = row.get("_step")
        if step is not None and prev is not None and step <= prev:
            errors.append(f"run {run.name}: history row with _step {step} after _step {prev}")
        prev = step if step is not None else prev
    return errors


def _put(lines: list[Any], offset: int, items: list[Any]) -> None:
    """Write ``items`` at line ``offset`` (overwriting, so resent chunks don't duplicate)."""
    if offset > len(lines):
        raise UploadError(400, f"offset {offset} beyond end ({len(lines)} lines)")
    lines[offset : offset + len(items)] = items
