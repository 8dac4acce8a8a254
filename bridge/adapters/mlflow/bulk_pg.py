"""PostgreSQL's side of the bulk metric sink (bulk.py): ``COPY FROM STDIN``.

Two ways into ``metrics``, both in the caller's transaction (a flush killed anywhere
leaves nothing or everything):

* **direct**: ``COPY metrics FROM STDIN`` — MLflow's own table, its primary key and
  indexes, nothing in between (what the raw insert limit of bench/p1_offline_to_sql.py
  measures). ``COPY`` cannot skip a row, so one row equal to a stored one fails the flush;
* **checked**: ``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT
  DO NOTHING`` into ``metrics``: re-sent rows add nothing.

When a key's rows may go direct. The primary key of ``metrics`` is (key, timestamp, step,
run_uuid, value, is_nan) (MLflow's ``SqlMetric``; the same constraint ``metric_pk`` in the
PostgreSQL schema its migrations build), so two rows of one run and key collide only if
their steps are equal. The sink keeps, per key of its run, a *high step*: the largest
step stored when it first saw the key (``FRONTIER``: one backward scan of the index
(run_uuid, key, step) per key; NULL for a fresh run or key) raised by every step of its
own committed flushes. A key's rows in a flush go direct when their steps, in the order
they were added, are strictly increasing and the first is above the key's high step: then
no row equals a stored row (its step is above every stored step of its key) nor another
row of the flush (their steps differ). Any other key's rows take the checked path in the
same transaction — rows of a re-sent flush after a crash (steps at or below the high
step), a resumed or adopted run's points that interleave with stored ones, late points
merged inside a watermark, repeated steps. The keys are disjoint, so neither path's rows
can collide with the other's. Nothing here trusts the state store's watermarks: the high
step is read from the destination, so a state that is behind or lost only sends rows down
the checked path. Another writer can still add an equal row between the frontier read and
the ``COPY`` (a user logging into the same run): the ``COPY`` then fails with a unique
violation (SQLSTATE 23505), bulk.py rolls the flush back and sends it again, every row
checked, and that sink sends checked from then on — never a failed run, never a duplicate.

Not done, on purpose: ``synchronous_commit = off`` for the flush's transaction. A commit
acknowledged but lost in a database crash would leave the state store's watermark (another
database, recorded after the flush) counting points the destination no longer has — the
next sync would skip them. It would be safe only if the watermark were committed in the
same transaction, which it is not.

One text payload serves both drivers MLflow users have: psycopg 3 (SQLAlchemy 2.1's
default for ``postgresql://``) and psycopg2.
"""

from __future__ import annotations

import io
from typing import Any

TEMP = "bridge_metrics_in"
# ON COMMIT DELETE ROWS: each flush starts from an empty table on a pooled connection.
CREATE = f"CREATE TEMPORARY TABLE IF NOT EXISTS {TEMP} (LIKE metrics) ON COMMIT DELETE ROWS"
# The rows' tuple order (bulk.COLUMNS; not imported: bulk.py imports this module).
COLS = "key, value, timestamp, run_uuid, step, is_nan"
COPY = f"COPY {TEMP} ({COLS}) FROM STDIN"
COPY_DIRECT = f"COPY metrics ({COLS}) FROM STDIN"
MOVE = f"INSERT INTO metrics ({COLS}) SELECT {COLS} FROM {TEMP} ON CONFLICT DO NOTHING"
#: Per key, the largest stored step of the run (NULL: none): an index lookup per key.
FRONTIER = (
    "SELECT k, (SELECT max(step) FROM metrics WHERE run_uuid = %s AND key = k) "
    "FROM unnest(%s::text[]) AS k"
)
UNIQUE_VIOLATION = "23505"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(rows: list[tuple[Any, ...]], driver: str) -> str:
    """``COPY`` text format of the rows. ``repr`` of a float is the shortest string that
    reads back as the same double, as the drivers send floats themselves — except that
    psycopg2 sends -0.0 as the SQL literal ``-0.0``, a numeric that becomes +0.0, so
    ``log_batch`` through psycopg2 stores +0.0: ``v + 0.0`` does the same (and nothing else).
    Steps and timestamps are ``int`` and values ``float`` or ``int`` (``MetricChunk``
    validates them; ``sanitize`` writes a NaN as 0), which the adding makes a float: no
    conversions per row (they were half of this function's time)."""
    keys = {key: key.translate(_ESCAPES) for key in {row[0] for row in rows}}
    zero = 0.0 if driver == "psycopg2" else -0.0  # x + -0.0 is x, -0.0 included
    flag = {False: "f", True: "t"}
    return "".join(
        [f"{keys[k]}\t{v + zero!r}\t{t}\t{r}\t{s}\t{flag[n]}\n" for k, v, t, r, s, n in rows]
    )


def _copy(cur: Any, driver: str, sql: str, text: str) -> None:
    if driver == "psycopg":
        with cur.copy(sql) as copy:
            copy.write(text)
    else:  # psycopg2
        cur.copy_expert(sql, io.StringIO(text))


def frontier(cur: Any, run_id: str, keys: list[str]) -> dict[str, int | None]:
    """The largest stored step of each of the run's ``keys`` (None: no row)."""
    cur.execute(FRONTIER, (run_id, keys))
    return {key: None if step is None else int(step) for key, step in cur.fetchall()}


def copy_rows(cur: Any, driver: str, rows: list[tuple[Any, ...]], direct: bool = False) -> None:
    """Insert ``rows`` into ``metrics`` in the open transaction: straight (``direct``: the
    caller knows none of them is stored, module docstring) or skipping stored ones."""
    if direct:
        _copy(cur, driver, COPY_DIRECT, copy_text(rows, driver))
        return
    cur.execute(CREATE)
    _copy(cur, driver, COPY, copy_text(rows, driver))
    cur.execute(MOVE)


def is_unique_violation(exc: BaseException) -> bool:
    """A psycopg 3 or psycopg2 error for a duplicate key (what a direct ``COPY`` raises)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code == UNIQUE_VIOLATION
