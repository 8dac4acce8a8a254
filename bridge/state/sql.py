"""Portable statements: atomic upserts and insert-if-absent on SQLite and PostgreSQL, with
a fallback for other databases."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa


def native_insert(conn: sa.Connection) -> Any:
    """The dialect's ``INSERT ... ON CONFLICT`` construct, or None where there is none."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    return None


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    key: dict[str, Any],
    values: dict[str, Any],
    keep_max: tuple[str, ...] = (),
) -> None:
    """Insert the row with this primary ``key``, or update it: one atomic statement
    (``ON CONFLICT DO UPDATE``) on SQLite and PostgreSQL, so concurrent writers of one key
    never raise IntegrityError. Columns in ``keep_max`` never go down (compare-and-set:
    the stored value stays when it is higher)."""
    insert = native_insert(conn)
    if insert is None:
        _upsert_portable(conn, table, key, values, keep_max)
        return
    stmt = insert(table).values(**key, **values)
    changes = {name: stmt.excluded[name] for name in values}
    for name in keep_max:
        changes[name] = _greater(stmt.excluded[name], table.c[name])
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=changes))


def upsert_many(
    conn: sa.Connection,
    table: sa.Table,
    key: tuple[str, ...],
    rows: list[dict[str, Any]],
    keep_max: tuple[str, ...] = (),
) -> None:
    """:func:`upsert` for many rows of one shape (primary ``key`` columns + values) in one
    ``executemany`` of one statement: a flush of N changed keys costs one round trip per
    batch of rows, not N statements."""
    if not rows:
        return
    values = [name for name in rows[0] if name not in key]
    insert = native_insert(conn)
    if insert is None:
        for row in rows:
            keys = {name: row[name] for name in key}
            _upsert_portable(conn, table, keys, {n: row[n] for n in values}, keep_max)
        return
    stmt = insert(table)
    changes = {name: stmt.excluded[name] for name in values}
    for name in keep_max:
        changes[name] = _greater(stmt.excluded[name], table.c[name])
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=changes), rows)


def _greater(new: Any, old: Any) -> Any:
    """``max(new, old)`` in SQL that SQLite and PostgreSQL both read (PostgreSQL's max is an
    aggregate only, SQLite has no GREATEST)."""
    return sa.case((new > old, new), else_=old)


def _upsert_portable(
    conn: sa.Connection,
    table: sa.Table,
    key: dict[str, Any],
    values: dict[str, Any],
    keep_max: tuple[str, ...],
) -> None:
    """UPDATE, else INSERT; a concurrent insert of the same key turns into the UPDATE."""
    where = sa.and_(*(table.c[name] == value for name, value in key.items()))
    changes: dict[str, Any] = dict(values)
    for name in keep_max:
        changes[name] = _greater(sa.literal(values[name]), table.c[name])
    update = sa.update(table).where(where).values(**changes)
    if conn.execute(update).rowcount == 0 and not insert_absent(conn, table, {**key, **values}):
        conn.execute(update)


def insert_absent(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless a row with the same unique key exists; True when inserted.
    Atomic (``ON CONFLICT DO NOTHING``) on SQLite and PostgreSQL."""
    insert = native_insert(conn)
    if insert is not None:
        stmt = insert(table).values(**row).on_conflict_do_nothing()
        # rowcount of an INSERT is only kept on request (SQLAlchemy 2; psycopg gives -1)
        return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(**row))
    except sa.exc.IntegrityError:
        return False
    return True


def inserted_id(result: Any) -> int:
    """The new row's integer key (typed, for mypy)."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def matches(column: Any, value: str | None) -> Any:
    """``column = value`` that also matches NULL to None."""
    return column.is_(None) if value is None else column == value


def drop_run_rows(
    conn: sa.Connection, dest_uri: str, source_id: str, tables: tuple[sa.Table, ...]
) -> None:
    """Delete one run's rows from ``tables``."""
    for table in tables:
        conn.execute(
            sa.delete(table).where(table.c.dest_uri == dest_uri, table.c.source_id == source_id)
        )


def key_hash(text: str) -> str:
    """A fixed-width key for arbitrary-length identities (paths can be long)."""
    return hashlib.sha256(text.encode()).hexdigest()
