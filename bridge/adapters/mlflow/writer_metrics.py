"""The MLflow writer's metric side: a sink per run (log_batch, or Core bulk inserts on
SQL stores: bulk.py), the keys it had to rename, and points read back (features.MetricReadBack)
so a stream that changed inside its watermark is merged exactly."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

from bridge.adapters.base import MetricSink, Notices
from bridge.adapters.features import MetricReadBack
from bridge.adapters.mlflow import metadata
from bridge.adapters.mlflow.access import on_run
from bridge.adapters.mlflow.history import chunks_of_pages, rest_metric_pages, sql_metric_chunks
from bridge.adapters.mlflow.ids import dest_run_source_id
from bridge.adapters.mlflow.names import KEY_MAP_ARTIFACT
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.adapters.mlflow.sink_pool import DEFAULT_IN_FLIGHT, ConcurrentMetricSink, LogBatchPool
from bridge.mapping import restore_key, sanitize_key
from bridge.schema import MetricChunk


class MetricStorage(MetricReadBack):
    """Mixin of :class:`~bridge.adapters.mlflow.writer.MlflowWriter` (its ``client``,
    ``kind``, ``target``, ``_lock``, ``bulk_metrics``, ``_bulk_engine_obj`` and the
    per-run ``_source_ids``/``_metric_renames``; its ``notices`` take the sinks' reports)."""

    client: Any
    kind: str
    target: str
    bulk_metrics: bool
    notices: Notices
    _lock: threading.Lock
    _bulk_engine_obj: Any
    _source_ids: dict[str, str]
    _metric_renames: dict[str, dict[str, str]]
    #: ``log_batch`` requests in flight per writer on servers (sink_pool.py); ≤ 1: one at a
    #: time (``BRIDGE_LOG_BATCH_IN_FLIGHT``, e.g. for a server that wants a single client).
    log_batch_in_flight: int = int(os.environ.get("BRIDGE_LOG_BATCH_IN_FLIGHT", DEFAULT_IN_FLIGHT))
    _log_batch_pool: LogBatchPool | None = None

    def metric_sink(self, dest_id: str) -> MetricSink:
        """Core bulk inserts when the URI is the database itself, ``log_batch`` otherwise:
        several requests in flight on servers (in-process stores gain nothing from threads)."""
        with self._lock:
            source_id = self._source_ids.get(dest_id, dest_run_source_id(dest_id))
            renames = self._metric_renames.setdefault(dest_id, {})
        engine = self._bulk_engine()
        if engine is not None:
            from bridge.adapters.mlflow.bulk import SqlBulkMetricSink

            return SqlBulkMetricSink(engine, dest_id, source_id, renames, self._lock, self.notices)
        if self.kind == "http" and self.log_batch_in_flight > 1:
            with self._lock:
                if self._log_batch_pool is None:
                    self._log_batch_pool = LogBatchPool(self.log_batch_in_flight)
                pool = self._log_batch_pool
            sink: _NamedConcurrentSink | _NamedSink = _NamedConcurrentSink(
                self.client, dest_id, source_id, renames, self._lock, self.notices, pool
            )
        else:
            sink = _NamedSink(self.client, dest_id, source_id, renames, self._lock, self.notices)
        sink.guard = self._refusal_named
        return sink

    @on_run("EDIT")
    def _refusal_named(self, dest_id: str, call: Callable[[], None]) -> None:
        """``call()``, a write into run ``dest_id``: a 403 names the run's experiment."""
        call()

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

    def close_log_batch_pool(self) -> None:
        """Wait for the pool's threads and stop them (the writer's ``close``)."""
        with self._lock:
            pool, self._log_batch_pool = self._log_batch_pool, None
        if pool is not None:
            pool.close()

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
            doc = metadata.read_json_artifact(self.client, dest_id, KEY_MAP_ARTIFACT) or {}
            inverse = {v: k for k, v in doc.get("metrics", {}).items()}
        return {
            restore_key(k, inverse): len(self.client.get_metric_history(dest_id, k)) for k in keys
        }

    def read_metric_points(self, dest_id: str, keys: Collection[str]) -> Iterator[MetricChunk]:
        """Stored points of these (source-named) keys: SQL stores straight from the
        ``metrics`` table in one streamed query, servers ``get-history`` page by page."""
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


class _NamedSink(MlflowMetricSink):
    """A sink whose refused ``log_batch`` (403) names the run's experiment."""

    guard: Callable[[str, Callable[[], None]], None]

    def _send(self) -> None:
        send = super()._send
        self.guard(self.run_id, send)


class _NamedConcurrentSink(ConcurrentMetricSink):
    """The same for the concurrent sink (its requests, on the pool's threads)."""

    guard: Callable[[str, Callable[[], None]], None]

    def _post(self, batch: list[tuple[str, float, int, int]]) -> None:
        post = super()._post
        self.guard(self.run_id, lambda: post(batch))
