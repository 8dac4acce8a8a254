"""Write neutral runs into an MLflow tracking store (``mlflow:TRACKING_URI``).

Targets: ``sqlite:///path.db``, ``postgresql://...``/``mysql://...``/``mssql://...``,
``http(s)://host:port`` (an ``mlflow server``) and, optionally, ``file:`` stores.
One :class:`mlflow.tracking.MlflowClient` per writer; the client and the SQL/REST stores
behind it are safe to share between threads (the SQL store opens a session per call), so
several runs may be written in parallel, one :class:`MetricSink` per run.

The jobs live beside this class: rendering (render.py, by the run's source kind:
kinds.py), metadata files (metadata.py), metric sinks (sink.py, bulk.py), the runs already
there (dest_index.py), logged models (logged_models.py), the registry (registry_write.py),
``--two-way`` edits (editable.py). It is also the writer ``--two-way`` opens on an MLflow
*source* (edits and registry aliases carried back): :meth:`run_id_of`, :meth:`version_of`.
"""

from __future__ import annotations

import os
import posixpath
import time
from pathlib import Path
from typing import IO, Any

from bridge.adapters.base import (
    Capabilities,
    DestRun,
    Rendered,
    Writer,
)
from bridge.adapters.features import FileLinks, MappingRules, RunDeletion, RunEdits
from bridge.adapters.mlflow import dest_index, editable, kinds, metadata
from bridge.adapters.mlflow import render as rendering
from bridge.adapters.mlflow.access import check_error, on_experiment, on_run
from bridge.adapters.mlflow.files import log_stream
from bridge.adapters.mlflow.items import MlflowItemSink
from bridge.adapters.mlflow.logged_models import LoggedModelWriter
from bridge.adapters.mlflow.names import (  # noqa: F401 - the writer's names, importable here
    COMPLETE_TAG,
    FINGERPRINT_TAG,
    INCOMPLETE_TAG,
    KEY_MAP_ARTIFACT,
    MAX_PARAM_LEN,
    MAX_TAG_LEN,
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    SOURCE_ID_TAG,
    SOURCE_URI_TAG,
    STATUS_REASON_TAG,
    TAGS_PER_BATCH,
)
from bridge.adapters.mlflow.once import create_once
from bridge.adapters.mlflow.parent_link import MlflowParentLinks
from bridge.adapters.mlflow.reader_listing import Recent
from bridge.adapters.mlflow.registry import MAX_ALIAS_LEN
from bridge.adapters.mlflow.registry_write import RegisteredModelWriter
from bridge.adapters.mlflow.uri import MlflowStore, check_server, quick_http
from bridge.adapters.mlflow.writer_check import (
    check_file_store_allowed,
    check_sql_connect,
    check_sqlite_path,
    store_missing,
    transient,
)
from bridge.adapters.mlflow.writer_metrics import MetricStorage
from bridge.adapters.mlflow.writer_models import ModelFeatures
from bridge.errors import BridgeError
from bridge.faults import kill_point
from bridge.mapping import Mapping, load_mapping
from bridge.paths import check_relpath
from bridge.schema import (
    Editable,
    Project,
    Run,
    RunHeader,
)

# MLflow must never cut a value silently; we cut (visibly) before sending anything.
os.environ["MLFLOW_TRUNCATE_LONG_VALUES"] = "false"
# MLflow prints "View run ... at" on stdout when a run ends on a server: that would corrupt
# `--json` output and costs a get_run call per run.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Reading our own small bridge/*.json back must not draw progress bars over the CLI's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_NAMES_KEPT = 256  # experiment names remembered for refused-write lines


