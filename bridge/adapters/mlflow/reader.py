"""``mlflow:TRACKING_URI`` as a source: experiments and runs of an MLflow tracking store.

Works with any tracking URI MLflow accepts (``sqlite:///f.db``, ``postgresql://...``,
``mysql://...``, ``http(s)://host:port``, ``file:PATH``). Listing and run bodies go through
``MlflowClient``; metric history of SQL stores is read straight from the ``metrics`` table
with one streamed query per run (MLflow's own API builds a Python object per point and
holds a whole key in memory), and of REST servers page by page through the
``metrics/get-history`` endpoint.

Mapping decisions (see also :meth:`MlflowReader.read_run`):

* ``display_uri`` and every source id carry the URI without ``user:password@`` and without
  secret-looking query parameters, so credentials never reach state, tags or reports.
* Params stay a flat ``{key: str}`` config; run tags travel verbatim in ``extra_tags``
  except ``mlflow.runName``/``mlflow.user``/``mlflow.note.content`` (carried as name, user,
  notes) and every ``bridge.*`` tag (left by an earlier bridge import; re-exporting them
  would give the copy a wrong identity).
* A run the MLflow writer imported from W&B (tag ``bridge.source_id`` = ``wandb:...``)
  reads as that W&B run — typed config and summary from ``bridge/*.json``, W&B fields from
  ``wandb.*`` tags, original metric keys, ±inf points — under its own MLflow identity
  (see ``from_wandb``). Only these runs cost the extra downloads.
* Points of one metric key are ordered by ``(timestamp, step, value, is_nan)`` — MLflow's
  own ``get_metric_history`` order, i.e. logging order. Not by step: the engine resumes a
  key past the points already written, which is cheapest when new points land at the end
  of the order, and a live run's new points carry new timestamps but may repeat or go
  back in step. A point logged late with an older timestamp lands inside that order: the
  engine's per-key digest notices and merges the key (``bridge/engine/streams.py``).
  Equal-step points are all kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.features import EditableSource, RegistrySource
from bridge.adapters.mlflow import editable, run_objects
from bridge.adapters.mlflow.access import check_error, denied
from bridge.adapters.mlflow.files import download_to_temp, local_dir
from bridge.adapters.mlflow.from_wandb import (
    HISTORY_EXTRAS_JSONL,
    LOCATOR_EXTRAS,
    is_wandb_import,
    non_finite_points,
    restore_non_finite,
    restore_wandb_fields,
)
from bridge.adapters.mlflow.from_wandb import LOCATOR_KEY as WANDB_KEYS
from bridge.adapters.mlflow.from_wandb import metric_key as wandb_metric_key
from bridge.adapters.mlflow.history import (  # noqa: F401 - CHUNK_POINTS: named here too
    CHUNK_POINTS,
    chunks_of_pages,
    point_stats,
    rest_metric_pages,
    sql_metric_chunks,
)
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.items import MlflowItemSource
from bridge.adapters.mlflow.presence import MlflowPresence
from bridge.adapters.mlflow.reader_check import (
    check_file_store,
    check_sql_tables,
    check_sqlite_file,
)
from bridge.adapters.mlflow.reader_listing import Recent, RunListing
from bridge.adapters.mlflow.registry_read import RegistryReader
from bridge.adapters.mlflow.strict_rest import strict_reads
from bridge.adapters.mlflow.uri import MlflowStore, check_server, quick_http
from bridge.errors import BridgeError, RunError
from bridge.mapping import load_mapping
from bridge.paths import check_relpath
from bridge.schema import (
    ArtifactVersion,
    Editable,
    FileRef,
    HistoryItem,
    ManifestEntry,
    MetricChunk,
    RegisteredModel,
    Run,
    RunHeader,
    RunStatus,
)

SEARCH_PAGE = 1000
#: Runs whose metric keys read_run keeps for iter_history (a sync holds O(workers) bodies).
KEYS_KEPT = 256
#: Run tags carried in dedicated Run fields instead of ``extra_tags``.
FIELD_TAGS = ("mlflow.runName", "mlflow.user", "mlflow.note.content", "mlflow.parentRunId")
BRIDGE_PREFIX = "bridge."
BRIDGE_SOURCE_TAG = "bridge.source_id"
#: Folder of metadata files the MLflow writer stores beside imported runs.
BRIDGE_ARTIFACT_DIR = "bridge"


_STATUS: dict[str, RunStatus] = {
    "RUNNING": "RUNNING",
    "SCHEDULED": "RUNNING",
    "FINISHED": "FINISHED",
    "FAILED": "FAILED",
    "KILLED": "KILLED",
}


class MlflowReader(
    MlflowStore,
    RunListing,
    Reader,
    RegistrySource,
    EditableSource,
    MlflowItemSource,
    MlflowPresence,
):
    """Reads experiments, runs, metric history and artifacts from an MLflow tracking store.

    Fingerprint (:meth:`fingerprint_of`): a hash of what ``search_runs`` already returns —
    status, start/end time, lifecycle stage, name, params, all tags, every key's latest
    metric (key, value, step, timestamp), dataset inputs and model outputs — so a new point,
    an edited tag, a status change or a deletion each change it at no extra call.
    When the run's artifacts live on the local file system (``file:`` or a plain path), a
    walk of that folder (path, size, mtime) is hashed in too: cheap, no MLflow call. For
    remote artifact stores (``mlflow-artifacts:``, s3, ...) artifacts are not part of the
    fingerprint unless ``fingerprint_artifacts=True`` (one or more listing calls per run).

    Late points: ``search_runs`` shows only each key's latest point (highest (step,
    timestamp, value)), so a point logged at a lower step or with an older timestamp does
    not change it. SQL stores add, for all runs of a listing page in ONE grouped query on
    the ``metrics`` table, each key's point count (:func:`point_stats`): every new point
    changes the fingerprint. The query scans MLflow's ``(run_uuid, key, step)`` index over
    the listed runs' points (measured here, loaded 2-core machine: 5M points in ~1.8 s). Servers offer no such
    query (one ``get-history`` per key and run would make every listing O(points)): there a
    point that does not become its key's latest is found by ``--full`` (every run's history
    is read and checked against the per-key watermarks and digests), or by the next sync
    that finds any other change in the run. The engine then merges the stream (see
    ``bridge/engine/streams.py``).

    NOT detected: remote-store artifact changes by default; edits of dataset/model
    entities other than their links.
    """

    scheme = "mlflow"

    def __init__(
        self,
        target: str,
        options: ReaderOptions | None = None,
        *,
        fingerprint_artifacts: bool | None = None,
    ) -> None:
        super().__init__(target, options)
        self._init_store(target)
        #: None = hash local artifact folders only; True = list remote ones too; False = never.
        self.fingerprint_artifacts = fingerprint_artifacts
        self._engine_obj: Any = None
        self._artifact_uris: dict[str, str] = Recent()  # bounded (reader_listing.py)
        self.listed_models_kept: dict[str, list[Any]] = {}
        #: Metric keys of each run as read_run's get_run found them, for iter_history.
        self._keys_read: dict[str, list[str]] = {}
        #: Registered models and their versions' content (registry.py).
        self.registry = RegistryReader(self, self.options)

    # ------------------------------------------------------------------ basics

    @property
    def engine(self) -> Any:
        """A SQLAlchemy engine on the tracking database (SQL stores only)."""
        if self._engine_obj is None:
            with self._lock:
                if self._engine_obj is None:
                    import sqlalchemy

                    self._engine_obj = sqlalchemy.create_engine(self.target)
        return self._engine_obj

    def close(self) -> None:
        if self._engine_obj is not None:
            self._engine_obj.dispose()
            self._engine_obj = None

    def _open_client(self) -> Any:
        """The shared client; on a server its read calls refuse damaged answers
        (strict_rest.py: MLflow reads an empty 200 body as an empty message)."""
        client = super()._open_client()
        if self.kind == "http":
            strict_reads(getattr(getattr(client, "_tracking_client", None), "store", None))
        return client

    # ------------------------------------------------------------------ check

    def check(self) -> None:
        """Fail fast with one line naming the store and the fix if it cannot be read."""
        where = self.display_uri
        if self.kind == "sqlite":
            check_sqlite_file(self.target, self.display_uri)
        elif self.kind == "file":
            check_file_store(self.target, self.display_uri)
        elif self.kind == "http":
            check_server(self.target)
        if self.kind in ("sqlite", "sql"):
            check_sql_tables(self.target, self.kind, self.display_uri, self._scrub)
        try:
            with quick_http(self.kind):
                self.client.search_experiments(max_results=1)
                if self.options.experiments and not self.experiments():
                    raise self.no_match_error()
        except BridgeError:
            raise
        except Exception as exc:
            raise check_error(exc, where, self.target) or BridgeError(
                f"{where}: cannot read this MLflow tracking store ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); check the URI, credentials and that it is reachable"
            ) from None

    # ------------------------------------------------------------------ run body

    def _get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            raise RunError(f"MLflow run {run_id}: {self._scrub(str(exc))}") from None

    def read_run(self, header: RunHeader) -> Run:
        """The run body; params → flat ``config``, tags → ``extra_tags`` (see module doc),
        dataset inputs and logged models → ``artifacts``, artifact files → ``files``."""
        if header.locator.get("denied"):  # an experiment the server refuses (reader_listing)
            raise denied(self.display_uri, header.locator["denied"], "READ")
        mlrun = self._get_run(header.native_id)
        info, data = mlrun.info, mlrun.data
        self._artifact_uris[info.run_id] = info.artifact_uri
        if self.kind not in ("sqlite", "sql"):
            with self._lock:
                self._keys_read[info.run_id] = sorted(data.metrics)
                if len(self._keys_read) > KEYS_KEPT:  # bodies whose history is never read
                    del self._keys_read[next(iter(self._keys_read))]
        tags = dict(data.tags)
        imported = BRIDGE_SOURCE_TAG in tags
        run = Run(
            header=header,
            name=info.run_name or tags.get("mlflow.runName") or None,
            # "unknown" is MLflow's placeholder for "no user", not a user
            user=tags.get("mlflow.user") or (info.user_id if info.user_id != "unknown" else None),
            notes=tags.get("mlflow.note.content") or None,
            start_time_ms=info.start_time,
            end_time_ms=info.end_time,
            status=_STATUS.get(info.status, "RUNNING"),
            config=dict(sorted(data.params.items())),
            extra_tags={
                k: v
                for k, v in sorted(tags.items())
                if k not in FIELD_TAGS and not k.startswith(BRIDGE_PREFIX)
            },
        )
        if tags.get("mlflow.parentRunId"):
            run.parent_source_id = object_source_id(self.display_uri, tags["mlflow.parentRunId"])
        if info.status not in _STATUS:
            run.status_reason = f"MLflow status {info.status}"
        run.artifacts = run_objects.datasets(mlrun) + run_objects.models(self, mlrun)
        bridge_files: set[str] = set()
        try:
            for f in run_objects.walk_artifacts(
                self.client, info.run_id, None, local_dir(info.artifact_uri)
            ):
                if imported and f.path.split("/", 1)[0] == BRIDGE_ARTIFACT_DIR:
                    bridge_files.add(f.path)
                else:
                    run.files.append(f)
        except Exception as exc:
            # Files left uncopied: the run fails (and is retried), it is never "done".
            raise RunError(
                f"MLflow run {info.run_id}: artifacts cannot be listed: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        if is_wandb_import(tags):
            # Reading bridge/*.json costs a download each: only for runs imported from W&B.
            key_map = restore_wandb_fields(
                run, tags, bridge_files, lambda path: self._json_artifact(info.run_id, path)
            )
            locator = {**header.locator, WANDB_KEYS: key_map}
            if HISTORY_EXTRAS_JSONL in bridge_files:
                locator[LOCATOR_EXTRAS] = HISTORY_EXTRAS_JSONL
            run.header = header.model_copy(update={"locator": locator})
        return run

    def _json_artifact(self, run_id: str, path: str) -> Any:
        """One small JSON artifact (NaN/Infinity tokens allowed), or None if unreadable."""
        try:
            with self.open_file(FileRef(path=path, locator={"run_id": run_id, "path": path})) as fh:
                return json.loads(fh.read().decode("utf-8"))
        except (RunError, OSError, ValueError):
            return None

    # ------------------------------------------------------------------ history

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        """Every point of every metric key, one key per chunk of ≤ ``CHUNK_POINTS``.

        Points of a key come in ``(timestamp, step, value, is_nan)`` order (see module doc).
        SQL stores: one streamed query over the ``metrics`` table (keys in the database's
        collation order). REST servers: ``metrics/get-history`` page by page, keys sorted.
        """
        run_id = run.header.native_id
        if self.kind in ("sqlite", "sql"):
            chunks = self._sql_history(run_id)
        else:
            chunks = self._api_history(run_id)
        key_map = run.header.locator.get(WANDB_KEYS)
        if key_map is None:
            yield from chunks
            return
        # A run imported from W&B: metric keys the MLflow writer encoded get their W&B name,
        # points MLflow holds as ±max float their ±inf (recorded in the extras file).
        infs = self._non_finite(run) if run.header.locator.get(LOCATOR_EXTRAS) else {}
        for chunk in chunks:
            chunk.key = wandb_metric_key(chunk.key, key_map)
            if infs:
                restore_non_finite(chunk, infs)
            yield chunk

    def _non_finite(self, run: Run) -> dict[tuple[str, int, int], float]:
        ref = FileRef(
            path=HISTORY_EXTRAS_JSONL,
            locator={"run_id": run.header.native_id, "path": HISTORY_EXTRAS_JSONL},
        )
        try:
            with self.open_file(ref) as fh:
                return non_finite_points(fh)
        except (RunError, OSError):
            return {}

    def _sql_history(self, run_id: str) -> Iterator[MetricChunk]:
        return sql_metric_chunks(self.engine, run_id)

    def _metric_keys(self, run_id: str) -> list[str]:
        """The keys read_run's ``get_run`` saw (taken once: a second history read asks
        again), else a ``get_run`` now: one request per run less on a server."""
        with self._lock:
            keys = self._keys_read.pop(run_id, None)
        return keys if keys is not None else sorted(self._get_run(run_id).data.metrics)

    def _api_history(self, run_id: str) -> Iterator[MetricChunk]:
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        paged = self.kind == "http" and hasattr(store, "get_metric_history")
        for key in self._metric_keys(run_id):
            if paged:
                pages = rest_metric_pages(store, run_id, key)
            else:
                pages = iter([self.client.get_metric_history(run_id, key)])
            yield from chunks_of_pages(key, pages)

    # ------------------------------------------------------------------ files

    def open_file(self, ref: FileRef) -> IO[bytes]:
        """Open one artifact: straight from a local artifact folder, else a temp download
        that is deleted when the returned file is closed."""
        run_id = str(ref.locator.get("run_id") or "")
        path = str(ref.locator.get("path") or ref.path)
        if not run_id:
            raise RunError(f"not an artifact of this reader: {ref.path!r}")
        check_relpath(path, f"artifact path of MLflow run {run_id}")
        artifact_uri = self._artifact_uris.get(run_id)
        if artifact_uri is None:
            artifact_uri = self._get_run(run_id).info.artifact_uri
            self._artifact_uris[run_id] = artifact_uri
        local = local_dir(artifact_uri)
        if local is not None and (local / path).is_file():
            return open(local / path, "rb")  # noqa: SIM115 - the caller closes it
        return download_to_temp(
            lambda folder: self.client.download_artifacts(run_id, path, dst_path=folder),
            RunError,
            f"artifact {path!r} of MLflow run {run_id}",
            self._scrub,
        )

    # ---- registry and --two-way (edits are written by a writer on this store) ---------

    def editable(self, header: RunHeader) -> Editable:
        """Notes and labels (user tags) of a source run, read fresh."""
        tags = dict(self.client.get_run(header.native_id).data.tags)
        return editable.editable_of_tags(tags, load_mapping(None), wandb_sourced=False)

    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Every registered model (all of them unless ``options.registries`` names some,
        whatever ``options.experiments`` says: a version's run may be out of scope)."""
        return self.registry.list_registered_models()

    def open_artifact_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        return self.registry.open_entry(art, entry)
