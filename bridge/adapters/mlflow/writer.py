"""Write neutral runs into an MLflow tracking store (``mlflow:TRACKING_URI``).

Targets: ``sqlite:///path.db``, ``postgresql://...``/``mysql://...``/``mssql://...``,
``http(s)://host:port`` (an ``mlflow server``) and, optionally, ``file:`` stores.
One :class:`mlflow.tracking.MlflowClient` per writer; the client and the SQL/REST stores
behind it are safe to share between threads (the SQL store opens a session per call), so
several runs may be written in parallel, one :class:`MetricSink` per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import (
    Capabilities,
    DestRegisteredModel,
    DestRun,
    MetricSink,
    RegistryDelegate,
    Rendered,
    Writer,
)
from bridge.adapters.mlflow import editable
from bridge.adapters.mlflow.once import create_once
from bridge.adapters.mlflow.registry import MAX_ALIAS_LEN, RegistryWriter, alias_problem
from bridge.adapters.mlflow.uri import MlflowStore, check_server, quick_http
from bridge.errors import BridgeError, RunError
from bridge.faults import kill_point
from bridge.mapping import (
    Mapping,
    flatten,
    is_numeric,
    json_dumps,
    load_mapping,
    restore_key,
    sanitize_key,
    to_text,
)
from bridge.paths import check_relpath
from bridge.redact import redact
from bridge.schema import (
    Editable,
    MetricChunk,
    Project,
    Run,
    Warning_,
)

# MLflow must never cut a value silently; we cut (visibly) before sending anything.
os.environ["MLFLOW_TRUNCATE_LONG_VALUES"] = "false"
# MLflow prints "View run ... at" on stdout when a run ends on a server: that would corrupt
# `--json` output and costs a get_run call per run.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Reading our own small bridge/*.json back must not draw progress bars over the CLI's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SOURCE_ID_TAG = "bridge.source_id"
SOURCE_URI_TAG = "bridge.source_uri"
COMPLETE_TAG = "bridge.complete"
FINGERPRINT_TAG = "bridge.fingerprint"
STATUS_REASON_TAG = "bridge.status_reason"
INCOMPLETE_TAG = "bridge.incomplete"

CONFIG_ARTIFACT = "bridge/config.json"
SUMMARY_ARTIFACT = "bridge/summary.json"
KEY_MAP_ARTIFACT = "bridge/key-map.json"
LONG_VALUES_ARTIFACT = "bridge/long-values.json"

MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000
MAX_EXPERIMENT_TAG_LEN = 20000
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
TAGS_PER_BATCH = 100
#: MLflow's REST limit is 1 MB of request JSON per log_batch; stay clearly below it.
BATCH_BYTES = 900_000
#: JSON bytes of one metric besides its key: value, timestamp, step, field names.
METRIC_OVERHEAD_BYTES = 110


@dataclass
class _Full:
    """Everything rendering decides: what goes into MLflow and what goes beside it."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    warnings: list[Warning_] = field(default_factory=list)
    key_map: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"params": {}, "tags": {}, "metrics": {}}
    )
    long_values: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"params": {}, "tags": {}}
    )
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {"params": {}, "tags": {}})