class MlflowWriter(
    MlflowStore,
    MetricStorage,
    ModelFeatures,
    Writer,
    FileLinks,
    RunDeletion,
    RunEdits,
    MappingRules,
    MlflowItemSink,
    MlflowParentLinks,
):
    """Writes runs into an MLflow tracking server or database."""

    scheme = "mlflow"
    bookkeeping_keys = frozenset({FINGERPRINT_TAG, COMPLETE_TAG, SOURCE_URI_TAG})

    def __init__(
        self,
        target: str,
        mapping: Mapping | None = None,
        artifact_root: str | None = None,
    ) -> None:
        super().__init__(target)
        self._init_store(target)
        #: The W&B → MLflow rules; runs of other source kinds get neutral ones (kinds.py).
        self.mapping = mapping or load_mapping(None)
        #: Where experiments created by the bridge keep artifacts. Default: MLflow's choice,
        #: except for sqlite, where it is ``<db folder>/mlartifacts`` (not the current dir).
        self.artifact_root = artifact_root
        self.capabilities = Capabilities(
            can_set_start_time=True,
            can_choose_run_id=False,
            immutable_params=True,
            stores_infinity=False,
            dedupes_metric_points=self.kind != "file",
            max_param_len=MAX_PARAM_LEN,
            max_tag_len=MAX_TAG_LEN,
            max_key_len=250,
            metrics_per_batch=METRICS_PER_BATCH,
            params_per_batch=PARAMS_PER_BATCH,
            tags_per_batch=TAGS_PER_BATCH,
            max_alias_len=MAX_ALIAS_LEN,
            late_results=True,
        )
        self.logged_models = LoggedModelWriter(self)
        self.registry = RegisteredModelWriter(self)
        #: After find_runs_by_source: source id → every dest run id that carries it, when >1.
        self.duplicate_runs: dict[str, list[str]] = {}
        self._bulk_engine_obj: Any = None
        #: Write metric points with Core bulk inserts on SQL stores (see bulk.py).
        self.bulk_metrics = True
        self._source_ids: dict[str, str] = {}
        self._metric_renames: dict[str, dict[str, str]] = {}
        #: Experiment id → name, for the lines of refused writes (at most _NAMES_KEPT).
        self._experiment_names: dict[str, str] = Recent(_NAMES_KEPT)

    def load_mapping(self, path: Path) -> None:
        """``--mapping FILE``: the file's rules for this pair replace the defaults."""
        self.mapping = load_mapping(path)

    # ------------------------------------------------------------------ basics

    def check(self) -> None:
        """Fail fast, with one line naming the store and the fix, if it cannot be written."""
        where = self.display_uri
        if self.kind == "sqlite":
            check_sqlite_path(self.target, where)
            if self._store_missing():
                return  # a new store: opening it would create it (and a dry run writes nothing)
        elif self.kind == "file":
            check_file_store_allowed(where)
        elif self.kind == "http":
            check_server(self.target)
        elif self.kind == "sql":
            check_sql_connect(self.target, where, self._scrub)
        try:
            self._probe()
        except BridgeError:
            raise
        except Exception as exc:
            raise check_error(exc, where, self.target) or BridgeError(
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
                if attempt == attempts - 1 or not transient(exc):
                    raise
                time.sleep(1.0 * (attempt + 1))

    def _store_missing(self) -> bool:
        return store_missing(self.kind, self.target)

    # ------------------------------------------------------------------ projects

    def experiment_name(self, project: Project) -> str:
        rules = kinds.mapping_for(self.mapping, kinds.source_kind(project.source_id))
        return rules.experiment_for(project.name, project.entity)

    def run_experiment_name(self, dest_id: str) -> str:
        """The name of the experiment run ``dest_id`` is in, for the line of a refused
        write (asked only then; names kept per experiment id, a bounded few)."""
        try:
            exp_id = str(self.client.get_run(dest_id).info.experiment_id)
            with self._lock:
                name = self._experiment_names.get(exp_id)
            if name is None:
                name = str(self.client.get_experiment(exp_id).name)
                with self._lock:
                    self._experiment_names[exp_id] = name
            return name
        except Exception:  # not even readable: the run's id stands in for the name
            return f"of run {dest_id}"

    @on_experiment(lambda args: args[0], "EDIT")
    def find_project(self, project: Project) -> str | None:
        if self._store_missing():
            return None
        exp = self.client.get_experiment_by_name(self.experiment_name(project))
        if exp is None or exp.lifecycle_stage != "active":
            return None
        return str(exp.experiment_id)

    @on_experiment(lambda args: args[0], "EDIT (or the right to create experiments)")
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
                            tags=rendering.experiment_tags(project, self.mapping),
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
            for key, value in rendering.experiment_tags(project, self.mapping).items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
        return str(exp.experiment_id)

    def _artifact_location(self, name: str) -> str | None:
        root = self.artifact_root
        if root is None and self.kind == "sqlite":
            from sqlalchemy.engine import make_url

            root = rendering.sqlite_artifact_root(make_url(self.target).database or "mlflow.db")
        return rendering.artifact_location(root, name)

    # ------------------------------------------------------------------ runs

    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        """Active runs with a ``bridge.source_id`` tag, by source id; when two carry one
        id the complete one wins, then the earliest (the rest: ``duplicate_runs``)."""
        found, self.duplicate_runs = dest_index.runs_by_source(self.client, project_dest_id)
        return found

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
        return dest_index.dest_run(mlrun)

    def render(self, run: Run, parent_dest_id: str | None = None) -> Rendered:
        full = self._render_full(run, parent_dest_id)
        return Rendered(params=full.params, tags=full.tags, warnings=full.warnings)

    def _render_full(self, run: Run, parent_dest_id: str | None = None) -> rendering.Full:
        return rendering.render_full(run, self.mapping, self.source_uri, parent_dest_id)

    # ------------------------------------------------------------------ writing

    @on_experiment(lambda args: args[1].header.project, "EDIT")
    def create_run(self, project_dest_id: str, run: Run, rendered: Rendered) -> str:
        """The run with its identity tag; created once even when a server's answer is lost
        (see bridge/adapters/mlflow/once.py): a retry first looks the run up by that tag."""
        tags = rendering.identity_tags(run, self.source_uri)
        tags[COMPLETE_TAG] = "false"
        run_id = create_once(
            self.kind,
            lambda: str(
                self.client.create_run(
                    project_dest_id,
                    start_time=run.start_time_ms,
                    tags=tags,
                    run_name=rendering.run_name(run),
                ).info.run_id
            ),
            lambda: dest_index.find_created_run(self.client, project_dest_id, run.header.source_id),
            f"run {run.header.source_id}",
        )
        with self._lock:
            self._source_ids[run_id] = run.header.source_id
        return run_id

    @on_run("EDIT")
    def write_metadata(
        self, dest_id: str, run: Run, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Params and tags in ≤100/≤100 batches (under the 1 MB request limit), then the
        ``bridge/`` artifacts: full config and summary, the key map and long values."""
        with self._lock:
            self._source_ids[dest_id] = run.header.source_id
        full = self._render_full(run)
        metadata.log_params_and_tags(self.client, dest_id, params, tags, self._scrub)
        metadata.log_dataset_inputs(self.client, dest_id, run)
        files: dict[str, Any] = {
            "config.json": run.config,
            "summary.json": run.results,
        }
        key_map = self._key_map_doc(full, dest_id, merge_existing=False)
        if key_map is not None:
            files["key-map.json"] = key_map
        if full.long_values["params"] or full.long_values["tags"]:
            files["long-values.json"] = full.long_values
        metadata.put_json_files(self.client, dest_id, files)

    def _key_map_doc(self, full: rendering.Full, dest_id: str, merge_existing: bool) -> dict | None:
        with self._lock:
            metrics = dict(self._metric_renames.get(dest_id, {}))
        if merge_existing and metrics:
            old = metadata.read_json_artifact(self.client, dest_id, KEY_MAP_ARTIFACT) or {}
            metrics = {**old.get("metrics", {}), **metrics}
        return metadata.key_map_doc(full, metrics)

    @on_run("EDIT")
    def put_file(self, dest_id: str, path: str, stream: IO[bytes]) -> None:
        check_relpath(path, "artifact path")
        folder, name = posixpath.split(path)
        log_stream(self.client, dest_id, folder or None, name, stream)

    @on_run("EDIT")
    def begin_update(self, dest_id: str) -> None:
        """Mark a run as being changed (``bridge.complete`` = "false") before appending."""
        self.client.set_tag(dest_id, COMPLETE_TAG, "false")

    @on_run("EDIT")
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
                metadata.put_json_files(self.client, dest_id, {"key-map.json": doc})
        self.client.set_tag(dest_id, FINGERPRINT_TAG, fingerprint)
        kill_point("mlflow.finish.after_fingerprint")
        self.client.set_tag(dest_id, COMPLETE_TAG, "true")
        self.logged_models.sync_run(dest_id, run)  # after: see logged_copy.py

    def file_location(self, dest_id: str, path: str) -> str | None:
        """``runs:/<run id>/<path>``: what a registry version made from run files points at."""
        return f"runs:/{dest_id}/{path.strip('/')}"

    # ------------------------------------------------------------------ deletion

    @on_run("EDIT")
    def set_tags(self, dest_id: str, tags: dict[str, str]) -> None:
        """Set tags only (no side files): how a source deletion is marked (--on-delete tag)."""
        from mlflow.entities import RunTag

        self.client.log_batch(dest_id, tags=[RunTag(k, v) for k, v in tags.items()])

    @on_run("MANAGE")
    def delete_run(self, dest_id: str) -> None:
        """MLflow's own (soft) delete, restorable until the store is garbage-collected."""
        self.client.delete_run(dest_id)

    # ---- --two-way: editable fields (editable.py), here or at an MLflow source -------

    def editable_from_tags(self, tags: dict[str, str]) -> Editable:
        """W&B runs hold a tag list; others labels (tags outside the kind's own names)."""
        kind = kinds.source_kind(tags.get(SOURCE_ID_TAG))
        rules = kinds.mapping_for(self.mapping, kind)
        return editable.editable_of_tags(tags, rules, kind == kinds.WANDB)

    def is_editable_tag(self, key: str) -> bool:
        return editable.is_editable_tag(key, self.mapping)

    @on_run("EDIT")
    def set_editable(self, dest_id: str, changes: dict[str, str | None]) -> None:
        tags = dict(self.client.get_run(dest_id).data.tags)
        editable.apply_edits(self.client, dest_id, tags, changes, self.mapping)

    def run_id_of(self, header: RunHeader) -> str:
        """The MLflow reader's native id is the run id."""
        return header.native_id

    def close(self) -> None:
        self.close_log_batch_pool()
        self._client_obj = None
        if self._bulk_engine_obj:
            self._bulk_engine_obj.dispose()
        self._bulk_engine_obj = None
