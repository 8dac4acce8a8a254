"""Write neutral runs into W&B: ``wandb-offline:DIR`` (offline run folders) or
``wandb:ENTITY[/PROJECT][?base_url=URL]`` (a W&B server), both through the real SDK.

Offline, each ``wandb.init`` writes a real ``DIR/wandb/offline-run-*`` folder that
``wandb sync DIR/wandb`` uploads later; online, the SDK uploads as it goes (base URL from
``?base_url=`` or ``WANDB_BASE_URL``, key from ``WANDB_API_KEY`` or netrc; never printed).

Layout (all rules also in ``mappings/mlflow-to-wandb.toml``):

* Run id = base36(SHA-256(source id)) cut to 12 chars: a re-sync finds its run without any
  local state; ``find_runs_by_source`` rebuilds the map from config ``_bridge.source_id``.
* Config = the source config (flat MLflow params kept as they are), backend tags under
  ``mlflow_tags``, and flat ``_bridge.*`` keys: source id/URI, source run id, original
  start/end time (W&B always stamps "now"), status, then ``_bridge.fingerprint`` and
  ``_bridge.complete`` (written last, before ``finish``).
* History: W&B drops a row whose step is lower than the last one, and MLflow steps repeat,
  go back and differ per key. So ``_step`` is a plain row counter, every row carries the
  source step under ``mlflow_step`` (``define_metric("*", step_metric="mlflow_step")`` makes
  charts use it) and its ``_timestamp``; points of different keys sharing (step,
  timestamp) share a row. Nothing is dropped or merged: a key's points keep their order.
* A re-sync resumes the same run id (``resume="allow"``); offline that adds a folder for
  the same id, which readers merge. Offline rows continue the ``_step`` count of earlier
  folders so ``wandb sync`` sees one increasing history; online rows continue after the
  server's last ``_step``. A row the SDK drops anyway (below its step) fails the run.
* Online only: registered models → W&B Registry collections (or legacy portfolios),
  model versions → ``model`` artifacts logged by their run's copy; see ``registry_writer``.
* Online only, runs whose source run was deleted (``--on-delete``): ``tag`` adds the W&B run
  tag ``bridge-source-deleted`` (W&B tags are bare labels; ``bridge.source_deleted=true``
  becomes that label, the run's other tags stay); ``delete`` deletes the run
  (``Run.delete()``, its artifacts kept). W&B keeps a deleted run's id taken: a source run
  restored later cannot be copied again under its deterministic id. Offline folders
  cannot be edited once written, so ``wandb-offline:`` offers neither.
"""

from __future__ import annotations

import heapq
import math
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bridge.adapters.base import (
    Capabilities,
    DestRun,
    MetricSink,
    RegistryDelegate,
    Rendered,
    Writer,
)
from bridge.adapters.wandb.bridged import (
    INTERNAL_HISTORY_KEYS,
    RENAMED_METRIC_PREFIX,
    SDK_FILES,
    SOURCE_FILES_DIR,
)
from bridge.adapters.wandb.history import absolute_folder_target
from bridge.adapters.wandb.mapping import WandbMapping, load_wandb_mapping
from bridge.errors import BridgeError, RunError
from bridge.mapping import flatten, to_text
from bridge.paths import check_relpath, within
from bridge.redact import redact
from bridge.schema import (
    MetricChunk,
    Project,
    Run,
    Warning_,
)

if TYPE_CHECKING:
    from bridge.adapters.wandb.registry_writer import WandbRegistryWriter

BRIDGE = "_bridge."
SOURCE_ID_KEY = "_bridge.source_id"
SOURCE_URI_KEY = "_bridge.source_uri"
COMPLETE_KEY = "_bridge.complete"
FINGERPRINT_KEY = "_bridge.fingerprint"
#: Rendered-tag keys for the W&B run fields the engine diffs.
NAME_TAG = "wandb.name"
NOTES_TAG = "wandb.notes"
GROUP_TAG = "wandb.group"
JOB_TYPE_TAG = "wandb.job_type"
TAG_PREFIX = "wandb.tag."
# The layout's names are shared with the readers that reverse it (bridged.py).
RESERVED_FILES = SDK_FILES
#: Points buffered per sink before rows are sent even without a flush (memory bound).
SINK_MAX_POINTS = 50_000
METRICS_PER_BATCH = 10_000
#: How long finish_run waits for wandb-core to close an offline run's log.
LOG_CLOSE_TIMEOUT_S = 60.0
#: W&B run tag rules (wandb.sdk.artifacts._validators.TAG_REGEX; W&B UI: 64 characters).
_WANDB_TAG = re.compile(r"^[-\w]+( +[-\w]+)*$")
MAX_TAG_LEN = 64
_LABEL_BAD = re.compile(r"[^A-Za-z0-9-]+")


