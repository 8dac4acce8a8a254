"""Bulk metric writes straight into an MLflow SQL store (sqlite, PostgreSQL, MySQL).

MLflow's ``log_batch`` spends nearly all its time building one ORM object per point. For
a tracking URI that *is* the database, this sink writes rows into MLflow's own tables the
way ``mlflow migrate-filestore`` does, as plain tuples through the DBAPI cursor (SQLAlchemy
Core's per-row parameter processing cost more than sqlite's own insert): sqlite
``INSERT ... ON CONFLICT DO NOTHING`` ``executemany``; PostgreSQL ``COPY`` straight into
``metrics`` for the keys whose rows cannot be stored yet (their steps above the run's
stored ones), the rest through a temporary table and ``INSERT ... ON CONFLICT DO NOTHING``
(bulk_pg.py says when, and why it stays exact); other dialects/drivers Core inserts.
It keeps ``log_batch``'s semantics (tests/test_bulk_differential.py compares the rows):

* NaN is stored as value 0 with ``is_nan``; ±inf as ±1.7976931348623157e308
  (``SqlAlchemyStore.sanitize_metric_value``);
* a point already stored (same key, timestamp, step, value, is_nan: MLflow's primary key)
  is skipped, so a flush re-sent after a crash adds nothing;
* ``latest_metrics`` takes a point only if it is strictly more recent by (step, timestamp,
  sanitized value) than what is there, the first of equals winning, exactly as
  ``_update_latest_metrics_if_necessary`` decides: one upsert per key whose ``WHERE``
  is that comparison.

Each flush is one transaction. Servers (``http://``) keep using ``log_batch``.
"""

from __future__ import annotations

import math
import operator
import threading
from itertools import islice, repeat
from typing import Any

from bridge.adapters.base import Notices
from bridge.adapters.mlflow.bulk_pg import COLS, copy_rows, frontier, is_unique_violation
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.errors import BridgeError
from bridge.faults import kill_point
from bridge.schema import MetricChunk

BULK_ROWS = 10_000
#: A row's tuple order (the ``metrics`` columns); ``Newest`` is (step, timestamp, value, is_nan).
COLUMNS = tuple(COLS.split(", "))
Row = tuple[str, float, int, str, int, bool]
Newest = tuple[int, int, float, bool]
MAX_FLOAT = 1.7976931348623157e308
# Same comparison as MLflow's _compare_metrics; row values need sqlite >= 3.15 (or PostgreSQL).
# The value is kept when equal: MLflow's ORM writes no change for -0.0 over 0.0 (or 0.0 over
# a NaN's stored 0), so the stored sign stays — on PostgreSQL through psycopg 3 it shows.
UPSERT_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (key, run_uuid) DO UPDATE SET value = "
    "CASE WHEN latest_metrics.value = excluded.value THEN latest_metrics.value "
    "ELSE excluded.value END, timestamp = excluded.timestamp, step = excluded.step, "
    "is_nan = excluded.is_nan WHERE (excluded.step, excluded.timestamp, excluded.value) > "
    "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)
# Skips primary-key duplicates only (OR IGNORE would also skip NOT NULL/CHECK failures).
SQLITE_INSERT = f"INSERT INTO metrics ({COLS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def bulk_insert_supported(engine: Any) -> bool:
    return engine.dialect.name in ("sqlite", "postgresql", "mysql")


def sanitize(values: list[float]) -> tuple[list[float], list[bool] | None]:
    """MLflow's ``sanitize_metric_value`` for a whole chunk: (values, is_nan flags or None
    when none is NaN); all-finite chunks (nearly all) pass through untouched."""
    if all(map(math.isfinite, values)):
        return values, None
    flags = [math.isnan(v) for v in values]
    clean = [
        0 if nan else v if math.isfinite(v) else MAX_FLOAT if v > 0 else -MAX_FLOAT
        for v, nan in zip(values, flags, strict=True)
    ]
    return clean, flags


