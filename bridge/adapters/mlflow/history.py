"""Metric history of an MLflow store in chunks: SQL stores straight from the ``metrics``
table (one streamed query), servers page by page through ``metrics/get-history``. Used by
the reader (history of a source run) and the writer (points read back to merge a stream).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from bridge.schema import MetricChunk

#: Points per MetricChunk (one key per chunk).
CHUNK_POINTS = 1000
#: Rows fetched per round trip from the SQL ``metrics`` table.
SQL_FETCH_ROWS = 5000
#: Points per ``metrics/get-history`` page on REST servers (MLflow's own page size).
REST_PAGE_POINTS = 25_000


def quoted_key(engine: Any) -> str:
    """The ``key`` column as this dialect must name it (a reserved word in MySQL: `key`)."""
    return str(engine.dialect.identifier_preparer.quote("key"))


def point_stats(engine: Any, run_ids: list[str]) -> dict[str, list[list[Any]]]:
    """Per run: ``[key, points]`` for every metric key, sorted, from ONE grouped query over
    the ``metrics`` table. MLflow never updates or deletes a point (logging the same point
    again is a no-op), so any point added to a key changes its count, wherever it lands in
    the key's order. Only the count: MLflow's ``(run_uuid, key, step)`` index covers it,
    so the database scans that index, never the rows (measured here: ~2.5x faster than
    adding timestamp aggregates, which need the rows)."""
    import sqlalchemy

    if not run_ids:
        return {}
    key = quoted_key(engine)
    query = sqlalchemy.text(
        f"SELECT run_uuid, {key}, COUNT(*) FROM metrics WHERE run_uuid IN :ids "
        f"GROUP BY run_uuid, {key}"
    ).bindparams(sqlalchemy.bindparam("ids", expanding=True))
    out: dict[str, list[list[Any]]] = {}
    with engine.connect() as conn:
        for run_id, key, n in conn.execute(query, {"ids": run_ids}):
            out.setdefault(run_id, []).append([key, int(n)])
    for rows in out.values():
        rows.sort()
    return out


def sql_metric_chunks(
    engine: Any, run_id: str, keys: Collection[str] | None = None
) -> Iterator[MetricChunk]:
    """A run's points straight from the ``metrics`` table, one streamed query, keys in the
    database's order and each key's points in ``(timestamp, step, value, is_nan)`` order;
    only ``keys`` (stored names) when given."""
    import sqlalchemy

    col = quoted_key(engine)
    sql = f"SELECT {col}, timestamp, step, value, is_nan FROM metrics WHERE run_uuid = :run_id"
    params: dict[str, Any] = {"run_id": run_id}
    if keys is not None:
        sql += f" AND {col} IN :keys"
        params["keys"] = sorted(keys)
    query = sqlalchemy.text(sql + f" ORDER BY {col}, timestamp, step, value, is_nan")
    if keys is not None:
        query = query.bindparams(sqlalchemy.bindparam("keys", expanding=True))
    nan = math.nan
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=SQL_FETCH_ROWS).execute(
            query, params
        )
        key: str | None = None
        steps: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        for rows in result.partitions():
            for k, ts, step, value, is_nan in rows:
                if k != key or len(steps) >= CHUNK_POINTS:
                    if steps and key is not None:
                        yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)
                    key, steps, stamps, values = k, [], [], []
                steps.append(int(step))
                stamps.append(int(ts))
                values.append(nan if is_nan else float(value))
        if steps and key is not None:
            yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)


def rest_metric_pages(store: Any, run_id: str, key: str) -> Iterator[list[Any]]:
    """``metrics/get-history`` page by page (the server orders by timestamp, step, value)."""
    token: str | None = None
    while True:
        page = store.get_metric_history(run_id, key, max_results=REST_PAGE_POINTS, page_token=token)
        yield list(page)
        token = getattr(page, "token", None)
        if not token:
            return


def chunks_of_pages(key: str, pages: Iterable[list[Any]]) -> Iterator[MetricChunk]:
    """Pages of MLflow ``Metric`` objects → chunks of ≤ ``CHUNK_POINTS``."""
    buf: list[Any] = []
    for page in pages:
        buf.extend(page)
        while len(buf) >= CHUNK_POINTS:
            yield _chunk(key, buf[:CHUNK_POINTS])
            del buf[:CHUNK_POINTS]
    if buf:
        yield _chunk(key, buf)


def _chunk(key: str, metrics: list[Any]) -> MetricChunk:
    return MetricChunk(
        key=key,
        steps=[int(m.step) for m in metrics],
        timestamps=[int(m.timestamp) for m in metrics],
        values=[float(m.value) for m in metrics],
    )