def _sdk_settings(**extra: Any) -> Any:
    """SDK settings for a bridge-made run: none of the bridge process's own console, system
    metrics, code, git or package list end up in the imported run."""
    import wandb

    return wandb.Settings(
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        save_code=False,
        disable_git=True,
        disable_job_creation=True,
        silent=True,
        **extra,
    )


@dataclass
class _Live:
    """One open SDK run and what the writer tracks about it."""

    run: Any
    dest_id: str
    source_id: str
    next_step: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Rows logged in this session (``check_kept`` has something to check).
    logged: int = 0

    def log_row(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.run.log(row, step=self.next_step)
            self.next_step += 1
            self.logged += 1

    def check_kept(self) -> None:
        """Raise if wandb-core dropped rows. It drops a row logged below its own step with
        only a terminal warning; after ``log(row, step=s)`` its step is ``s`` (the row
        stays open until a higher step comes), so a higher answer means rows went below it."""
        with self.lock:
            if not self.logged:
                return
            at, last = int(self.run.step), self.next_step - 1
        if at > last:
            raise RunError(
                f"W&B run {self.dest_id}: the wandb SDK dropped history rows logged at steps "
                f"up to {last} (its history is at step {at}); they were not written"
            )


@dataclass
class _Doc:
    """What rendering decides: the config to write, its flat view and the W&B fields."""

    config: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # flat key -> top-level key
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    wandb_tags: list[str] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)


