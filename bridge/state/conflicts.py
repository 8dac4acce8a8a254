"""Conflicts and their settlements: recorded once, resolved by a person or a policy."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.claims import Fence, check_fence
from bridge.state.conflict_rows import (
    conflict_match,
    conflict_values,
    insert_conflict,
    insert_resolution,
    row_conflict_key,
)
from bridge.state.records import Resolution
from bridge.state.sql import insert_absent, native_insert
from bridge.state.tables import conflicts_table, resolutions_table


class ConflictsMixin(StoreBase):
    """Open conflicts, resolutions and superseded rows."""

    # -- conflicts --------------------------------------------------------------------
    def record_conflict(
        self,
        dest_uri: str,
        source_id: str,
        field: str,
        source_value: str | None,
        dest_value: str | None,
        synced_value: str | None,
        fence: Fence | None = None,
    ) -> None:
        """Record a conflict once; an identical open one is not recorded again (on SQLite
        and PostgreSQL the database guarantees it, for concurrent writers too). ``fence``:
        the pass's claim on the run (bridge/state/claims.py ``check_fence``)."""
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            if native_insert(conn) is not None:  # the one-open-conflict index decides
                row = conflict_values(
                    dest_uri, source_id, field, source_value, dest_value, synced_value
                )
                insert_absent(conn, conflicts_table, row)
                return
            match = conflict_match(dest_uri, source_id, field, source_value, dest_value)
            existing = conn.execute(
                sa.select(conflicts_table.c.id).where(match, conflicts_table.c.resolved.is_(False))
            ).first()
            if existing is None:
                insert_conflict(
                    conn, dest_uri, source_id, field, source_value, dest_value, synced_value
                )

    def open_conflicts(self, dest_uri: str | None = None) -> list[dict[str, Any]]:
        query = (
            sa.select(conflicts_table)
            .where(conflicts_table.c.resolved.is_(False))
            .order_by(conflicts_table.c.id)
        )
        if dest_uri is not None:
            query = query.where(conflicts_table.c.dest_uri == dest_uri)
        with self._tx() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]

    def get_conflict(self, conflict_id: int) -> dict[str, Any] | None:
        """One conflict row (open or resolved), with its latest resolution if any."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(conflicts_table).where(conflicts_table.c.id == conflict_id)
            ).first()
            if row is None:
                return None
            out = dict(row._mapping)
            res = conn.execute(
                sa.select(resolutions_table)
                .where(resolutions_table.c.conflict_id == conflict_id)
                .order_by(resolutions_table.c.id.desc())
            ).first()
        out["resolution"] = dict(res._mapping) if res is not None else None
        return out

    def resolve_conflict(
        self,
        dest_uri: str,
        source_id: str,
        field: str,
        source_value: str | None,
        dest_value: str | None,
        choice: str,
        resolved_by: str,
        note: str | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Record a settlement and close every open conflict it covers; returns the
        resolution id. A conflict no earlier sync recorded (a policy settling it on first
        sight) is inserted already closed, so the audit trail is complete."""
        now = time.time()
        c = conflicts_table.c
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            match = conflict_match(dest_uri, source_id, field, source_value, dest_value)
            open_ids = sa.select(c.id).where(match, c.resolved.is_(False)).order_by(c.id)
            ids = [r.id for r in conn.execute(open_ids)]
            if not ids:  # inserted unless a concurrent sync just recorded it (then closed)
                row = conflict_values(
                    dest_uri, source_id, field, source_value, dest_value, None, now
                )
                insert_absent(conn, conflicts_table, row)
                ids = [r.id for r in conn.execute(open_ids)]
            conn.execute(sa.update(conflicts_table).where(c.id.in_(ids)).values(resolved=True))
            res_id = insert_resolution(
                conn,
                ids[-1],
                choice,
                resolved_by,
                now,
                note,
                dest_uri,
                source_id,
                field,
                source_value,
                dest_value,
            )
        return int(res_id)

    def resolutions(self, dest_uri: str, source_id: str) -> dict[str, Resolution]:
        """The latest settlement per field of one run (what the planner honours)."""
        r = resolutions_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(resolutions_table)
                .where(r.dest_uri == dest_uri, r.source_id == source_id)
                .order_by(r.id)
            ).all()
        out: dict[str, Resolution] = {}
        for row in rows:
            if row.choice in ("source", "dest"):
                out[row.field] = Resolution.model_validate(dict(row._mapping))
        return out

    def close_stale_conflicts(
        self,
        dest_uri: str,
        source_id: str,
        current: set[str],
        fields: tuple[str, ...] | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Close open conflicts of a run that its latest full comparison no longer finds
        (someone fixed one side by hand, or the source moved on): recorded as superseded.
        ``fields``: only conflicts whose field starts with one of these (what was compared)."""
        c = conflicts_table.c
        now = time.time()
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            rows = conn.execute(
                sa.select(conflicts_table).where(
                    c.dest_uri == dest_uri, c.source_id == source_id, c.resolved.is_(False)
                )
            ).all()
            stale = [
                row
                for row in rows
                if row_conflict_key(row) not in current
                and (fields is None or row.field.startswith(fields))
            ]
            for row in stale:
                conn.execute(sa.update(conflicts_table).where(c.id == row.id).values(resolved=True))
                insert_resolution(
                    conn,
                    row.id,
                    "superseded",
                    "bridge",
                    now,
                    "no longer found by a later sync",
                    dest_uri,
                    source_id,
                    row.field,
                    row.source_value,
                    row.dest_value,
                )
        return len(stale)
