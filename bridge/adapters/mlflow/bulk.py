"""Bulk metric writes straight into an MLflow SQL store (sqlite, PostgreSQL, MySQL).

MLflow's ``log_batch`` spends nearly all its time building one ORM object per point. For
a tracking URI that *is* the database, this sink inserts rows with SQLAlchemy Core into
MLflow's own tables (taken from MLflow's own models, so the schema is MLflow's), the way
``mlflow migrate-filestore`` does. It keeps MLflow's semantics:

* NaN is stored as value 0 with ``is_nan``; ±inf as ±1.7976931348623157e308
  (``SqlAlchemyStore.sanitize_metric_value``);
* a point already stored (same key, timestamp, step, value, is_nan) is skipped, as the
  primary key makes MLflow do;
* ``latest_metrics`` is updated when a new point is more recent by (step, timestamp,
  value), exactly as ``_update_latest_metrics_if_necessary`` decides.

Each flush is one transaction. Servers (``http://``) keep using ``log_batch``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from bridge.adapters.base import Notices
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.faults import kill_point
from bridge.schema import MetricChunk

BULK_ROWS = 10_000


def bulk_insert_supported(engine: Any) -> bool:
    return engine.dialect.name in ("sqlite", "postgresql", "mysql")


class SqlBulkMetricSink(MlflowMetricSink):
    """A :class:`MlflowMetricSink` that writes rows with Core inserts in big transactions."""

    def __init__(
        self,
        engine: Any,
        run_id: str,
        source_id: str,
        renames: dict[str, str],
        lock: threading.Lock,
        notices: Notices,
    ) -> None:
        super().__init__(None, run_id, source_id, renames, lock, notices)
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self._engine = engine
        self._metrics = SqlMetric.__table__
        self._latest = SqlLatestMetric.__table__
        # MLflow's own NaN/±inf rule (an instance method that uses no instance state)
        self._sanitize = functools.partial(SqlAlchemyStore.sanitize_metric_value, None)  # type: ignore[arg-type]
        self._rows: list[dict[str, Any]] = []

    def add(self, chunk: MetricChunk) -> None:
        stored, _ = self._keys.get(chunk.key) or self._key(chunk.key)
        run_id, sanitize = self.run_id, self._sanitize
        for step, timestamp, value in zip(chunk.steps, chunk.timestamps, chunk.values, strict=True):
            is_nan, clean = sanitize(value)
            self._rows.append(
                {
                    "key": stored,
                    "value": clean,
                    "timestamp": timestamp,
                    "step": step,
                    "is_nan": is_nan,
                    "run_uuid": run_id,
                }
            )
        if len(self._rows) >= BULK_ROWS:
            self._send()

    def _insert(self) -> Any:
        dialect = self._engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(self._metrics).on_conflict_do_nothing()
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self._metrics).on_conflict_do_nothing()
        return self._metrics.insert().prefix_with("IGNORE")

    def _send(self) -> None:
        if not self._rows:
            return
        import sqlalchemy as sa

        rows, self._rows = self._rows, []
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            best = newest.get(row["key"])
            if best is None or (row["step"], row["timestamp"], row["value"]) > (
                best["step"],
                best["timestamp"],
                best["value"],
            ):
                newest[row["key"]] = row
        latest = self._latest
        kill_point("mlflow.bulk.before_send")
        with self._engine.begin() as conn:
            conn.execute(self._insert(), rows)
            kill_point("mlflow.bulk.mid_transaction")
            for key, row in sorted(newest.items()):
                where = (latest.c.run_uuid == self.run_id) & (latest.c.key == key)
                have = conn.execute(
                    sa.select(latest.c.step, latest.c.timestamp, latest.c.value).where(where)
                ).first()
                values = {k: row[k] for k in ("value", "timestamp", "step", "is_nan")}
                if have is None:
                    conn.execute(latest.insert().values(run_uuid=self.run_id, key=key, **values))
                elif (row["step"], row["timestamp"], row["value"]) > tuple(have):
                    conn.execute(latest.update().where(where).values(**values))
        kill_point("mlflow.bulk.after_send")
        self.points_sent += len(rows)
