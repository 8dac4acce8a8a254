"""``wandb:ENTITY/PROJECT`` — read runs from a W&B server through ``wandb.Api``.

History is read in full, never sampled: the run's parquet export
(``download_history_exports``, streamed with pyarrow ``iter_batches``) plus the tail not
exported yet (``scan_history(min_step=...)``); without an export, ``scan_history`` alone.
The items produced match :class:`~bridge.adapters.wandb.offline_reader.WandbOfflineReader`
on the same run, so a run migrated from its offline folder or from the server ends equal
(runs the bridge wrote included: both undo its layout through ``bridged``).
Every network call is retried with exponential backoff and jitter: ``wandb-core`` retries
some failures itself, but not all, and a listing must not lose a page.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.features import EditableSource, RegistrySource
from bridge.adapters.wandb import answers, edits
from bridge.adapters.wandb.bridged import LOCATOR_KEY as BRIDGE_LAYOUT
from bridge.adapters.wandb.bridged import layout_of, restore_run, source_metric_key, split_row
from bridge.adapters.wandb.edits import EDITABLE
from bridge.adapters.wandb.history import flatten as _flatten
from bridge.adapters.wandb.history import is_number as _is_number
from bridge.adapters.wandb.history import summary_only_points
from bridge.adapters.wandb.ids import artifact_source_id, collection_source_id, run_source_id
from bridge.adapters.wandb.key_scope import open_scoped
from bridge.adapters.wandb.retry import retry
from bridge.adapters.wandb.server import Target, api_key_for
from bridge.errors import BridgeError, RunError
from bridge.paths import check_relpath, path_problem
from bridge.redact import redact
from bridge.schema import (
    ArtifactVersion,
    Editable,
    ExtraValue,
    FileRef,
    HistoryItem,
    ManifestEntry,
    MetricChunk,
    ModelVersion,
    Project,
    RegisteredModel,
    Run,
    RunHeader,
)

log = logging.getLogger(__name__)

CHUNK_POINTS = 1000
PAGE_SIZE = 50
CHECK_TIMEOUT_S = 5.0
API_TIMEOUT_S = 60.0
SYSTEM_SAMPLES = 1_000_000
_T = TypeVar("_T")

# W&B state -> neutral status; "crashed" is a run that stopped heartbeating.
STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "crashed": "FAILED",
    "killed": "KILLED",
    "running": "RUNNING",
    "pending": "RUNNING",
    "preempting": "RUNNING",
    "preempted": "FAILED",
}
# Neutral status (as users pass it in --states) -> W&B states.
STATES_OF = {
    "FINISHED": ["finished"],
    "FAILED": ["failed", "crashed", "preempted"],
    "KILLED": ["killed"],
    "RUNNING": ["running", "pending", "preempting"],
}
REGISTRY_PREFIX = "wandb-registry-"  # W&B Registry: project wandb-registry-<name> of the org
LEGACY_REGISTRY = "model-registry"  # legacy Model Registry: portfolios in ENTITY/model-registry
_VERSION_LABEL = re.compile(r"^v(\d+)$")


def _version_index(label: str | None) -> int | None:
    m = _VERSION_LABEL.match(label or "")
    return int(m.group(1)) if m else None


def _aliases(aliases: list[str]) -> list[str]:
    """Real aliases only: the ``vN`` labels are version numbers, not aliases."""
    return [a for a in aliases if not _VERSION_LABEL.match(a)]


def _tag_map(tags: list[str] | None) -> dict[str, str]:
    """W&B collection / version tags are bare names; neutral tags are key -> value."""
    return {str(t): "" for t in tags or []}


def _parse_time(text: str | None) -> int | None:
    """W&B DateTime ("2024-05-01T10:00:00", UTC when naive) -> epoch ms."""
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


#: check()'s documents. Spec-compliant GraphQL servers reject a document that declares a
#: variable it never uses, so each one uses all it declares.
CHECK_ENTITY = "query BridgeCheck($e: String!) { viewer { username } entity(name: $e) { name } }"
CHECK_PROJECT = (
    "query BridgeCheck($e: String!, $p: String!) { viewer { username } "
    "project(name: $p, entityName: $e) { id name } }"
)
_MESSAGE_CHARS = 300


def _json_object(raw: bytes) -> dict[str, Any]:
    """A response body as a JSON object; {} when it is empty or not one (an HTML proxy
    page, a truncated body)."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_messages(body: dict[str, Any]) -> list[str]:
    """The messages of a GraphQL ``errors`` array (entries without one are skipped)."""
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return [str(e["message"]) for e in errors if isinstance(e, dict) and e.get("message")]


