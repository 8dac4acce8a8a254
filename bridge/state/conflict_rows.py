"""Conflict and resolution rows: matching one conflict, inserting rows."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bridge.state.sql import inserted_id, matches
from bridge.state.tables import conflicts_table, resolutions_table


def conflict_match(
    dest_uri: str, source_id: str, field: str, source_value: str | None, dest_value: str | None
) -> Any:
    """The conflict rows (open or not) for exactly this field and these two values."""
    c = conflicts_table.c
    return (
        (c.dest_uri == dest_uri)
        & (c.source_id == source_id)
        & (c.field == field)
        & matches(c.source_value, source_value)
        & matches(c.dest_value, dest_value)
    )


def insert_resolution(
    conn: sa.Connection,
    conflict_id: int,
    choice: str,
    resolved_by: str,
    resolved_at: float,
    note: str | None,
    dest_uri: str,
    source_id: str,
    field: str,
    source_value: str | None,
    dest_value: str | None,
) -> int:
    """Insert the settlement of conflict ``conflict_id``; returns its id."""
    result = conn.execute(
        sa.insert(resolutions_table).values(
            conflict_id=conflict_id,
            dest_uri=dest_uri,
            source_id=source_id,
            field=field,
            choice=choice,
            source_value=source_value,
            dest_value=dest_value,
            resolved_by=resolved_by,
            resolved_at=resolved_at,
            note=note,
        )
    )
    return inserted_id(result)


def insert_conflict(
    conn: sa.Connection,
    dest_uri: str,
    source_id: str,
    field: str,
    source_value: str | None,
    dest_value: str | None,
    synced_value: str | None,
    detected_at: float | None = None,
) -> int:
    """Insert an open conflict row; returns its id."""
    values = conflict_values(
        dest_uri, source_id, field, source_value, dest_value, synced_value, detected_at
    )
    return inserted_id(conn.execute(sa.insert(conflicts_table).values(**values)))


def conflict_values(
    dest_uri: str,
    source_id: str,
    field: str,
    source_value: str | None,
    dest_value: str | None,
    synced_value: str | None,
    detected_at: float | None = None,
) -> dict[str, Any]:
    """The columns of a new open conflict row."""
    return {
        "dest_uri": dest_uri,
        "source_id": source_id,
        "field": field,
        "source_value": source_value,
        "dest_value": dest_value,
        "synced_value": synced_value,
        "detected_at": time.time() if detected_at is None else detected_at,
        "resolved": False,
    }


def row_conflict_key(row: Any) -> str:
    """A stored conflict row's identity, as :func:`bridge.state.conflict_key` makes it."""
    return f"{row.field}\x00{row.source_value}\x00{row.dest_value}"