def fast_path(engine: Any) -> str | None:
    """The DBAPI path this engine takes: "sqlite", "psycopg", "psycopg2", or None (Core)."""
    dialect, driver = engine.dialect.name, engine.dialect.driver
    if dialect == "sqlite" and driver == "pysqlite":
        return "sqlite"
    if dialect == "postgresql" and driver in ("psycopg", "psycopg2"):
        return str(driver)
    return None


class SqlBulkMetricSink(MlflowMetricSink):
    """A :class:`MlflowMetricSink` that writes row tuples in big transactions."""

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
        self._engine = engine
        self._path = fast_path(engine)
        self._rows: list[Row] = []
        #: Per stored key, the flush's most recent point by MLflow's rule.
        self._newest: dict[str, Newest] = {}
        #: PostgreSQL (bulk_pg.py): per stored key, the flush's [first step, largest step,
        #: steps strictly increasing in the order added] ...
        self._spans: dict[str, list[Any]] = {}
        #: ... and the largest step the destination holds (None: no row) as last known.
        self._high: dict[str, int | None] = {}
        #: False once a direct ``COPY`` met a stored row: every later flush checked.
        self._direct = self._path in ("psycopg", "psycopg2")
        #: Rows sent by direct ``COPY`` / through the checked path; flushes sent again.
        self.direct_rows = self.checked_rows = self.redone_flushes = 0

    def add(self, chunk: MetricChunk) -> None:
        stored, _ = self._keys.get(chunk.key) or self._key(chunk.key)
        steps, stamps, n = chunk.steps, chunk.timestamps, len(chunk.steps)
        if len(stamps) != n or len(chunk.values) != n:
            raise ValueError(f"metric chunk {chunk.key!r}: columns of different lengths")
        if not n:
            return
        values, flags = sanitize(chunk.values)
        nans = repeat(False) if flags is None else flags
        self._rows.extend(zip(repeat(stored), values, stamps, repeat(self.run_id), steps, nans))
        # max() over (step, timestamp, value, -index): the first of equal points wins
        step, stamp, value, neg = max(zip(steps, stamps, values, range(0, -n, -1), strict=True))
        best = (step, stamp, value, False if flags is None else flags[-neg])
        have = self._newest.get(stored)
        if have is None or best[:3] > have[:3]:
            self._newest[stored] = best
        if self._direct:
            rising = n == 1 or all(map(operator.lt, steps, islice(steps, 1, None)))
            span = self._spans.get(stored)
            if span is None:
                self._spans[stored] = [steps[0], step, rising]
            else:
                span[2] = span[2] and rising and steps[0] > span[1]
                span[1] = max(span[1], step)
        if len(self._rows) >= BULK_ROWS:
            self._send()

    def _send(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        newest, self._newest = self._newest, {}
        spans, self._spans = self._spans, {}
        latest = [(k, v, t, s, nan, self.run_id) for k, (s, t, v, nan) in sorted(newest.items())]
        kill_point("mlflow.bulk.before_send")
        if self._path is None:
            self._send_core(rows, latest)
        else:
            raw = self._engine.raw_connection()
            try:
                cur = raw.cursor()
                if self._path == "sqlite":
                    cur.executemany(SQLITE_INSERT, rows)
                elif not self._direct:
                    copy_rows(cur, self._path, rows)
                    self.checked_rows += len(rows)
                else:
                    try:
                        self._copy_pg(cur, rows, spans)
                    except Exception as exc:
                        if not is_unique_violation(exc):
                            raise
                        # Another writer stored one of these rows since the frontier was
                        # read: all of the flush again, checked (bulk_pg.py).
                        raw.rollback()
                        self._direct = False
                        self.redone_flushes += 1
                        cur = raw.cursor()
                        copy_rows(cur, self._path, rows)
                        self.checked_rows += len(rows)
                kill_point("mlflow.bulk.mid_transaction")
                cur.executemany(
                    UPSERT_LATEST.format(p="?" if self._path == "sqlite" else "%s"), latest
                )
                cur.close()
                raw.commit()
            finally:
                raw.close()  # back to the pool, which rolls back what was not committed
            for key, (_, top, _) in spans.items():  # all of them stored now
                high = self._high.get(key)
                self._high[key] = top if high is None else max(high, top)
        kill_point("mlflow.bulk.after_send")
        self.points_sent += len(rows)

    def _copy_pg(self, cur: Any, rows: list[Row], spans: dict[str, list[Any]]) -> None:
        """PostgreSQL, in the flush's transaction: the rows of keys that cannot be stored
        yet by direct ``COPY``, the others checked (bulk_pg.py's rule)."""
        path = self._path
        assert path is not None
        unknown = [key for key in spans if key not in self._high]
        if unknown:
            self._high.update(frontier(cur, self.run_id, unknown))
        direct = set()
        for key, (first, _, rising) in spans.items():
            high = self._high[key]
            if rising and (high is None or first > high):
                direct.add(key)
        if len(direct) == len(spans):
            go, checked = rows, []
        elif not direct:
            go, checked = [], rows
        else:
            go = [row for row in rows if row[0] in direct]
            checked = [row for row in rows if row[0] not in direct]
        if go:
            copy_rows(cur, path, go, direct=True)
        if checked:
            copy_rows(cur, path, checked)
        self.direct_rows += len(go)
        self.checked_rows += len(checked)

    def _send_core(self, rows: list[Row], latest: list[tuple[Any, ...]]) -> None:
        """Other dialects/drivers (MySQL): a Core INSERT that skips primary-key duplicates
        only (``ON DUPLICATE KEY UPDATE`` a no-op: ``INSERT IGNORE`` would also turn a
        foreign-key or out-of-range error into a warning), and a SELECT ... FOR UPDATE, then
        an INSERT or UPDATE, per key for ``latest_metrics``.

        A database whose collation compares keys case- or accent-insensitively (MySQL's
        default ``utf8mb4_general_ci``) holds ``loss`` and ``Loss`` as one key: MLflow's own
        ``log_batch`` fails on them (a duplicate ``latest_metrics`` row); so does this sink,
        rather than store one key's points under the other's latest value."""
        import sqlalchemy as sa
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

        metrics, table = SqlMetric.__table__, SqlLatestMetric.__table__
        insert: Any = metrics.insert().prefix_with("IGNORE")  # type: ignore[attr-defined]
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            insert = pg_insert(metrics).on_conflict_do_nothing()
        elif self._engine.dialect.name == "mysql":
            from sqlalchemy.dialects.mysql import insert as my_insert

            insert = my_insert(metrics).on_duplicate_key_update(run_uuid=metrics.c.run_uuid)
        with self._engine.begin() as conn:
            conn.execute(insert, [dict(zip(COLUMNS, row, strict=True)) for row in rows])
            kill_point("mlflow.bulk.mid_transaction")
            for key, value, stamp, step, is_nan, run_id in latest:
                where = (table.c.run_uuid == run_id) & (table.c.key == key)
                have = conn.execute(
                    sa.select(table.c.key, table.c.step, table.c.timestamp, table.c.value)
                    .where(where)
                    .with_for_update()
                ).first()
                new = {"value": value, "timestamp": stamp, "step": step, "is_nan": is_nan}
                if have is None:
                    conn.execute(table.insert().values(run_uuid=run_id, key=key, **new))
                elif have[0] != key:
                    raise BridgeError(
                        f"metric keys {have[0]!r} and {key!r} of MLflow run {run_id} are one "
                        "key to this database (its collation ignores case or accents); "
                        "MLflow cannot keep both either: use a database created with "
                        "COLLATE utf8mb4_bin"
                    )
                elif (step, stamp, value) > tuple(have[1:]):
                    if value == have[3]:  # as UPSERT_LATEST: -0.0 over 0.0 keeps the sign
                        del new["value"]
                    conn.execute(table.update().where(where).values(**new))