class MlflowWriter(MlflowStore, RegistryDelegate, Writer):
    """Writes runs into an MLflow tracking server or database."""

    scheme = "mlflow"

    #: Reads a mapping-overrides file (``--mapping``) into this writer's mapping model.
    read_mapping = staticmethod(load_mapping)

    def __init__(
        self,
        target: str,
        mapping: Mapping | None = None,
        artifact_root: str | None = None,
    ) -> None:
        super().__init__(target)
        self._init_store(target)
        self.mapping = mapping or load_mapping(None)
        #: Where experiments created by the bridge keep artifacts. Default: MLflow's choice,
        #: except for sqlite, where it is ``<db folder>/mlartifacts`` (not the current dir).
        self.artifact_root = artifact_root
        #: The source's display URI, set by the engine; written as ``bridge.source_uri``.
        self.source_uri: str | None = None
        self.capabilities = Capabilities(
            can_set_start_time=True,
            can_choose_run_id=False,
            immutable_params=True,
            stores_infinity=False,
            dedupes_metric_points=self.kind != "file",
            reads_metric_points=True,
            max_param_len=MAX_PARAM_LEN,
            max_tag_len=MAX_TAG_LEN,
            max_key_len=250,
            metrics_per_batch=METRICS_PER_BATCH,
            params_per_batch=PARAMS_PER_BATCH,
            tags_per_batch=TAGS_PER_BATCH,
            registry=True,
            logged_models=True,
            max_alias_len=MAX_ALIAS_LEN,
        )
        #: Logged models and the model registry (bridge/adapters/mlflow/registry.py).
        self.registry = RegistryWriter(self, self.mapping)
        #: After find_runs_by_source: source id → every dest run id that carries it, when >1.
        self.duplicate_runs: dict[str, list[str]] = {}
        self._bulk_engine_obj: Any = None
        #: Write metric points with Core bulk inserts on SQL stores (see bulk.py).
        self.bulk_metrics = True
        self._source_ids: dict[str, str] = {}
        self._metric_renames: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ basics

    def check(self) -> None:
        """Fail fast, with one line naming the store and the fix, if it cannot be written."""
        where = self.display_uri
        if self.kind == "sqlite":
            self._check_sqlite_path()
            if self._store_missing():
                return  # a new store: opening it would create it (and a dry run writes nothing)
        elif self.kind == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in (
            "1",
            "true",
        ):
            raise BridgeError(
                f"{where}: MLflow 3 refuses file stores by default; set MLFLOW_ALLOW_FILE_STORE=true "
                "or use a sqlite:///PATH.db store"
            )
        elif self.kind == "http":
            check_server(self.target)
        elif self.kind == "sql":
            self._check_sql_connect()
        try:
            self._probe()
        except BridgeError:
            raise
        except Exception as exc:
            raise BridgeError(
                f"{where}: cannot use this MLflow tracking store ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); check the URI, credentials and that the store "
                "is reachable and writable"
            ) from None

    def _probe(self, attempts: int = 3) -> None:
        """One cheap read, quickly; a passing 5xx, 429 or dropped connection is tried again
        (twice, 1 s then 2 s later) so a single transient fault does not stop the pass."""
        for attempt in range(attempts):
            try:
                with quick_http(self.kind):
                    self.client.search_experiments(max_results=1)
                return
            except Exception as exc:
                if attempt == attempts - 1 or not _transient(exc):
                    raise
                time.sleep(1.0 * (attempt + 1))

    def _check_sqlite_path(self) -> None:
        from sqlalchemy.engine import make_url

        db = make_url(self.target).database
        if not db or db == ":memory:":
            raise BridgeError(
                f"{self.display_uri}: an in-memory sqlite store cannot keep anything; "
                "use sqlite:///PATH.db"
            )
        path = Path(db).expanduser()
        parent = path.parent
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if path.exists():
            ok = path.is_file() and os.access(path, os.W_OK) and os.access(parent, os.W_OK)
        else:
            ok = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
        if not ok:
            raise BridgeError(
                f"{self.display_uri}: sqlite database {path} is not writable (folder {parent} "
                "missing, not a folder, or read-only); choose a writable path"
            )

    def _check_sql_connect(self) -> None:
        import sqlalchemy

        args: dict[str, Any] = {}
        if self.target.startswith(("postgresql", "mysql")):
            args["connect_timeout"] = 5
        try:
            engine = sqlalchemy.create_engine(self.target, connect_args=args)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        except Exception as exc:
            raise BridgeError(
                f"{self.display_uri}: cannot connect to the database "
                f"({type(exc).__name__}: {self._scrub(str(exc))}); check host, port, "
                "database name, credentials and that the driver is installed"
            ) from None

    # ------------------------------------------------------------------ projects

    def experiment_name(self, project: Project) -> str:
        return self.mapping.experiment_for(project.name, project.entity)

    def _store_missing(self) -> bool:
        """A sqlite store that does not exist yet holds nothing; MLflow creates it on first use."""
        if self.kind != "sqlite":
            return False
        from sqlalchemy.engine import make_url

        db = make_url(self.target).database
        return db is not None and db not in ("", ":memory:") and not Path(db).expanduser().exists()

    def find_project(self, project: Project) -> str | None:
        if self._store_missing():
            return None
        exp = self.client.get_experiment_by_name(self.experiment_name(project))
        if exp is None or exp.lifecycle_stage != "active":
            return None
        return str(exp.experiment_id)

    def ensure_project(self, project: Project) -> str:
        from mlflow.exceptions import MlflowException

        name = self.experiment_name(project)
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return create_once(
                    self.kind,
                    lambda: str(
                        self.client.create_experiment(
                            name,
                            artifact_location=self._artifact_location(name),
                            tags=self._experiment_tags(project),
                        )
                    ),
                    lambda: self.find_project(project),
                    f"experiment {name!r}",
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)  # created meanwhile
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise BridgeError(
                f"{self.display_uri}: experiment {name!r} exists but is deleted; restore it "
                "(mlflow experiments restore), purge it (mlflow gc) or change experiment_name "
                "in the mapping"
            )
        if SOURCE_ID_TAG not in exp.tags:  # a user-made experiment: add ours, keep theirs
            for key, value in self._experiment_tags(project).items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
        return str(exp.experiment_id)

    def _experiment_tags(self, project: Project) -> dict[str, str]:
        tags = {SOURCE_ID_TAG: project.source_id}
        if project.entity:
            tags[f"{self.mapping.source_tag_prefix}entity"] = project.entity
        if project.description:
            tags["mlflow.note.content"] = project.description
        for key, value in project.tags.items():
            tags.setdefault(sanitize_key(key), value)
        limit = MAX_EXPERIMENT_TAG_LEN
        for key, value in list(tags.items()):
            if len(value) > limit:
                marker = self.mapping.marker(len(value), "the source project")
                tags[key] = value[: limit - len(marker)] + marker
        return tags

    def _artifact_location(self, name: str) -> str | None:
        root = self.artifact_root
        if root is None and self.kind == "sqlite":
            from sqlalchemy.engine import make_url

            db = make_url(self.target).database or "mlflow.db"
            root = (Path(db).expanduser().resolve().parent / "mlartifacts").as_uri()
        if root is None:
            return None
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return root.rstrip("/") + "/" + digest

    # ------------------------------------------------------------------ runs

    def _dest_run(self, mlrun: Any) -> DestRun:
        tags = dict(mlrun.data.tags)
        return DestRun(
            dest_id=mlrun.info.run_id,
            project_dest_id=str(mlrun.info.experiment_id),
            source_id=tags.get(SOURCE_ID_TAG),
            complete=tags.get(COMPLETE_TAG) == "true",
            fingerprint=tags.get(FINGERPRINT_TAG),
            params=dict(mlrun.data.params),
            tags=tags,
        )

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        """Active (not deleted) runs with a ``bridge.source_id`` tag, by source id.

        When two runs carry one source id (a crash between create and state save), the
        complete one wins, then the earliest created; the rest are in ``duplicate_runs``.
        """
        found: dict[str, list[DestRun]] = {}
        token: str | None = None
        while True:
            page = self.client.search_runs(
                [project_dest_id],
                filter_string=f"tags.`{SOURCE_ID_TAG}` != ''",
                max_results=1000,
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
                page_token=token,
            )
            for mlrun in page:
                dest = self._dest_run(mlrun)
                if dest.source_id:
                    found.setdefault(dest.source_id, []).append(dest)
            token = page.token
            if not token:
                break
        result: dict[str, DestRun] = {}
        dups: dict[str, list[str]] = {}
        for source_id, runs in found.items():
            best = next((r for r in runs if r.complete), runs[0])
            result[source_id] = best
            if len(runs) > 1:
                dups[source_id] = [r.dest_id for r in runs]
        self.duplicate_runs = dups
        return result

    def get_run(self, dest_id: str) -> DestRun | None:
        from mlflow.exceptions import MlflowException

        try:
            mlrun = self.client.get_run(dest_id)
        except MlflowException as exc:
            if exc.error_code in (
                "RESOURCE_DOES_NOT_EXIST",
                "NOT_FOUND",
                "INVALID_PARAMETER_VALUE",
            ):
                return None
            raise
        if mlrun.info.lifecycle_stage != "active":
            return None
        return self._dest_run(mlrun)

    # ------------------------------------------------------------------ rendering

    def render(self, run: Run) -> Rendered:
        full = self._render_full(run)
        return Rendered(params=full.params, tags=full.tags, warnings=full.warnings)

    def _run_name(self, run: Run) -> str:
        return run.name or run.header.name or run.header.native_id

    def _identity_tags(self, run: Run) -> dict[str, str]:
        tags = {SOURCE_ID_TAG: run.header.source_id}
        if self.source_uri:
            tags[SOURCE_URI_TAG] = self.source_uri
        if run.user:
            tags["mlflow.user"] = run.user
        return tags

    def _render_full(self, run: Run) -> _Full:
        m = self.mapping
        full = _Full()
        sid = run.header.source_id

        skip = set(m.skip_config_keys)
        config = {k: v for k, v in run.config.items() if k not in skip}
        for key, value in flatten(config, m.flatten_separator):
            self._put(full, sid, "params", key, to_text(value), CONFIG_ARTIFACT)

        p = m.source_tag_prefix
        tags: list[tuple[str, Any, str]] = []
        for key, value in self._identity_tags(run).items():
            tags.append((key, value, LONG_VALUES_ARTIFACT))
        fields: list[tuple[str, Any]] = [
            ("mlflow.runName", self._run_name(run)),
            ("mlflow.note.content", run.notes),
            ("mlflow.source.git.commit", run.git_commit),
            ("mlflow.source.git.repoURL", run.git_remote),
            # the source's own run id, for W&B sources (an MLflow source id already is one)
            (f"{p}run_id", run.header.native_id if sid.startswith("wandb:") else None),
            ("mlflow.parentRunId", run.parent_dest_id),
            (f"{p}group", run.group),
            (f"{p}job_type", run.job_type),
            (f"{p}host", run.host),
            (f"{p}exit_code", run.exit_code),
            (f"{p}tags", json_dumps(list(run.tags)) if run.tags else None),
            # the bridge's own tags: their text passes bridge.redact (it may quote an error)
            (STATUS_REASON_TAG, redact(run.status_reason or "")),
            (INCOMPLETE_TAG, redact(run.incomplete_reason or "")),
        ]
        for key, value in fields:
            if value is not None and value != "":
                tags.append((key, to_text(value), LONG_VALUES_ARTIFACT))
        if m.per_tag_tags:
            for tag in run.tags:
                tags.append((f"{m.tag_prefix}{tag}", "true", LONG_VALUES_ARTIFACT))
        for key, value in run.extra_tags.items():
            tags.append((key, value, LONG_VALUES_ARTIFACT))
        skip_summary = set(m.skip_summary_keys)
        summary = {k: v for k, v in run.summary.items() if k not in skip_summary}
        for key, value in flatten(summary, m.flatten_separator):
            if not is_numeric(value):
                tags.append((f"{m.summary_tag_prefix}{key}", to_text(value), SUMMARY_ARTIFACT))
        for key, value, artifact in tags:
            self._put(full, sid, "tags", key, value, artifact)
        return full

    def _put(self, full: _Full, sid: str, kind: str, key: str, value: str, artifact: str) -> None:
        target = full.params if kind == "params" else full.tags
        owners = full.owners[kind]
        stored = sanitize_key(key)
        noun = "param" if kind == "params" else "tag"
        if stored in target:
            first = owners[stored]
            what = "the same key" if first == key else f"the same stored key {stored!r}"
            full.warnings.append(
                Warning_(
                    source_id=sid,
                    code="key-collision",
                    message=f"{noun} {key!r} and {first!r} map to {what}; kept the first "
                    f"(all values are in {artifact})",
                )
            )
            full.long_values[kind].setdefault(key, value)
            return
        if stored != key:
            full.key_map[kind][key] = stored
            full.warnings.append(
                Warning_(
                    source_id=sid,
                    code="sanitized-key",
                    message=f"{noun} key {key!r} is not allowed by MLflow; stored as {stored!r} "
                    f"(see {KEY_MAP_ARTIFACT})",
                )
            )
        limit = MAX_PARAM_LEN if kind == "params" else MAX_TAG_LEN
        if len(value) > limit:
            marker = self.mapping.marker(len(value), artifact)
            full.long_values[kind][key] = value
            full.warnings.append(
                Warning_(
                    source_id=sid,
                    code="truncated",
                    message=f"{noun} {key!r} is {len(value)} chars, over MLflow's {limit}; "
                    f"stored the first {limit - len(marker)} with a marker, full value in "
                    f"{artifact}",
                )
            )
            value = value[: limit - len(marker)] + marker
        target[stored] = value
        owners[stored] = key

    # ------------------------------------------------------------------ writing

    def create_run(self, project_dest_id: str, run: Run, rendered: Rendered) -> str:
        """The run with its identity tag; created once even when a server's answer is lost
        (see bridge/adapters/mlflow/once.py): a retry first looks the run up by that tag."""
        tags = self._identity_tags(run)
        tags[COMPLETE_TAG] = "false"
        run_id = create_once(
            self.kind,
            lambda: str(
                self.client.create_run(
                    project_dest_id,
                    start_time=run.start_time_ms,
                    tags=tags,
                    run_name=self._run_name(run),
                ).info.run_id
            ),
            lambda: self._find_created_run(project_dest_id, run.header.source_id),
            f"run {run.header.source_id}",
        )
        with self._lock:
            self._source_ids[run_id] = run.header.source_id
        return run_id

    def _find_created_run(self, project_dest_id: str, source_id: str) -> str | None:
        """The active, incomplete run carrying ``source_id`` (oldest first), if any."""
        quoted = _filter_literal(source_id)
        found = self.client.search_runs(
            [project_dest_id],
            filter_string=f"tags.`{SOURCE_ID_TAG}` = {quoted}"
            if quoted
            else f"tags.`{SOURCE_ID_TAG}` != ''",
            max_results=1000,
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        )
        for mlrun in found:
            tags = mlrun.data.tags
            if tags.get(SOURCE_ID_TAG) == source_id and tags.get(COMPLETE_TAG) != "true":
                return str(mlrun.info.run_id)
        return None

    def write_metadata(
        self, dest_id: str, run: Run, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Params and tags in ≤100/≤100 batches (under the 1 MB request limit), then the
        ``bridge/`` artifacts: full config and summary, the key map and long values."""
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        with self._lock:
            self._source_ids[dest_id] = run.header.source_id
        full = self._render_full(run)
        param_batches = _size_batches(params.items(), PARAMS_PER_BATCH, BATCH_BYTES // 2)
        tag_batches = _size_batches(tags.items(), TAGS_PER_BATCH, BATCH_BYTES // 2)
        for i in range(max(len(param_batches), len(tag_batches))):
            pb = param_batches[i] if i < len(param_batches) else []
            tb = tag_batches[i] if i < len(tag_batches) else []
            try:
                self.client.log_batch(
                    dest_id,
                    params=[Param(k, v) for k, v in pb],
                    tags=[RunTag(k, v) for k, v in tb],
                    synchronous=True,
                )
            except MlflowException as exc:
                raise RunError(
                    f"MLflow rejected params/tags for run {dest_id}: {self._scrub(exc.message)}"
                ) from exc
        self._log_dataset_inputs(dest_id, run)
        files: dict[str, Any] = {
            "config.json": run.config,
            "summary.json": run.summary,
        }
        key_map = self._key_map_doc(full, dest_id, merge_existing=False)
        if key_map is not None:
            files["key-map.json"] = key_map
        if full.long_values["params"] or full.long_values["tags"]:
            files["long-values.json"] = full.long_values
        self._put_json_files(dest_id, files)

    def _log_dataset_inputs(self, dest_id: str, run: Run) -> None:
        """Datasets the run used → MLflow dataset inputs (lineage). MLflow's SQL store keeps
        one input per (dataset, run), so logging them again on a re-sync adds nothing."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for art in run.artifacts:
            if art.direction != "used" or art.type != "dataset":
                continue
            meta = art.metadata
            dataset = Dataset(
                name=art.name,
                digest=art.digest or "",
                source_type=str(meta.get("source_type") or "external"),
                source=str(meta.get("source") or run.header.source_id),
                schema=meta.get("schema"),
                profile=meta.get("profile"),
            )
            tags = [InputTag(str(k), str(v)) for k, v in (meta.get("tags") or {}).items()]
            inputs.append(DatasetInput(dataset, tags))
        if inputs:
            self.client.log_inputs(dest_id, datasets=inputs)

    def _key_map_doc(self, full: _Full, dest_id: str, merge_existing: bool) -> dict | None:
        with self._lock:
            metrics = dict(self._metric_renames.get(dest_id, {}))
        if merge_existing and metrics:
            old = self._read_json_artifact(dest_id, KEY_MAP_ARTIFACT) or {}
            metrics = {**old.get("metrics", {}), **metrics}
        doc = {
            "rule": "see mappings/wandb-to-mlflow.toml; original key -> stored key",
            "params": full.key_map["params"],
            "tags": full.key_map["tags"],
            "metrics": metrics,
        }
        if not (doc["params"] or doc["tags"] or doc["metrics"]):
            return None
        return doc

    def _put_json_files(self, dest_id: str, files: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
            folder = Path(tmp) / "bridge"
            folder.mkdir()
            for name, doc in files.items():
                (folder / name).write_text(json_dumps(doc, indent=2) + "\n", encoding="utf-8")
            self.client.log_artifacts(dest_id, str(folder), "bridge")

    def _read_json_artifact(self, dest_id: str, path: str) -> dict | None:
        try:
            with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
                local = self.client.download_artifacts(dest_id, path, tmp)
                with open(local, encoding="utf-8") as fh:
                    data = json.load(fh)
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def metric_sink(self, dest_id: str) -> MlflowMetricSink:
        """Core bulk inserts when the URI is the database itself, ``log_batch`` otherwise."""
        with self._lock:
            source_id = self._source_ids.get(dest_id, f"mlflow:{dest_id}")
            renames = self._metric_renames.setdefault(dest_id, {})
        engine = self._bulk_engine()
        if engine is not None:
            from bridge.adapters.mlflow.bulk import SqlBulkMetricSink

            return SqlBulkMetricSink(engine, dest_id, source_id, renames, self._lock)
        return MlflowMetricSink(self.client, dest_id, source_id, renames, self._lock)

    def _bulk_engine(self) -> Any:
        """A SQLAlchemy engine on the tracking database, for SQL stores whose dialect the
        bulk sink knows; None for servers and file stores (or with bulk writes disabled)."""
        if self.kind not in ("sqlite", "sql") or not self.bulk_metrics:
            return None
        # MLflow creates/upgrades the schema first; outside self._lock, which the client
        # property takes itself (a non-reentrant lock: inside, a first use would deadlock).
        self.client  # noqa: B018
        with self._lock:
            if self._bulk_engine_obj is None:
                import sqlalchemy as sa

                from bridge.adapters.mlflow.bulk import bulk_insert_supported

                args = {"timeout": 60} if self.kind == "sqlite" else {}
                engine = sa.create_engine(self.target, connect_args=args)
                self._bulk_engine_obj = engine if bulk_insert_supported(engine) else False
            return self._bulk_engine_obj or None

    def metric_key_map(self, dest_id: str) -> dict[str, str]:
        """Metric keys the sinks of this run had to sanitize (original → stored)."""
        with self._lock:
            return dict(self._metric_renames.get(dest_id, {}))

    def metric_counts(self, dest_id: str) -> dict[str, int]:
        """Stored points per ORIGINAL metric key (decoded; hashed keys via the key map)."""
        mlrun = self.client.get_run(dest_id)
        keys = list(mlrun.data.metrics)
        inverse: dict[str, str] = {}
        if any(":" in k for k in keys):
            doc = self._read_json_artifact(dest_id, KEY_MAP_ARTIFACT) or {}
            inverse = {v: k for k, v in doc.get("metrics", {}).items()}
        return {
            restore_key(k, inverse): len(self.client.get_metric_history(dest_id, k)) for k in keys
        }

    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """Stored points of these (source-named) keys: SQL stores straight from the
        ``metrics`` table in one streamed query, servers ``get-history`` page by page."""
        from bridge.adapters.mlflow.reader import (
            chunks_of_pages,
            rest_metric_pages,
            sql_metric_chunks,
        )

        named = {sanitize_key(k): k for k in keys}
        engine = self._bulk_engine()
        if engine is not None:
            for chunk in sql_metric_chunks(engine, dest_id, named):
                chunk.key = named[chunk.key]
                yield chunk
            return
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        paged = self.kind == "http" and hasattr(store, "get_metric_history")
        for stored, key in sorted(named.items()):
            if paged:
                pages = rest_metric_pages(store, dest_id, stored)
            else:
                pages = iter([self.client.get_metric_history(dest_id, stored)])
            yield from chunks_of_pages(key, pages)

    def put_file(self, dest_id: str, path: str, stream: IO[bytes]) -> None:
        check_relpath(path, "artifact path")
        folder, name = posixpath.split(path)
        with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
            local = Path(tmp) / name
            with open(local, "wb") as out:
                shutil.copyfileobj(stream, out, 1024 * 1024)
            self.client.log_artifact(dest_id, str(local), folder or None)

    def begin_update(self, dest_id: str) -> None:
        """Mark a run as being changed (``bridge.complete`` = "false") before appending."""
        self.client.set_tag(dest_id, COMPLETE_TAG, "false")

    def finish_run(self, dest_id: str, run: Run, fingerprint: str) -> None:
        """Status and end time, the metric key map if needed, then fingerprint, then
        ``bridge.complete`` = "true" last. A source run still RUNNING stays RUNNING."""
        if run.status == "RUNNING":
            if self.client.get_run(dest_id).info.status != "RUNNING":
                self.client.update_run(dest_id, status="RUNNING")
        else:
            self.client.set_terminated(dest_id, status=run.status, end_time=run.end_time_ms)
        kill_point("mlflow.finish.after_status")
        if self.metric_key_map(dest_id):
            doc = self._key_map_doc(self._render_full(run), dest_id, merge_existing=True)
            if doc is not None:
                self._put_json_files(dest_id, {"key-map.json": doc})
        self.client.set_tag(dest_id, FINGERPRINT_TAG, fingerprint)
        kill_point("mlflow.finish.after_fingerprint")
        self.client.set_tag(dest_id, COMPLETE_TAG, "true")

    def file_location(self, dest_id: str, path: str) -> str | None:
        """``runs:/<run id>/<path>``: what a registry version made from run files points at."""
        return f"runs:/{dest_id}/{path.strip('/')}"

    # ------------------------------------------------------------------ model registry

    @property
    def checksum_mismatches(self) -> list[Warning_]:
        """Model files whose stored bytes differ from their manifest (see put_model)."""
        return self.registry.checksum_mismatches

    @property
    def name_warnings(self) -> dict[str, list[str]]:
        """Source registered model id → how the name rule's result had to be changed."""
        return self.registry.name_warnings

    def alias_problem(self, alias: str) -> str | None:
        """Why MLflow would refuse this alias, or None."""
        return alias_problem(alias)

    def find_model(self, artifact_source_id: str) -> str | None:
        return None if self._store_missing() else super().find_model(artifact_source_id)

    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        return None if self._store_missing() else super().get_registered_model(name)

    # ---- --two-way: editable fields (bridge/adapters/mlflow/editable.py) -------------

    def editable_from_tags(self, tags: dict[str, str]) -> Editable:
        return editable.editable_of_tags(tags, self.mapping, editable.from_wandb(tags))

    def is_editable_tag(self, key: str) -> bool:
        return editable.is_editable_tag(key, self.mapping)

    def set_editable(self, dest_id: str, changes: dict[str, str | None]) -> None:
        tags = dict(self.client.get_run(dest_id).data.tags)
        editable.apply_edits(self.client, dest_id, tags, changes, self.mapping)

    def set_tags(self, dest_id: str, tags: dict[str, str]) -> None:
        """Set tags only (no side files): how a source deletion is marked (--on-delete tag)."""
        from mlflow.entities import RunTag

        self.client.log_batch(dest_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def delete_run(self, dest_id: str) -> None:
        """MLflow's own (soft) delete, restorable until the store is garbage-collected."""
        self.client.delete_run(dest_id)

    def close(self) -> None:
        self._client_obj = None
        if self._bulk_engine_obj:
            self._bulk_engine_obj.dispose()
        self._bulk_engine_obj = None


class MlflowMetricSink(MetricSink):
    """Buffers points across keys; sends ``log_batch`` calls of ≤1000 metrics and < 1 MB."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        source_id: str,
        renames: dict[str, str],
        lock: threading.Lock,
    ) -> None:
        from mlflow.entities import Metric

        self._metric = Metric
        self._client = client
        self.run_id = run_id
        self.source_id = source_id
        self._renames = renames  # shared with the writer (original → stored), under lock
        self._lock = lock
        self._keys: dict[str, tuple[str, int]] = {}
        self._owners: dict[str, str] = {}
        self._buf: list[Any] = []
        self._bytes = 0
        self.points_sent = 0
        #: sanitized-key / key-collision warnings, one per key, for the engine to report.
        self.warnings: list[Warning_] = []

    def _key(self, key: str) -> tuple[str, int]:
        stored = sanitize_key(key)
        if stored != key:
            with self._lock:
                self._renames[key] = stored
            self.warnings.append(
                Warning_(
                    source_id=self.source_id,
                    code="sanitized-key",
                    message=f"metric key {key!r} is not allowed by MLflow; stored as {stored!r} "
                    f"(see {KEY_MAP_ARTIFACT})",
                )
            )
        owner = self._owners.setdefault(stored, key)
        if owner != key:
            self.warnings.append(
                Warning_(
                    source_id=self.source_id,
                    code="key-collision",
                    message=f"metric keys {owner!r} and {key!r} both map to {stored!r}",
                )
            )
        info = (stored, len(json.dumps(stored)) + METRIC_OVERHEAD_BYTES)
        self._keys[key] = info
        return info

    def add(self, chunk: MetricChunk) -> None:
        stored, cost = self._keys.get(chunk.key) or self._key(chunk.key)
        metric = self._metric
        points = [
            metric(stored, value, timestamp, step)
            for step, timestamp, value in zip(
                chunk.steps, chunk.timestamps, chunk.values, strict=True
            )
        ]
        i, n = 0, len(points)
        while i < n:
            room = min(METRICS_PER_BATCH - len(self._buf), (BATCH_BYTES - self._bytes) // cost)
            if room <= 0:
                self._send()
                continue
            take = points[i : i + room]
            self._buf.extend(take)
            self._bytes += cost * len(take)
            i += len(take)
            if len(self._buf) >= METRICS_PER_BATCH:
                self._send()

    def _send(self) -> None:
        if not self._buf:
            return
        buf, self._buf, self._bytes = self._buf, [], 0
        kill_point("mlflow.log_batch.before")
        self._client.log_batch(self.run_id, metrics=buf, synchronous=True)
        kill_point("mlflow.log_batch.after")
        self.points_sent += len(buf)

    def flush(self) -> None:
        self._send()


def _filter_literal(value: str) -> str | None:
    """``value`` quoted for an MLflow filter string, or None when it holds both quote
    kinds (the filter grammar has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _size_batches(items: Any, count: int, max_bytes: int) -> list[list[tuple[str, str]]]:
    """Key/value pairs in lists of ≤ ``count`` items and ≤ ``max_bytes`` of JSON."""
    batches: list[list[tuple[str, str]]] = []
    batch: list[tuple[str, str]] = []
    size = 0
    for key, value in items:
        cost = len(json.dumps(key)) + len(json.dumps(value)) + 30
        if batch and (len(batch) >= count or size + cost > max_bytes):
            batches.append(batch)
            batch, size = [], 0
        batch.append((key, value))
        size += cost
    if batch:
        batches.append(batch)
    return batches


def _transient(exc: BaseException) -> bool:
    """A server error worth one more try: 429, 5xx, or a connection dropped or timed out."""
    status = getattr(exc, "get_http_status_code", None)
    code = status() if callable(status) else None
    if isinstance(code, int) and (code == 429 or code >= 500):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in (
            "connectionerror",
            "connection reset",
            "remotedisconnected",
            "timed out",
            "max retries exceeded",
            "503",
            "502",
            "504",
            "too many 500",
        )
    )