class WandbWriter(RegistryDelegate, Writer):
    """Writes runs to a W&B server (``wandb:``); :class:`WandbOfflineWriter` writes folders."""

    scheme = "wandb"
    offline = False

    #: Reads a mapping-overrides file (``--mapping``) into this writer's mapping model.
    read_mapping = staticmethod(load_wandb_mapping)

    def __init__(self, target: str, mapping: WandbMapping | None = None) -> None:
        super().__init__(target)
        self.mapping = mapping or load_wandb_mapping(None)
        self._scratch: str | None = None  # see _scratch_dir
        self.capabilities = Capabilities(
            can_set_start_time=False,
            can_choose_run_id=True,
            immutable_params=False,
            stores_infinity=True,
            dedupes_metric_points=False,
            durable_flush=False,  # the SDK writes/uploads in the background
            # Offline folders are read back by the bridge's own reader; a server's history
            # may lag the SDK's uploads, so reading it back could miss points (online: no).
            reads_metric_points=self.offline,
            metrics_per_batch=METRICS_PER_BATCH,
            params_per_batch=1000,
            tags_per_batch=1000,
            # Online only: offline runs cannot link artifacts into a registry.
            registry=not self.offline,
            logged_models=not self.offline,
        )
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query)
        self._path = path
        self._entity: str | None = _first(params, "entity")
        self._fixed_project: str | None = _first(params, "project")
        self._explicit_url: str | None = _first(params, "base_url")
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._pending_resume: set[str] = set()
        self._api_obj: Any = None
        self._registry: WandbRegistryWriter | None = None
        if not self.offline:
            parts = [p for p in path.strip("/").split("/") if p]
            if not parts or len(parts) > 2:
                raise BridgeError(
                    f"wandb:{path}: expected wandb:ENTITY/PROJECT or wandb:ENTITY "
                    "(one project per source project)"
                )
            self._entity = parts[0]
            if len(parts) == 2:
                self._fixed_project = parts[1]

    # ------------------------------------------------------------------ basics

    @property
    def display_uri(self) -> str:
        if self._explicit_url:
            return f"{self.scheme}:{self._path}?base_url={redact(self._explicit_url)}"
        return f"{self.scheme}:{self._path}"

    @property
    def base_url(self) -> str:
        from bridge.adapters.wandb.api_reader import DEFAULT_BASE_URL

        return (self._explicit_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )

    def _api_key(self) -> str:
        from bridge.adapters.wandb.api_reader import api_key_for

        key = api_key_for(self.base_url)
        if not key:
            raise BridgeError(
                f"{self.display_uri}: no API key for {self.base_url}; set WANDB_API_KEY or run "
                f"`wandb login --host {self.base_url}`"
            )
        return key

    def _api(self) -> Any:
        with self._lock:
            if self._api_obj is None:
                import wandb

                self._api_obj = wandb.Api(
                    api_key=self._api_key(), overrides={"base_url": self.base_url}, timeout=60
                )
            return self._api_obj

    def check(self) -> None:
        """Online: an API key must be known and the server must answer."""
        import urllib.error
        import urllib.request

        self._api_key()
        try:
            with urllib.request.urlopen(self.base_url, timeout=5):  # noqa: S310 - user's server
                pass
        except urllib.error.HTTPError:
            return  # something answers; auth is checked by the first real call
        except Exception as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(
                f"{self.display_uri}: W&B server {self.base_url} unreachable ({reason}); "
                "check WANDB_BASE_URL / ?base_url="
            ) from None

    # ------------------------------------------------------------------ projects

    def project_name(self, project: Project) -> str:
        if self._fixed_project:
            return self._fixed_project
        return self.mapping.project_for(project.name, project.entity)

    def _project_id(self, name: str) -> str:
        return f"{self._entity}/{name}" if not self.offline else name

    def find_project(self, project: Project) -> str | None:
        """The project's id; W&B projects need no creation (``wandb.init`` makes them), so
        an absent one simply has no runs."""
        return self._project_id(self.project_name(project))

    def ensure_project(self, project: Project) -> str:
        return self._project_id(self.project_name(project))

    def _split(self, dest_id: str) -> tuple[str, str]:
        """(project name, run id) of a destination id."""
        head, _, run_id = dest_id.rpartition("/")
        return head.rpartition("/")[2], run_id

    # ------------------------------------------------------------------ reading back

    def _dest_run(
        self, dest_id: str, project_dest_id: str, config: dict[str, Any], fields: dict[str, Any]
    ) -> DestRun:
        params = {k: to_text(v) for k, v in flatten(config) if v is not None}
        tags: dict[str, str] = {}
        for key, value in (
            (NAME_TAG, fields.get("name")),
            (NOTES_TAG, fields.get("notes")),
            (GROUP_TAG, fields.get("group")),
            (JOB_TYPE_TAG, fields.get("job_type")),
        ):
            if value:
                tags[key] = str(value)
        for tag in fields.get("tags") or []:
            tags[TAG_PREFIX + tag] = "true"
        sid = config.get(SOURCE_ID_KEY)
        return DestRun(
            dest_id=dest_id,
            project_dest_id=project_dest_id,
            source_id=sid if isinstance(sid, str) else None,
            complete=config.get(COMPLETE_KEY) is True,
            fingerprint=_str_or_none(config.get(FINGERPRINT_KEY)),
            params=params,
            tags=tags,
        )

    def _api_dest_run(self, r: Any, project_dest_id: str) -> DestRun:
        fields = {
            "name": r.name,
            "notes": getattr(r, "notes", None),
            "group": getattr(r, "group", None),
            "job_type": getattr(r, "job_type", None),
            "tags": list(getattr(r, "tags", None) or []),
        }
        return self._dest_run(f"{project_dest_id}/{r.id}", project_dest_id, dict(r.config), fields)

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        """Runs of the project whose config carries ``_bridge.source_id``, by source id."""
        found: dict[str, DestRun] = {}
        try:
            runs = list(self._api().runs(project_dest_id, per_page=500))
        except Exception as exc:
            if _not_found(exc):
                return found
            raise
        for r in runs:
            dest = self._api_dest_run(r, project_dest_id)
            if dest.source_id:
                found.setdefault(dest.source_id, dest)
        return found

    def _fresh_run(self, dest_id: str) -> Any:
        """The public-API run as the server has it now. ``Api.run`` keeps each run object
        for the life of the ``Api``: edits and deletions made since would not show.
        Raises (``RunNotFoundError``) if there is no such run."""
        from wandb.apis import public

        parts = dest_id.split("/")
        if len(parts) != 3 or not all(parts):
            raise BridgeError(f"{self.display_uri}: {dest_id!r} is not ENTITY/PROJECT/RUN_ID")
        entity, project, run_id = parts
        return public.Run(self._api()._service_api, entity, project, run_id, lazy=False)

    def get_run(self, dest_id: str) -> DestRun | None:
        try:
            r = self._fresh_run(dest_id)  # loads the run: raises if it does not exist
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return self._api_dest_run(r, dest_id.rpartition("/")[0])

    # ------------------------------------------------------------------ source deletions

    def set_tags(self, dest_id: str, tags: dict[str, str]) -> None:
        """Add ``tags`` to the run as W&B tags (``--on-delete tag``: the label
        ``bridge-source-deleted``), keeping its other tags, with the public API's
        ``Run.update()``: what a W&B user filters runs on. Config, summary and history stay
        as they are (``Run.update()`` sends back the config and summary it loaded)."""
        labels = [wandb_label(k, v) for k, v in tags.items()]
        r = self._fresh_run(dest_id)
        have = [str(t) for t in getattr(r, "tags", None) or []]
        new = [t for t in dict.fromkeys(labels) if t not in have]
        if new:
            r.tags = have + new
            r.update()

    def delete_run(self, dest_id: str) -> None:
        """Delete the run on the server (``Run.delete()``, GraphQL ``DeleteRun``). Artifacts
        it logged stay (a registry link may point at one). A run already gone is no error.
        W&B keeps the id of a deleted run taken: the same id cannot be created again."""
        try:
            r = self._fresh_run(dest_id)
        except Exception as exc:
            if _not_found(exc):
                return
            raise
        r.delete(delete_artifacts=False)

    def metric_counts(self, dest_id: str) -> dict[str, int]:
        """Points per source metric key (every history row except the bridge's step key).
        Never from the SDK's history cache: it keeps a run's parquet copy by run id alone,
        so after an append it still holds the rows from before (the new ones re-sent)."""
        counts: dict[str, int] = {}
        r = self._api().run(dest_id)
        for row in r.scan_history(use_cache=False):
            for key, value in row.items():
                if value is not None and isinstance(value, (int, float)):
                    self._count(counts, key)
        return counts

    def _count(self, counts: dict[str, int], key: str) -> None:
        if key.startswith("_") or key == self.mapping.step_key:
            return
        original = self._source_metric_key(key)
        counts[original] = counts.get(original, 0) + 1

    # ------------------------------------------------------------------ rendering

    def render(self, run: Run) -> Rendered:
        doc = self._render_doc(run)
        return Rendered(params=doc.params, tags=doc.tags, warnings=doc.warnings)

    def _render_doc(self, run: Run) -> _Doc:
        m = self.mapping
        doc = _Doc()
        sid = run.header.source_id
        reserved = {m.extra_tags_config_key}
        skip = set(m.skip_config_keys)
        for key, value in run.config.items():
            if key in skip:
                continue
            stored = key
            if key in reserved or key.startswith(BRIDGE) or key != key.strip("-") or not key:
                stored = f"_{key}_" if key != key.strip("-") or not key else f"{key}_"
                doc.warnings.append(
                    Warning_(
                        source_id=sid,
                        code="sanitized-key",
                        message=f"config key {key!r} is reserved or changed by W&B; "
                        f"stored as {stored!r}",
                    )
                )
            doc.config[stored] = value
        extra = dict(run.extra_tags)
        if extra:
            doc.config[m.extra_tags_config_key] = extra
        source_run_id = run.header.native_id
        for key, value in (
            (SOURCE_ID_KEY, sid),
            (SOURCE_URI_KEY, self.source_uri),
            ("_bridge.source_run_id", source_run_id),
            ("_bridge.source_project", run.header.project.name),
            ("_bridge.parent_source_id", run.parent_source_id),
            ("_bridge.user", run.user),
            ("_bridge.host", run.host),
            ("_bridge.start_time_ms", run.start_time_ms),
            ("_bridge.end_time_ms", run.end_time_ms),
            ("_bridge.status", run.status),
            ("_bridge.status_reason", redact(run.status_reason or "")),  # the bridge's own text
            ("_bridge.incomplete", redact(run.incomplete_reason or "")),
            ("_bridge.step_key", m.step_key),
        ):
            if value is not None and value != "":
                doc.config[key] = value
        for top, value in doc.config.items():
            for flat, leaf in flatten({top: value}):
                if leaf is None:
                    continue
                doc.params[flat] = to_text(leaf)
                doc.owners[flat] = top

        wandb_tags: list[str] = []
        for tag in run.tags:
            if 1 <= len(tag) <= 64 and tag not in wandb_tags:
                wandb_tags.append(tag)
            elif tag not in wandb_tags:
                doc.warnings.append(
                    Warning_(
                        source_id=sid,
                        code="truncated",
                        message=f"tag {tag[:80]!r} is not 1-64 characters long, as W&B requires; "
                        "left out",
                    )
                )
        for key, value in extra.items():
            if m.is_wandb_tag(key, value) and key not in wandb_tags:
                wandb_tags.append(key)
        doc.wandb_tags = wandb_tags
        for key, value in (
            (NAME_TAG, self._run_name(run)),
            (NOTES_TAG, run.notes),
            (GROUP_TAG, self._group(run)),
            (JOB_TYPE_TAG, run.job_type),
        ):
            if value:
                doc.tags[key] = value
        for tag in wandb_tags:
            doc.tags[TAG_PREFIX + tag] = "true"
        return doc

    def _run_name(self, run: Run) -> str:
        return run.name or run.header.name or run.header.native_id

    def _group(self, run: Run) -> str | None:
        """The source group; else, for a nested run, its parent's W&B run id (computed
        from the parent's source identity, so it is the same whichever is written first)."""
        if run.group:
            return run.group
        if run.parent_source_id and self.mapping.group_from_parent:
            return self.mapping.run_id_for(run.parent_source_id)
        return None

    def run_id(self, run: Run) -> str:
        return self.mapping.run_id_for(run.header.source_id)

    # ------------------------------------------------------------------ live runs

    def _init_kwargs(self, project: str, run_id: str) -> dict[str, Any]:
        if self.offline:
            root = Path(self._path).expanduser()
            root.mkdir(parents=True, exist_ok=True)
            return {
                "mode": "offline",
                "dir": str(root),
                "project": project,
                "entity": self._entity,
                "id": run_id,
            }
        return {
            "mode": "online",
            "project": project,
            "entity": self._entity,
            "id": run_id,
            **self._scratch_dir(),
        }

    def _scratch_dir(self) -> dict[str, str]:
        """``wandb.init(dir=...)`` for online runs: the SDK's local run folders go to
        ``WANDB_DIR`` if the user set it, else to a temp folder removed on close — not to
        ``./wandb`` in the user's working directory. Always passed explicitly: the SDK reads
        its environment once per process, at the first ``wandb.init``."""
        if os.environ.get("WANDB_DIR"):
            return {"dir": os.environ["WANDB_DIR"]}
        with self._lock:
            if self._scratch is None:
                self._scratch = tempfile.mkdtemp(prefix="bridge-wandb-")
            return {"dir": self._scratch}

    def _start(self, dest_id: str, source_id: str, run: Run | None, resume: bool) -> _Live:
        """``wandb.init`` for one run (serialized: init is not meant to race)."""
        import wandb

        project, run_id = self._split(dest_id)
        kwargs = self._init_kwargs(project, run_id)
        extra: dict[str, Any] = {}
        if not self.offline:
            extra = {"api_key": self._api_key(), "base_url": self.base_url}
        doc = self._render_doc(run) if run is not None else None
        if run is not None and doc is not None:
            commit = run.git_commit or run.extra_tags.get("mlflow.source.git.commit")
            remote = run.git_remote or run.extra_tags.get("mlflow.source.git.repoURL")
            if commit:
                extra["git_commit"] = commit
            if remote:
                extra["git_remote_url"] = remote
            kwargs.update(
                name=doc.tags.get(NAME_TAG),
                notes=doc.tags.get(NOTES_TAG),
                group=doc.tags.get(GROUP_TAG),
                job_type=doc.tags.get(JOB_TYPE_TAG),
            )
            if not resume:
                kwargs["tags"] = doc.wandb_tags
        config: dict[str, Any] = {SOURCE_ID_KEY: source_id, COMPLETE_KEY: False}
        if self.source_uri:
            config[SOURCE_URI_KEY] = self.source_uri
        prev_steps = self._offline_next_step(dest_id) if resume and self.offline else 0
        with self._init_lock:
            sdk_run = wandb.init(
                **kwargs,
                config=config,
                resume="allow",
                reinit="create_new",
                allow_val_change=True,
                settings=_sdk_settings(**extra),
            )
        step_key = self.mapping.step_key
        sdk_run.define_metric(step_key, hidden=False)
        sdk_run.define_metric("*", step_metric=step_key)
        next_step = max(int(sdk_run.starting_step), prev_steps)
        if resume and not self.offline:
            next_step = max(next_step, self._server_next_step(dest_id))
        live = _Live(run=sdk_run, dest_id=dest_id, source_id=source_id, next_step=next_step)
        with self._lock:
            self._live[dest_id] = live
        return live

    def _offline_next_step(self, dest_id: str) -> int:
        """Offline folders know nothing of each other: continue after the last ``_step``."""
        return 0

    def _server_next_step(self, dest_id: str) -> int:
        """The step after the last one the server holds. wandb-core starts a resumed run
        at that step too (``starting_step``, from its ``RunResumeStatus`` answer), but
        ``run.step`` answers 0 until a row is logged; counting from it had every appended
        row dropped. Asked of the server as well, so rows never go below what it holds."""
        try:
            return int(self._fresh_run(dest_id).lastHistoryStep) + 1
        except Exception as exc:
            if _not_found(exc):
                return 0
            raise

    def _get_live(self, dest_id: str, run: Run | None = None) -> _Live:
        with self._lock:
            live = self._live.get(dest_id)
            pending = dest_id in self._pending_resume
            if pending:
                self._pending_resume.discard(dest_id)
        if live is not None:
            return live
        if not pending:
            raise RunError(f"W&B run {dest_id} is not open in this writer (create or update it)")
        source_id = run.header.source_id if run is not None else ""
        if not source_id:
            current = self.get_run(dest_id)
            source_id = (current.source_id if current else None) or ""
        return self._start(dest_id, source_id, run, resume=True)

    # ------------------------------------------------------------------ writing

    def create_run(self, project_dest_id: str, run: Run, rendered: Rendered) -> str:
        """``wandb.init`` with the deterministic id, name, tags and the identity config."""
        dest_id = f"{project_dest_id}/{self.run_id(run)}"
        with self._lock:
            if dest_id in self._live:
                return dest_id
        self._start(dest_id, run.header.source_id, run, resume=False)
        return dest_id

    def begin_update(self, dest_id: str) -> None:
        """Resume the run (lazily, at the first write: the run body gives group and job
        type to ``wandb.init``); it opens with ``_bridge.complete`` = False."""
        with self._lock:
            if dest_id in self._live:
                self._live[dest_id].run.config.update({COMPLETE_KEY: False}, allow_val_change=True)
                return
            self._pending_resume.add(dest_id)

    def write_metadata(
        self, dest_id: str, run: Run, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Config keys whose flat params changed (each top-level key written whole), then
        name/notes/tags. Group and job type are set by ``wandb.init``."""
        live = self._get_live(dest_id, run)
        doc = self._render_doc(run)
        tops = {doc.owners[k] for k in params if k in doc.owners}
        if tops:
            live.run.config.update({t: doc.config[t] for t in sorted(tops)}, allow_val_change=True)
        if NAME_TAG in tags:
            live.run.name = tags[NAME_TAG]
        if NOTES_TAG in tags:
            live.run.notes = tags[NOTES_TAG]
        new = [k[len(TAG_PREFIX) :] for k in tags if k.startswith(TAG_PREFIX)]
        if new:
            have = list(live.run.tags or ())
            merged = have + [t for t in new if t not in have and 1 <= len(t) <= 64]
            if merged != have:
                live.run.tags = tuple(merged)

    def metric_sink(self, dest_id: str) -> WandbMetricSink:
        live = self._get_live(dest_id)
        return WandbMetricSink(live, self.mapping.step_key, self._stored_metric_key)

    def _stored_metric_key(self, key: str) -> str:
        if key in INTERNAL_HISTORY_KEYS or key == self.mapping.step_key:
            return RENAMED_METRIC_PREFIX + key
        return key

    def _source_metric_key(self, stored: str) -> str:
        if stored.startswith(RENAMED_METRIC_PREFIX):
            rest = stored[len(RENAMED_METRIC_PREFIX) :]
            if rest in INTERNAL_HISTORY_KEYS or rest == self.mapping.step_key:
                return rest
        return stored

    def put_file(self, dest_id: str, path: str, stream: IO[bytes]) -> None:
        """Copy into the run's files dir and ``run.save(policy="now")`` it."""
        check_relpath(path, "file path")
        if path.split("/", 1)[0] in RESERVED_FILES:
            path = f"{SOURCE_FILES_DIR}{path}"
        live = self._get_live(dest_id)
        files_dir = Path(live.run.dir)
        within(files_dir, path, "file path")  # no link planted in files/ redirects it
        local = files_dir / path
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.bridge-partial")
        try:  # a stream that fails part-way (content not matching its manifest) leaves nothing
            with open(partial, "wb") as out:
                shutil.copyfileobj(stream, out, 1024 * 1024)
            partial.replace(local)
        finally:
            partial.unlink(missing_ok=True)
        live.run.save(str(local), base_path=str(files_dir), policy="now")

    def finish_run(self, dest_id: str, run: Run, fingerprint: str) -> None:
        """Non-numeric summary values, end time/status, fingerprint, then
        ``_bridge.complete`` = True last, then ``finish`` with the mapped exit code."""
        live = self._get_live(dest_id, run)
        summary = {
            k: v
            for k, v in run.summary.items()
            if not k.startswith("_")
            and not isinstance(v, (int, float))
            and not (isinstance(v, dict) and "_type" in v)
        }
        if summary:
            live.run.summary.update(summary)
        final: dict[str, Any] = {"_bridge.status": run.status}
        if run.end_time_ms is not None:
            final["_bridge.end_time_ms"] = run.end_time_ms
        live.run.config.update(final, allow_val_change=True)
        live.run.config.update({FINGERPRINT_KEY: fingerprint}, allow_val_change=True)
        live.run.config.update({COMPLETE_KEY: True}, allow_val_change=True)
        code = run.exit_code
        if code is None:
            code = self.mapping.exit_codes.get(run.status, 1)
        self._finish(live, code)
        with self._lock:
            self._live.pop(dest_id, None)

    def _finish(self, live: _Live, exit_code: int) -> None:
        """``run.finish``; offline, also wait until the log is really complete on disk."""
        log = self._log_path(live)
        live.run.finish(exit_code=exit_code)
        if log is not None and not _wait_for_exit_record(log):
            raise RunError(f"W&B did not finish writing {log} within {LOG_CLOSE_TIMEOUT_S:.0f}s")

    def _log_path(self, live: _Live) -> Path | None:
        """The run's transaction log (offline only: online, finish waits for the upload)."""
        return None

    # ------------------------------------------------------------------ models, registry

    @property
    def registry(self) -> WandbRegistryWriter:
        """The model/registry half (online only), see ``registry_writer``."""
        if self.offline:
            raise BridgeError(f"{self.display_uri}: offline runs cannot hold a model registry")
        with self._lock:
            if self._registry is None:
                from bridge.adapters.wandb.registry_writer import WandbRegistryWriter

                self._registry = WandbRegistryWriter(self)
            return self._registry

    @property
    def name_warnings(self) -> dict[str, list[str]]:
        return {} if self.offline else self.registry.name_warnings

    def alias_problem(self, alias: str) -> str | None:
        from bridge.adapters.wandb.registry_writer import alias_problem

        return alias_problem(alias)

    def close(self) -> None:
        """Finish runs left open by a failure (exit code 1; their ``_bridge.complete`` stays
        False, so the next sync resumes them)."""
        with self._lock:
            left = list(self._live.values())
            self._live.clear()
            self._pending_resume.clear()
        for live in left:
            try:
                self._finish(live, 1)
            except Exception:  # noqa: BLE001 - closing must not raise
                pass
        if self._scratch is not None:  # every run is finished (uploaded): nothing left to keep
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class WandbOfflineWriter(WandbWriter):
    """Writes offline run folders under ``DIR/wandb`` for a later ``wandb sync``."""

    scheme = "wandb-offline"
    offline = True
    # A written offline folder is not edited or removed (``wandb sync`` may have uploaded it
    # already): not offering these makes ``--on-delete tag|delete`` refused up front.
    set_tags = None  # type: ignore[assignment]
    delete_run = None  # type: ignore[assignment]

    @classmethod
    def normalize_target(cls, target: str) -> str:
        return absolute_folder_target(target)

    @property
    def display_uri(self) -> str:
        return f"{self.scheme}:{self._path}"

    def check(self) -> None:
        root = Path(self._path).expanduser()
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise BridgeError(
                f"{self.display_uri}: {root} is not a writable folder; choose a writable path"
            )

    def _reader(self, run_ids: list[str] | None = None) -> Any:
        from bridge.adapters.base import ReaderOptions
        from bridge.adapters.wandb.offline_reader import WandbOfflineReader

        return WandbOfflineReader(
            str(Path(self._path).expanduser()),
            ReaderOptions(run_ids=run_ids or []),
            restore_bridge=False,  # the writer finds and diffs its runs by their raw layout
        )

    def _read(self, project: str, run_ids: list[str] | None = None) -> Iterator[tuple[Any, Any]]:
        """(header, run) of every readable run folder set of ``project`` in DIR."""
        root = Path(self._path).expanduser()
        if not root.is_dir():
            return
        reader = self._reader(run_ids)
        for header in reader.list_runs():
            if header.project.name != project:
                continue
            try:
                yield header, reader.read_run(header)
            except RunError:
                continue

    def _offline_dest_run(self, project: str, run: Any) -> DestRun:
        fields = {
            "name": run.name,
            "notes": run.notes,
            "group": run.group,
            "job_type": run.job_type,
            "tags": run.tags,
        }
        return self._dest_run(f"{project}/{run.header.native_id}", project, run.config, fields)

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        found: dict[str, DestRun] = {}
        for _, run in self._read(project_dest_id):
            dest = self._offline_dest_run(project_dest_id, run)
            if dest.source_id:
                found.setdefault(dest.source_id, dest)
        return found

    def get_run(self, dest_id: str) -> DestRun | None:
        project, run_id = self._split(dest_id)
        for _, run in self._read(project, [run_id]):
            return self._offline_dest_run(project, run)
        return None

    def metric_counts(self, dest_id: str) -> dict[str, int]:
        project, run_id = self._split(dest_id)
        counts: dict[str, int] = {}
        reader = self._reader([run_id])
        for _, run in self._read(project, [run_id]):
            for item in reader.iter_history(run):
                if isinstance(item, MetricChunk):
                    for _ in range(len(item)):
                        self._count(counts, item.key)
        return counts

    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """Points of these keys as the bridge's offline reader reads the run's folders back:
        source keys, steps and timestamps restored (see ``bridged``)."""
        from bridge.adapters.base import ReaderOptions
        from bridge.adapters.wandb.offline_reader import WandbOfflineReader

        project, run_id = self._split(dest_id)
        root = Path(self._path).expanduser()
        if not root.is_dir():
            return
        wanted = set(keys)
        reader = WandbOfflineReader(str(root), ReaderOptions(run_ids=[run_id]))
        for header in reader.list_runs():
            if header.project.name != project:
                continue
            for item in reader.iter_history(reader.read_run(header)):
                if isinstance(item, MetricChunk) and item.key in wanted:
                    yield item

    def _log_path(self, live: _Live) -> Path | None:
        try:
            return Path(live.run.settings.sync_file)
        except Exception:  # noqa: BLE001 - no log to wait for
            return None

    def _offline_next_step(self, dest_id: str) -> int:
        project, run_id = self._split(dest_id)
        last = -1
        for _, run in self._read(project, [run_id]):
            step = run.summary.get("_step")
            if isinstance(step, (int, float)) and math.isfinite(step):
                last = max(last, int(step))
        return last + 1


class WandbMetricSink(MetricSink):
    """Buffers points of any keys; on flush merges them into rows and logs each row.

    Keys are merged by (timestamp, step) so rows come out roughly in time order and
    points of different keys that share (step, timestamp) share a row; each key's points
    keep their source order (a key never appears twice in a row).
    """

    def __init__(self, live: _Live, step_key: str, key_of: Any) -> None:
        self._live = live
        self._step_key = step_key
        self._key_of = key_of
        self._buf: dict[str, list[tuple[int, int, float]]] = {}
        self._n = 0
        self.rows_sent = 0
        self.points_sent = 0
        self.warnings: list[Warning_] = []
        self._renamed: set[str] = set()

    def add(self, chunk: MetricChunk) -> None:
        stored = self._key_of(chunk.key)
        if stored != chunk.key and chunk.key not in self._renamed:
            self._renamed.add(chunk.key)
            self.warnings.append(
                Warning_(
                    source_id=self._live.source_id,
                    code="sanitized-key",
                    message=f"metric key {chunk.key!r} is reserved in W&B history; "
                    f"stored as {stored!r}",
                )
            )
        buf = self._buf.setdefault(stored, [])
        buf.extend(zip(chunk.steps, chunk.timestamps, chunk.values, strict=True))
        self._n += len(chunk)
        if self._n >= SINK_MAX_POINTS:
            self.flush()

    def _rows(self) -> Iterator[dict[str, Any]]:
        streams = [
            [(ts, step, i, key, value) for i, (step, ts, value) in enumerate(points)]
            for key, points in self._buf.items()
        ]
        row: dict[str, Any] | None = None
        row_at: tuple[int, int] | None = None
        for ts, step, _, key, value in heapq.merge(*streams, key=lambda p: (p[0], p[1])):
            if row is None or row_at != (step, ts) or key in row:
                if row is not None:
                    yield row
                row = {self._step_key: step, "_timestamp": ts / 1000.0}
                row_at = (step, ts)
            row[key] = value
        if row is not None:
            yield row

    def flush(self) -> None:
        if not self._n:
            return
        for row in self._rows():
            self._live.log_row(row)
            self.rows_sent += 1
        self._live.check_kept()
        self.points_sent += self._n
        self._buf.clear()
        self._n = 0


def _wait_for_exit_record(log: Path, timeout: float = LOG_CLOSE_TIMEOUT_S) -> bool:
    """Wait until ``log`` ends with the run's exit record.

    ``run.finish()`` returns before wandb-core has flushed and closed the transaction log
    (the stream is torn down asynchronously), so a reader right after it can see a
    header-only or partial log. The exit record is the last one written.
    """
    from bridge.adapters.wandb.txlog import TxlogReader

    deadline = time.monotonic() + timeout
    last_size = -1
    while time.monotonic() < deadline:
        size = log.stat().st_size if log.exists() else 0
        if size == last_size and size > 7:
            last = None
            for _, rec in TxlogReader(log).records():
                last = rec.WhichOneof("record_type")
            if last == "exit":
                return True
        last_size = size
        time.sleep(0.02)
    return False


def wandb_label(key: str, value: str) -> str:
    """A neutral tag as a W&B run tag. W&B run tags are bare labels, so only a flag
    (value "true" or empty) can be one: ``wandb.tag.NAME`` is ``NAME``; any other key has
    each run of characters other than letters, digits and ``-`` turned into ``-``
    (``bridge.source_deleted`` → ``bridge-source-deleted``). Raises RunError otherwise."""
    if value.strip().lower() not in ("", "true"):
        raise RunError(f"W&B run tags have no values: cannot write tag {key}={value!r}")
    if key.startswith(TAG_PREFIX):
        label = key[len(TAG_PREFIX) :]
    else:
        label = _LABEL_BAD.sub("-", key).strip("-")
    if not _WANDB_TAG.fullmatch(label) or len(label) > MAX_TAG_LEN:
        raise RunError(f"tag {key!r} is no valid W&B run tag ({label!r})")
    return label


def _first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    return values[0] if values else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(p in text for p in ("not found", "could not find", "404", "does not exist"))
