"""PostgreSQL's side of the bulk metric sink (bulk.py): ``COPY FROM STDIN``.

``COPY`` cannot skip rows that are already stored, so the rows go into a temporary table
first and from there into ``metrics`` with ``ON CONFLICT DO NOTHING`` — in the caller's
transaction, so a flush killed anywhere leaves nothing or everything, and re-sent rows
add nothing. One text payload serves both drivers MLflow users have: psycopg 3
(SQLAlchemy 2.1's default for ``postgresql://``) and psycopg2.
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
MOVE = f"INSERT INTO metrics ({COLS}) SELECT {COLS} FROM {TEMP} ON CONFLICT DO NOTHING"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(rows: list[tuple[Any, ...]], driver: str) -> str:
    """``COPY`` text format of the rows. ``repr`` of a float is the shortest string that
    reads back as the same double, as the drivers send floats themselves — except that
    psycopg2 sends -0.0 as the SQL literal ``-0.0``, a numeric that becomes +0.0, so
    ``log_batch`` through psycopg2 stores +0.0: ``v + 0.0`` does the same (and nothing else)."""
    keys = {key: key.translate(_ESCAPES) for key in {row[0] for row in rows}}
    zero = 0.0 if driver == "psycopg2" else -0.0  # x + -0.0 is x, -0.0 included
    return "".join(
        [
            f"{keys[k]}\t{float(v) + zero!r}\t{int(t)}\t{r}\t{int(s)}\t{'t' if n else 'f'}\n"
            for k, v, t, r, s, n in rows
        ]
    )


def copy_rows(cur: Any, driver: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` into ``metrics`` (skipping stored ones) in the open transaction."""
    cur.execute(CREATE)
    text = copy_text(rows, driver)
    if driver == "psycopg":
        with cur.copy(COPY) as copy:
            copy.write(text)
    else:  # psycopg2
        cur.copy_expert(COPY, io.StringIO(text))
    cur.execute(MOVE)