def _one_line(message: str, secret: str) -> str:
    """A server message fit for the one error line: single-spaced, bounded, and never
    holding the API key (a server may echo what it was sent)."""
    text = " ".join(message.replace(secret, "***").split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _check_failure(base: str, code: int, body: dict[str, Any], key: str) -> str | None:
    """The error line for a check answer that carries no usable data: a rejected key
    (401/403) is told apart from a request the server refused (GraphQL ``errors``,
    quoted), which says nothing about the key."""
    if code in (401, 403):
        return (
            f"wandb: {base} rejected the API key (HTTP {code}); set WANDB_API_KEY to a "
            "valid key for this server"
        )
    messages = _error_messages(body)
    if messages:
        status = "" if code == 200 else f" (HTTP {code})"
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f'wandb: {base} rejected the request{status}: "{_one_line(messages[0], key)}"{more}'
    if code != 200:
        return f"wandb: {base} answered HTTP {code}; check WANDB_BASE_URL"
    return None


def _swap(named: tuple[str, str], alias: str) -> tuple[str, str, str]:
    return named[0], alias, named[1]


class _Unreachable(OSError):
    """Connection refused / DNS failure: retrying will not help within check()."""


class WandbApiReader(RegistrySource, EditableSource, Reader):
    """Reads a W&B entity or project through the public API (``wandb.Api``)."""

    scheme = "wandb"

    def __init__(
        self, target: str, options: ReaderOptions | None = None, *, restore_bridge: bool = True
    ) -> None:
        super().__init__(target, options)
        self._t = Target(target)
        #: Read runs the bridge wrote as the runs it was given (see ``bridged``).
        self.restore_bridge = restore_bridge
        self._api: Any = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, self.options.workers))
        self._tmp: Path | None = None
        self._file_urls: dict[str, dict[str, str]] = {}
        self._producers: dict[str, str | None] = {}  # artifact id -> producing run source id
        self._download_locks: dict[str, threading.Lock] = {}
        self._writer: Any = None  # transitional, see _source_writer
        self.attempts = 6
        self.base_delay = 0.5
        self.max_delay = 8.0
        self.api_timeout = API_TIMEOUT_S

    # ---- plumbing --------------------------------------------------------------------

    @property
    def display_uri(self) -> str:
        path = self._t.entity + (f"/{self._t.project}" if self._t.project else "")
        if self._t.explicit_url:
            return f"wandb:{path}?base_url={redact(self._t.explicit_url)}"
        return f"wandb:{path}"

    def _key(self) -> str:
        key = api_key_for(self._t.base_url)
        if not key:
            raise BridgeError(
                f"wandb: no API key for {self._t.base_url}; set WANDB_API_KEY or run "
                f"`wandb login --host {self._t.base_url}`"
            )
        return key

    def _client(self) -> Any:
        with self._lock:
            if self._api is None:
                import wandb

                # The entity override makes registry look-ups resolve ENTITY's organization.
                self._api = wandb.Api(
                    api_key=self._key(),
                    overrides={"base_url": self._t.base_url, "entity": self._t.entity},
                    timeout=int(self.api_timeout),
                )
            return self._api

    def _cache(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="bridge-wandb-"))
            return self._tmp

    def _retry(self, what: str, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` with exponential backoff + jitter on transient failures."""
        return retry(
            fn,
            attempts=self.attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            slot=self._slots,
        )

    def _next_page(self, what: str, pager: Any, seen: set[Any]) -> bool:
        """Load a paginator's next page (with retries). A server that names a next page at
        a cursor it already gave would have us loop forever (found by the GraphQL answer
        fuzz): a cursor seen before, or the first page's, is a ValueError."""
        if getattr(pager, "last_response", None) is not None and pager.more:
            cursor = pager.cursor
            if cursor is None or cursor in seen:
                raise ValueError(f"{what}: the server repeats page cursor {cursor!r}")
            seen.add(cursor)
        # A page whose objects fail to convert has already moved the pager's cursor past
        # itself: each attempt starts from the answer before it, or a retry skips a page.
        before = pager.last_response

        def load() -> bool:
            pager.last_response = before
            return bool(pager._load_page())

        return self._retry(what, load)

    def _graphql(self, query: str, variables: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One raw POST /graphql with a short timeout, for check(): fast, clear failures."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        try:
            with open_scoped(
                self._t.base_url + "/graphql",
                self._t.base_url,
                self._key(),
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=CHECK_TIMEOUT_S,
            ) as resp:
                return resp.status, _json_object(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json_object(exc.read())

    def _check_request(self) -> tuple[str, dict[str, Any]]:
        """The check document for the URI: every variable it declares is used (a spec
        server rejects the document otherwise), and it names the entity or project."""
        if self._t.project:
            return CHECK_PROJECT, {"e": self._t.entity, "p": self._t.project}
        return CHECK_ENTITY, {"e": self._t.entity}

    def check(self) -> None:
        base = self._t.base_url
        key = self._key()
        query, variables = self._check_request()
        try:
            code, body = self._retry("check", lambda: self._check_call(query, variables))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(
                f"wandb: cannot reach {base} ({reason}); check WANDB_BASE_URL or ?base_url="
            ) from None
        problem = _check_failure(base, code, body, key)
        if problem:
            raise BridgeError(problem)
        payload = body.get("data") or {}
        if not payload.get("viewer"):
            raise BridgeError(f"wandb: {base} did not accept the API key; set WANDB_API_KEY")
        if self._t.project and not payload.get("project"):
            raise BridgeError(
                f"wandb: project {self._t.entity}/{self._t.project} not found on {base}; "
                "check the entity and project names"
            )
        if not self._t.project and not payload.get("entity"):
            raise BridgeError(
                f"wandb: entity {self._t.entity} not found on {base}; check the entity name"
            )

    def _check_call(self, query: str, variables: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            code, data = self._graphql(query, variables)
        except urllib.error.URLError as exc:
            raise _Unreachable(str(exc.reason)) from None
        if code == 429 or code >= 500:
            raise urllib.error.HTTPError(self._t.base_url, code, "transient", {}, None)  # type: ignore[arg-type]
        return code, data

    # ---- listing ---------------------------------------------------------------------

    def _projects(self) -> list[str]:
        if self._t.project:
            return [self._t.project]
        api = self._client()
        api._projects.pop(self._t.entity, None)  # wandb.Api caches listings forever
        projects = api.projects(self._t.entity, per_page=PAGE_SIZE)
        names: list[str] = []
        seen: set[Any] = set()
        while self._next_page("projects", projects, seen):
            names.extend(p.name for p in projects.objects)
            projects.objects = []
        return names

    def _filters(self) -> dict[str, Any]:
        o = self.options
        conds: list[dict[str, Any]] = []
        if o.run_ids:
            conds.append({"name": {"$in": list(o.run_ids)}})
        if o.tags:
            conds.append({"tags": {"$in": list(o.tags)}})
        if o.states:
            states: list[str] = []
            for s in o.states:
                states.extend(STATES_OF.get(s.upper(), [s.lower()]))
            conds.append({"state": {"$in": states}})
        if o.since:
            conds.append(
                {"$or": [{"createdAt": {"$gte": o.since}}, {"heartbeatAt": {"$gte": o.since}}]}
            )
        if not conds:
            return {}
        return conds[0] if len(conds) == 1 else {"$and": conds}

    def list_runs(self) -> Iterator[RunHeader]:
        from wandb.apis import public

        api = self._client()
        for name in self._projects():
            project = Project(
                source_id=f"wandb:{self._t.entity}/{name}", name=name, entity=self._t.entity
            )
            path = f"{self._t.entity}/{name}"
            try:
                # Not api.runs(): it caches the listing per Api object, so a second
                # listing (mirror mode) would see nothing new.
                runs = public.Runs(
                    api._service_api,
                    self._t.entity,
                    name,
                    filters=self._filters(),
                    order="+created_at",
                    per_page=PAGE_SIZE,
                    lazy=False,
                )
                seen: set[Any] = set()
                while self._next_page("runs", runs, seen):
                    for r in runs.objects:
                        yield self._header(project, r)
                    runs.objects = []
            except (ValueError, TypeError) as exc:
                raise BridgeError(f"wandb: {path} on {self._t.base_url}: {exc}") from None

    def _header(self, project: Project, r: Any) -> RunHeader:
        a = answers.run_attrs(r._attrs, f"run {r.id!r} in the listing")
        fp = hashlib.sha256(
            json.dumps(
                [
                    a.get("heartbeatAt"),
                    a.get("state"),
                    a.get("historyLineCount"),
                    r.summary_metrics,
                    a.get("tags"),
                    a.get("notes"),
                    r.config,
                    a.get("displayName"),
                    a.get("group"),
                    a.get("jobType"),
                ],
                sort_keys=True,
                default=str,
                allow_nan=True,
            ).encode()
        ).hexdigest()[:32]
        return RunHeader(
            source_id=f"{project.source_id}/{r.id}",
            native_id=r.id,
            project=project,
            name=a.get("displayName"),
            fingerprint=fp,
            locator={
                "path": f"{project.entity}/{project.name}/{r.id}",
                # What --two-way compares, as listed (no extra call per run and cycle).
                EDITABLE: edits.listed(a.get("notes"), a.get("tags")),
            },
        )

    # ---- the run body ----------------------------------------------------------------

    def _api_run(self, path: str) -> Any:
        """A fresh run object (``Api.run`` caches runs forever, hiding later edits)."""
        from wandb.apis import public

        api = self._client()
        entity, project, run_id = path.split("/", 2)
        return self._retry(
            "run",
            lambda: public.Run(api._service_api, entity, project, run_id, lazy=False),
        )

    def read_run(self, header: RunHeader) -> Run:
        path = header.locator.get("path") or header.source_id.removeprefix("wandb:")
        try:
            run = self._read_run(header, path)
        except BridgeError:
            raise
        except Exception as exc:
            raise RunError(
                f"{header.source_id}: cannot read from {self._t.base_url}: {exc}"
            ) from exc
        layout = layout_of(run.config) if self.restore_bridge else None
        if layout is not None:
            restore_run(run, layout)
        return run

    def _read_run(self, header: RunHeader, path: str) -> Run:
        r = self._api_run(path)
        try:
            a = answers.run_attrs(r._attrs, "the run")
        except ValueError as exc:
            raise RunError(f"{header.source_id}: {self._t.base_url} answered: {exc}") from None
        summary = {k: v for k, v in self._retry("summary", lambda: r.summary_metrics).items()}
        summary.pop("_wandb", None)
        config = dict(self._retry("config", lambda: r.config))
        start = _parse_time(a.get("createdAt"))
        end = _parse_time(a.get("heartbeatAt"))
        runtime = summary.get("_runtime")
        if end is None and start is not None and _is_number(runtime):
            end = start + int(float(runtime) * 1000)
        warnings: list[str] = []
        files = self._files(r, path)
        meta = self._metadata(files, warnings)
        git_meta = meta.get("git")
        git: dict[str, Any] = git_meta if isinstance(git_meta, dict) else {}
        extra_tags = {
            tag: str(meta[k])
            for k, tag in (
                ("os", "wandb.os"),
                ("python", "wandb.python"),
                ("program", "wandb.program"),
                ("codePath", "wandb.code_path"),
                ("executable", "wandb.executable"),
            )
            if meta.get(k)
        }
        if a.get("sweepName"):
            extra_tags["wandb.sweep_id"] = str(a["sweepName"])
        state = str(a.get("state") or "")
        user = a.get("user") or {}
        return Run(
            header=header,
            name=a.get("displayName"),
            user=user.get("username") or user.get("name"),
            notes=a.get("notes") or None,
            tags=list(a.get("tags") or []),
            group=a.get("group") or None,
            job_type=a.get("jobType") or None,
            host=meta.get("host") or a.get("host") or None,
            git_remote=git.get("remote") or None,
            git_commit=a.get("commit") or git.get("commit") or None,
            start_time_ms=start,
            end_time_ms=end,
            status=STATUS.get(state, "FAILED"),  # type: ignore[arg-type]
            status_reason=None if state in STATUS else f"unknown W&B state {state!r}",
            exit_code=None,
            config=config,
            summary=summary,
            files=files,
            artifacts=self._artifacts(r, warnings),
            extra_tags=extra_tags,
            warnings=warnings,
        )

    def _files(self, r: Any, path: str) -> list[FileRef]:
        files = r.files(per_page=PAGE_SIZE)
        refs: list[FileRef] = []
        urls: dict[str, str] = {}
        seen: set[Any] = set()
        while self._next_page("files", files, seen):
            for f in files.objects:
                try:
                    fa = answers.file_attrs(f._attrs, "a file of the run")
                except ValueError as exc:
                    raise RunError(f"{path}: {self._t.base_url} answered: {exc}") from None
                url = fa.get("directUrl") or f.url
                urls[f.name] = url
                refs.append(
                    FileRef(
                        path=f"files/{f.name}",
                        size=fa.get("sizeBytes") or 0,
                        md5=fa.get("md5") or None,
                        locator={"url": url, "name": f.name, "md5": fa.get("md5")},
                    )
                )
            files.objects = []
        self._file_urls[path] = urls
        return refs

    def _metadata(self, files: list[FileRef], warnings: list[str]) -> dict[str, Any]:
        ref = next((f for f in files if f.path == "files/wandb-metadata.json"), None)
        if ref is None:
            return {}
        # Unreadable is a failed run, not a warning: host, OS, program and git would be
        # missing from a copy reported done (found by the GraphQL/HTTP answer fuzz).
        try:
            with self.open_file(ref) as fh:
                meta = json.loads(fh.read())
        except Exception as exc:
            raise RunError(f"wandb-metadata.json unreadable: {exc}") from None
        if not isinstance(meta, dict):
            raise RunError(f"wandb-metadata.json is a JSON {type(meta).__name__}, not an object")
        return meta

    def _artifacts(self, r: Any, warnings: list[str]) -> list[ArtifactVersion]:
        out: list[ArtifactVersion] = []
        for direction in ("logged", "used"):
            pager = r.logged_artifacts() if direction == "logged" else r.used_artifacts()
            items: list[Any] = []
            seen: set[Any] = set()
            while self._next_page("artifacts", pager, seen):
                items.extend(pager.objects)
                pager.objects = []
            for art in items:
                out.append(self._artifact(art, direction, warnings))
        return out

    def _artifact_root(self, artifact_id: str) -> Path:
        """Where one version's content is downloaded (eagerly by read_run or lazily)."""
        return self._cache() / "artifacts" / hashlib.sha1(artifact_id.encode()).hexdigest()[:16]

    def _artifact(
        self, art: Any, direction: str, warnings: list[str], *, download: bool | None = None
    ) -> ArtifactVersion:
        """One version as its *source* collection knows it (name, ``vN``, aliases,
        producing run), content-addressed by the source project and the digest.

        Content is downloaded now for versions a run logged (``download`` overrides that);
        the rest is fetched entry by entry by :meth:`open_artifact_entry`."""
        manifest = self._retry("manifest", lambda: art.manifest)
        root: Path | None = None
        fetch = direction == "logged" if download is None else download
        # A manifest naming a path that is absolute or climbs out (``..``) is not fetched
        # whole: its other entries come one by one, the bad one is refused by the engine.
        hostile = any(path_problem(p) is not None for p in manifest.entries)
        if fetch and not hostile and any(not e.ref for e in manifest.entries.values()):
            root = self._artifact_root(str(art.id))
            try:
                self._retry(
                    "artifact download", lambda: art.download(root=str(root), skip_cache=True)
                )
            except Exception as exc:
                warnings.append(f"artifact {art.name}: download failed: {exc}")
                root = None
        entries: list[ManifestEntry] = []
        for p, e in sorted(manifest.entries.items()):
            local = None
            if root is not None and not e.ref and path_problem(p) is None and (root / p).is_file():
                local = str(root / p)
            extra: dict[str, Any] = {}
            if getattr(e, "birth_artifact_id", None):
                extra["birth_artifact_id"] = e.birth_artifact_id
            entries.append(
                ManifestEntry(
                    path=p,
                    digest=e.digest or None,
                    size=e.size,
                    ref=e.ref or None,
                    local_path=local,
                    extra=extra,
                )
            )
        meta = art.metadata
        name = str(art.source_name).split(":")[0]
        version = str(art.source_version)
        digest = art.digest or None
        source_id = None
        if digest and art.source_entity and art.source_project:
            source_id = artifact_source_id(art.source_entity, art.source_project, name, digest)
        return ArtifactVersion(
            name=name,
            type=art.type,
            version=version,
            version_index=_version_index(version),
            digest=digest,
            description=art.description or None,
            aliases=_aliases(list(art.aliases)),
            metadata=meta if isinstance(meta, dict) else {"value": meta},
            manifest=entries,
            direction="logged" if direction == "logged" else "used",
            source_id=source_id,
            producer_source_id=self._producer(art, warnings),
            created_at_ms=_parse_time(art.created_at),
            locator={"id": str(art.id), "path": str(art.source_qualified_name)},
        )

    def _producer(self, art: Any, warnings: list[str]) -> str | None:
        """Source identity of the run that logged the version (``Artifact.logged_by``)."""
        aid = str(art.id)
        with self._lock:
            if aid in self._producers:
                return self._producers[aid]
        try:
            run = self._retry("logged_by", art.logged_by)
        except Exception as exc:
            warnings.append(f"artifact {art.name}: producing run unknown: {exc}")
            return None
        sid = run_source_id(run.entity, run.project, run.id) if run is not None else None
        with self._lock:
            self._producers[aid] = sid
        return sid

    def open_artifact_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        """The entry's content: the copy read_run downloaded, else downloaded now (once,
        into the reader's cache) through the version's source path."""
        if entry.ref:
            raise FileNotFoundError(
                f"artifact {art.name}: {entry.path!r} is a reference to {entry.ref}"
            )
        if entry.local_path and Path(entry.local_path).is_file():
            return open(entry.local_path, "rb")
        path, aid = art.locator.get("path"), art.locator.get("id")
        if not path or not aid:
            raise FileNotFoundError(f"artifact {art.name}: no content for {entry.path!r}")
        root = self._artifact_root(str(aid))
        target = root / check_relpath(entry.path, f"artifact {art.name} entry path")
        with self._lock:
            lock = self._download_locks.setdefault(str(target), threading.Lock())
        with lock:
            if not target.is_file():
                try:
                    api_art = self._retry("artifact", lambda: self._client().artifact(str(path)))
                    self._retry(
                        "artifact entry download",
                        lambda: api_art.download(
                            root=str(root), skip_cache=True, path_prefix=entry.path
                        ),
                    )
                except Exception as exc:
                    raise FileNotFoundError(
                        f"artifact {path}: {entry.path!r} not downloadable: {exc}"
                    ) from exc
        if not target.is_file():
            raise FileNotFoundError(f"artifact {path}: {entry.path!r} is not in its content")
        return open(target, "rb")

    # ---- registries ------------------------------------------------------------------

    def _wanted(self, registry: str, name: str) -> bool:
        """In ``options.registries`` (collection names, ``REGISTRY/COLLECTION``, globs)?"""
        wanted = self.options.registries
        if not wanted:
            return True
        forms = {name, f"{registry}/{name}"}
        if registry != LEGACY_REGISTRY:
            forms.add(f"{REGISTRY_PREFIX}{registry}/{name}")
        return any(fnmatch.fnmatchcase(f, w) for f in forms for w in wanted)

    def _listed(self, what: str, make: Callable[[], Any]) -> list[Any]:
        """Every item of a fresh paginator from ``make``; a failure restarts the listing."""
        return self._retry(what, lambda: list(make()))

    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Every W&B Registry collection of ENTITY's organization, then every legacy Model
        Registry portfolio in ENTITY/model-registry (``options.registries`` narrows)."""
        yield from self._registry_models()
        yield from self._legacy_models()

    def _registries(self) -> list[Any]:
        """ENTITY's organization's registries; none when the server has no Registry or
        ENTITY belongs to no (single) organization (answers, not failures to retry)."""
        api = self._client()
        try:
            return list(api.registries())
        except (RuntimeError, ValueError) as exc:
            log.info("wandb: no W&B Registry read for %s: %s", self._t.entity, exc)
            return []

    def _portfolio_types(self, project: str) -> list[Any]:
        """Artifact types of ENTITY/model-registry; none when that project does not exist
        (the client raises ValueError for a missing project: not worth retrying)."""
        try:
            return list(self._client().artifact_types(project=project))
        except ValueError as exc:
            log.info("wandb: no legacy Model Registry in %s: %s", project, exc)
            return []

    def _registry_models(self) -> Iterator[RegisteredModel]:
        for reg in self._retry("registries", self._registries):
            colls = self._listed("registry collections", reg.collections)
            colls = [c for c in colls if self._wanted(reg.name, c.name)]
            if not colls:
                continue
            by_coll: dict[tuple[str, str, str], list[Any]] = {}
            for v in self._listed("registry versions", reg.versions):
                by_coll.setdefault((v.entity, v.project, v.name.split(":")[0]), []).append(v)
            for coll in colls:
                yield self._model(
                    coll, reg.name, by_coll.get((coll.entity, coll.project, coll.name), [])
                )

    def _legacy_models(self) -> Iterator[RegisteredModel]:
        api = self._client()
        entity = self._t.entity
        project = f"{entity}/{LEGACY_REGISTRY}"
        for t in self._retry("artifact types", functools.partial(self._portfolio_types, project)):
            for coll in self._listed("portfolios", t.collections):
                if coll.is_sequence() or not self._wanted(LEGACY_REGISTRY, coll.name):
                    continue
                listed = self._listed("portfolio versions", coll.artifacts)
                # Fetched by name: the membership carries the link's time and aliases.
                linked = [
                    self._retry(
                        "portfolio version",
                        functools.partial(api.artifact, f"{project}/{coll.name}:{a.version}"),
                    )
                    for a in listed
                ]
                yield self._model(coll, LEGACY_REGISTRY, linked)

    def _model(self, coll: Any, registry: str, linked: list[Any]) -> RegisteredModel:
        sid = collection_source_id(coll.entity, coll.project, coll.name)
        versions = [self._model_version(sid, v) for v in linked]
        return RegisteredModel(
            source_id=sid,
            name=coll.name,
            registry=registry,
            entity=coll.entity,
            description=coll.description or None,
            tags=_tag_map(coll.tags),
            versions=sorted(versions, key=lambda v: v.index),
        )

    @staticmethod
    def _source_of(linked: Any) -> Any:
        """The source version of a link (its own collection's aliases); the link itself
        when the source project is not readable (the client raises ValueError)."""
        try:
            return linked.source_artifact
        except ValueError as exc:
            log.warning("wandb: %s: source version unreadable: %s", linked.qualified_name, exc)
            return linked

    def _model_version(self, model_sid: str, linked: Any) -> ModelVersion:
        """A linked version: its number and aliases are the link's; its content, identity
        and producing run are the source version's."""
        index = _version_index(linked.version)
        if index is None:
            raise BridgeError(f"wandb: {linked.qualified_name}: no vN version label")
        warnings: list[str] = []
        source = self._retry("source artifact", functools.partial(self._source_of, linked))
        art = self._artifact(source, "logged", warnings, download=False)
        for w in warnings:
            log.warning("wandb: %s: %s", linked.qualified_name, w)
        linked_at = _parse_time(getattr(linked, "linked_at", None))
        return ModelVersion(
            source_id=f"{model_sid}:v{index}",
            index=index,
            artifact=art,
            run_source_id=art.producer_source_id,
            description=linked.description or None,
            tags=_tag_map(list(linked.tags)),
            aliases=_aliases(list(linked.aliases)),
            created_at_ms=linked_at if linked_at is not None else art.created_at_ms,
        )

    # ---- two-way (--two-way): what people edit, as listed ----------------------------

    def _run_path(self, header: RunHeader) -> str:
        return str(header.locator.get("path") or header.source_id.removeprefix("wandb:"))

    def editable(self, header: RunHeader) -> Editable:
        """The run's notes and tags as this sync listed them (kept current by the W&B
        writer's ``set_editable``); read from the server for a header from elsewhere."""
        seen = header.locator.get(EDITABLE)
        if not isinstance(seen, dict):
            a = self._api_run(self._run_path(header))._attrs
            seen = edits.listed(a.get("notes"), a.get("tags"))
        return edits.editable_of(seen)

    # Transitional: an engine that still writes edits through the reader. Readers do not
    # write: these go through a W&B writer opened on this reader's target.

    def _source_writer(self) -> Any:
        with self._lock:
            if self._writer is None:
                from bridge.adapters.wandb.writer import WandbWriter

                self._writer = WandbWriter(self.target)
            return self._writer

    def set_editable(self, header: RunHeader, changes: dict[str, str | None]) -> None:
        w = self._source_writer()
        w.set_editable(w.run_id_of(header), changes)

    def set_model_alias(self, model: RegisteredModel, alias: str, version_source_id: str) -> None:
        w = self._source_writer()
        w.set_alias(*_swap(w.version_of(model, version_source_id), alias))

    def delete_model_alias(self, model: RegisteredModel, alias: str) -> None:
        self._source_writer().delete_alias(model.source_id.removeprefix("wandb:"), alias)

    # ---- files -----------------------------------------------------------------------

    def open_file(self, ref: FileRef) -> IO[bytes]:
        url = ref.locator.get("url")
        if not url:
            path, name = ref.locator.get("run_path"), ref.locator.get("name")
            url = self._file_urls.get(str(path), {}).get(str(name))
            if not url and path and name:
                f = self._retry("file", lambda: self._api_run(str(path)).file(str(name)))
                url = f._attrs.get("directUrl") or f.url
        if not url:
            raise FileNotFoundError(f"{ref.path}: no URL in the file reference")
        dest = self._cache() / "files" / hashlib.sha1(url.encode()).hexdigest()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._retry("download", lambda: self._download(url, dest))
        return open(dest, "rb")

    def _download(self, url: str, dest: Path) -> None:
        """The API's own /files URLs need the key; a ``directUrl`` elsewhere (storage) is
        fetched without it, and a redirect off the server drops it."""
        base = self._t.base_url
        with (
            open_scoped(url, base, self._key(), timeout=self.api_timeout) as resp,
            open(dest, "wb") as out,
        ):
            shutil.copyfileobj(resp, out, 1 << 20)

    # ---- history ---------------------------------------------------------------------

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        path = run.header.locator.get("path") or run.header.source_id.removeprefix("wandb:")
        try:
            yield from _History(self, run, path).items()
        except (BridgeError, RunError):
            raise
        except Exception as exc:
            raise RunError(f"{run.header.source_id}: history unreadable: {exc}") from exc

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._api = None


class _History:
    """One run's history, as the same item stream the offline reader yields."""

    def __init__(self, reader: WandbApiReader, run: Run, path: str) -> None:
        self.reader, self.run, self.path = reader, run, path
        self.buffers: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self.seen: set[str] = set()
        self.last_step = 0
        self.last_ts = run.start_time_ms or 0
        self.max_exported: int | None = None
        layout = run.header.locator.get(BRIDGE_LAYOUT) if reader.restore_bridge else None
        #: Bridge-written run: the history column holding each row's source step.
        self.step_key: str | None = layout["step_key"] if layout else None

    def _ms(self, seconds: float) -> int:
        return round(seconds * 1000) if self.step_key else int(seconds * 1000)

    def _point(self, key: str, step: int, ts: int, value: float) -> Iterator[MetricChunk]:
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = ([], [], [])
        buf[0].append(step)
        buf[1].append(ts)
        buf[2].append(value)
        if len(buf[0]) >= CHUNK_POINTS:
            yield MetricChunk(key=key, steps=buf[0], timestamps=buf[1], values=buf[2])
            self.buffers[key] = ([], [], [])

    def _value(self, key: str, step: int, ts: int, v: Any) -> Iterator[HistoryItem]:
        if v is None:
            return
        if _is_number(v):
            self.seen.add(key)
            yield from self._point(key, step, ts, float(v))
        else:
            yield self._extra(key, step, ts, v)

    def _extra(self, key: str, step: int, ts: int, value: Any) -> ExtraValue:
        raw = json.dumps(value, allow_nan=True, separators=(",", ":"))
        file: FileRef | None = None
        if isinstance(value, dict):
            kind = str(value.get("_type", "object"))
            media = value.get("path")
            if isinstance(media, str) and media:
                # Kept as the server named it: the engine refuses an absolute or ``..``
                # path by name (``files/<path>``), so it is never fetched or written.
                size, sha = value.get("size"), value.get("sha256")
                file = FileRef(
                    path=f"files/{media}",
                    size=size if isinstance(size, int) else None,
                    sha256=sha if isinstance(sha, str) else None,
                    locator={"run_path": self.path, "name": media},
                )
        elif isinstance(value, str):
            kind = "string"
        else:
            kind = "object"
        return ExtraValue(key=key, step=step, timestamp=ts, value_json=raw, kind=kind, file=file)

    def _row(self, row: dict[str, Any]) -> Iterator[HistoryItem]:
        step = row.get("_step")
        step = int(step) if _is_number(step) else self.last_step
        ts = row.get("_timestamp")
        if _is_number(ts) and math.isfinite(ts):
            self.last_ts = self._ms(ts)
        flat: list[tuple[str, Any]] = []
        for k, v in row.items():
            if k not in ("_step", "_timestamp", "_runtime"):
                _flatten(k, v, flat)
        if self.step_key is not None:
            source_step, flat = split_row(flat, self.step_key)
            if source_step is not None:
                step = source_step
        self.last_step = max(self.last_step, step)
        for key, v in flat:
            yield from self._value(key, step, self.last_ts, v)

    def _parquet(self, files: list[Path]) -> Iterator[HistoryItem]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for fpath in files:
            pf = pq.ParquetFile(fpath)
            for batch in pf.iter_batches(batch_size=10_000):
                cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
                steps = cols["_step"].to_pylist() if "_step" in cols else []
                stamps = cols["_timestamp"].to_pylist() if "_timestamp" in cols else []
                n = batch.num_rows
                ts_ms: list[int] = []
                for i in range(n):
                    t = stamps[i] if stamps else None
                    if _is_number(t) and math.isfinite(t):
                        self.last_ts = self._ms(t)
                    ts_ms.append(self.last_ts)
                step_list = [int(s) if s is not None else self.last_step for s in steps]
                if step_list:  # _step, for the live tail: scan_history continues after it
                    self.max_exported = max(self.max_exported or 0, max(step_list))
                if self.step_key is not None and self.step_key in cols:
                    source = cols.pop(self.step_key).to_pylist()
                    step_list = [
                        int(v) if _is_number(v) and math.isfinite(v) else step_list[i]
                        for i, v in enumerate(source)
                    ]
                if step_list:
                    self.last_step = max(self.last_step, max(step_list))
                for col_name, col in cols.items():
                    if col_name in ("_step", "_timestamp", "_runtime"):
                        continue
                    name = (
                        source_metric_key(col_name, self.step_key)
                        if self.step_key is not None
                        else col_name
                    )
                    values = col.to_pylist()
                    numeric = (
                        pa.types.is_floating(col.type)
                        or pa.types.is_integer(col.type)
                        or pa.types.is_boolean(col.type)
                    )
                    for i, v in enumerate(values):
                        if v is None:
                            continue
                        if numeric:
                            self.seen.add(name)
                            yield from self._point(name, step_list[i], ts_ms[i], float(v))
                            continue
                        if isinstance(v, str) and v[:1] in ("{", "["):
                            try:
                                v = json.loads(v)
                            except ValueError:
                                pass
                        if isinstance(v, dict) and "_type" not in v:
                            flat: list[tuple[str, Any]] = []
                            _flatten(name, v, flat)
                            for key, fv in flat:
                                yield from self._value(key, step_list[i], ts_ms[i], fv)
                        else:
                            yield from self._value(name, step_list[i], ts_ms[i], v)

    def items(self) -> Iterator[HistoryItem]:
        rd = self.reader
        api_run = rd._api_run(self.path)
        export_dir = Path(tempfile.mkdtemp(dir=rd._cache(), prefix="history-"))
        try:
            res = rd._retry(
                "history export",
                lambda: api_run.download_history_exports(
                    export_dir, require_complete_history=False
                ),
            )
            if res.errors:
                raise RunError(f"history export download failed: {res.errors}")
            paths = sorted(Path(p) for p in res.paths)
            yield from self._parquet(paths)
            if not paths or res.contains_live_data:
                start = 0 if self.max_exported is None else self.max_exported + 1
                yield from self._scan(api_run, start)
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)
        yield from self._system(api_run)
        for key, (steps, stamps, values) in self.buffers.items():
            if steps:
                yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)
        self.buffers = {}
        yield from summary_only_points(self.run.summary, self.seen, self.last_step, self.last_ts)

    def _scan(self, api_run: Any, min_step: int) -> Iterator[HistoryItem]:
        """The rows not in the export, page by page; a failed page is retried alone."""
        scan = self.reader._retry(
            "scan_history",
            lambda: api_run.scan_history(min_step=min_step, page_size=1000, use_cache=False),
        )
        iter(scan)  # resets the scan to min_step
        while True:
            try:
                row = self.reader._retry("history page", lambda: _next_row(scan))
            except StopIteration:
                return
            yield from self._row(row)

    def _system(self, api_run: Any) -> Iterator[HistoryItem]:
        rows = self.reader._retry(
            "system metrics",
            lambda: api_run.history(stream="system", pandas=False, samples=SYSTEM_SAMPLES),
        )
        index: dict[str, int] = {}
        for row in rows or []:
            ts = row.get("_timestamp")
            ts_ms = int(ts * 1000) if _is_number(ts) and math.isfinite(ts) else self.last_ts
            for k, v in row.items():
                if not k.startswith("system.") or not _is_number(v):
                    continue
                key = "system/" + k[len("system.") :]
                idx = index.get(key, 0)
                index[key] = idx + 1
                yield from self._point(key, idx, ts_ms, float(v))


def _next_row(scan: Any) -> dict[str, Any]:
    """Next row of a HistoryScan; on a failed page the scan's position is unchanged, so
    calling again re-fetches that same page."""
    while True:
        if scan.scan_offset < len(scan.rows):
            row = scan.rows[scan.scan_offset]
            scan.scan_offset += 1
            return row  # type: ignore[no-any-return]
        if scan.page_offset >= scan._stop_step:
            raise StopIteration
        scan._load_next()
