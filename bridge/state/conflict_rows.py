"""Conflict and resolution rows: matching one conflict, inserting rows."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bridge.state.sql import _eq, _pk
from bridge.state.tables import conflicts_table, resolutions_table


def _conflict_match(
    dest_uri: str, source_id: str, field: str, source_value: str | None, dest_value: str | None
) -> Any:
    """The conflict rows (open or not) for exactly this field and these two values."""
    c = conflicts_table.c
    return (
        (c.dest_uri == dest_uri)
        & (c.source_id == source_id)
        & (c.field == field)
        & _eq(c.source_value, source_value)
        & _eq(c.dest_value, dest_value)
    )


def _insert_resolution(
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
    return _pk(result)


def _insert_conflict(
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
    values = _conflict_values(
        dest_uri, source_id, field, source_value, dest_value, synced_value, detected_at
    )
    return _pk(conn.execute(sa.insert(conflicts_table).values(**values)))


def _conflict_values(
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


def _conflict_key(row: Any) -> str:
    return f"{row.field}\x00{row.source_value}\x00{row.dest_value}"
