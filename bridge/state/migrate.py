"""Creating the tables of a new store and bringing an older store up to date (new tables
and indexes only: existing tables' columns and rows are never changed)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bridge.state.conflict_rows import insert_resolution
from bridge.state.tables import conflicts_table, metadata


def create_tables(engine: sa.Engine, attempts: int = 10, indexes: bool = True) -> None:
    """Create missing tables and indexes. Two processes opening a new store at once race on
    CREATE TABLE (SQLite: "already exists" / "database is locked"); the loser looks again.
    New tables and indexes only (``IF NOT EXISTS``): existing stores keep opening.
    ``indexes=False`` (a read-only store): the index that guards writes waits for a writer,
    which may first have to close duplicate rows of an older store."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            if indexes:
                create_missing_indexes(engine)
                _create_open_conflict_index(engine)
            return
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def create_missing_indexes(engine: sa.Engine) -> None:
    """Every index of the tables (``tables.py``) that the store lacks: ``create_all``
    creates a table's indexes only with the table, so a store made before an index was
    added gets it here (``CREATE INDEX IF NOT EXISTS``; two openers may race: the caller
    retries)."""
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


#: At most one open conflict per (destination, run, field, both values), enforced by the
#: database: a partial unique index over the open rows. Values can be long (PostgreSQL's
#: btree rows are limited to ~2.7 kB), so PostgreSQL indexes their MD5; ``IS NULL`` keeps
#: NULL apart from "" (unique indexes treat NULLs as distinct).
OPEN_CONFLICT_INDEX = "bridge_conflicts_one_open"
_OPEN_CONFLICT_DDL = {
    "sqlite": (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {OPEN_CONFLICT_INDEX} ON bridge_conflicts "
        "(dest_uri, source_id, field, ifnull(source_value, ''), (source_value IS NULL), "
        "ifnull(dest_value, ''), (dest_value IS NULL)) WHERE NOT resolved"
    ),
    "postgresql": (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {OPEN_CONFLICT_INDEX} ON bridge_conflicts "
        "(dest_uri, source_id, field, md5(coalesce(source_value, '')), (source_value IS NULL), "
        "md5(coalesce(dest_value, '')), (dest_value IS NULL)) WHERE NOT resolved"
    ),
}
_INDEX_EXISTS = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n",
    "postgresql": "SELECT 1 FROM pg_indexes WHERE indexname = :n",
}


def _create_open_conflict_index(engine: sa.Engine) -> None:
    """The one-open-conflict index; duplicates an older bridge recorded are closed first
    (superseded by the oldest open row), or the index could not be built."""
    ddl = _OPEN_CONFLICT_DDL.get(engine.dialect.name)
    if ddl is None:
        return  # another database: record_conflict checks before inserting (best effort)
    with engine.begin() as conn:
        probe = sa.text(_INDEX_EXISTS[engine.dialect.name])
        if conn.execute(probe, {"n": OPEN_CONFLICT_INDEX}).first() is not None:
            return
        _close_duplicate_conflicts(conn)
        conn.execute(sa.text(ddl))


def _close_duplicate_conflicts(conn: sa.Connection) -> None:
    """Close every open conflict row that repeats an older open one (same run, field and
    values), recorded as superseded."""
    c = conflicts_table.c
    rows = conn.execute(
        sa.select(conflicts_table).where(c.resolved.is_(False)).order_by(c.id)
    ).all()
    first: dict[tuple[str | None, ...], int] = {}
    for row in rows:
        key = (row.dest_uri, row.source_id, row.field, row.source_value, row.dest_value)
        if key not in first:
            first[key] = row.id
            continue
        conn.execute(sa.update(conflicts_table).where(c.id == row.id).values(resolved=True))
        insert_resolution(
            conn,
            row.id,
            "superseded",
            "bridge",
            time.time(),
            f"duplicate of open conflict #{first[key]}",
            row.dest_uri,
            row.source_id,
            row.field,
            row.source_value,
            row.dest_value,
        )
