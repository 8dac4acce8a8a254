"""Per pair: the cycles it ran, the runs it listed (for deletions) and its last filters."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from bridge.redact import redact
from bridge.state.base import StoreBase
from bridge.state.sql import insert_absent, inserted_id, upsert
from bridge.state.tables import cycles_table, members_table, pair_filters_table, passes_table


class PairsMixin(StoreBase):
    """Cycles, pair membership and pair filters."""

    # -- cycles (mirror / sync history) -------------------------------------------------
    def start_cycle(self, source_uri: str, dest_uri: str, host: str, pid: int) -> int:
        """A row written before the cycle runs: a cycle killed mid-way stays visible."""
        with self._tx() as conn:
            key = inserted_id(
                conn.execute(
                    sa.insert(cycles_table).values(
                        source_uri=source_uri,
                        dest_uri=dest_uri,
                        started_at=time.time(),
                        host=host,
                        pid=pid,
                    )
                )
            )
        return int(key)

    def end_cycle(
        self,
        cycle_id: int,
        result: int,
        counts: dict[str, Any] | None = None,
        errors: list[str] | None = None,
        skipped: str | None = None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                sa.update(cycles_table)
                .where(cycles_table.c.id == cycle_id)
                .values(
                    ended_at=time.time(),
                    result=result,
                    counts=json.dumps(counts or {}, sort_keys=True),
                    # the bridge's own messages (backend errors quote URLs): no credentials
                    errors=json.dumps([redact(e) for e in errors or []]),
                    skipped=redact(skipped) if skipped else skipped,
                )
            )

    def cycles(
        self, source_uri: str | None = None, dest_uri: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Recent cycles, newest first, with JSON columns decoded."""
        q = sa.select(cycles_table).order_by(cycles_table.c.id.desc()).limit(limit)
        if source_uri is not None:
            q = q.where(cycles_table.c.source_uri == source_uri)
        if dest_uri is not None:
            q = q.where(cycles_table.c.dest_uri == dest_uri)
        with self._tx() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q).all()]
        for row in rows:
            row["counts"] = json.loads(row["counts"]) if row["counts"] else {}
            row["errors"] = json.loads(row["errors"]) if row["errors"] else []
        return rows

    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, dest) pair that has run a cycle or started a sharded pass (whose
        cycle record is written by its final step: until then the pass is all there is)."""
        c, p = cycles_table.c, passes_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.union(sa.select(c.source_uri, c.dest_uri), sa.select(p.source_uri, p.dest_uri))
            ).all()
        return sorted((r.source_uri, r.dest_uri) for r in rows)

    def count_pair_members(self, source_uri: str, dest_uri: str) -> tuple[int, int]:
        """(runs this pair has listed, of them lost by a complete listing), counted by the
        database: `bridge status` of a 100,000-run pair reads two numbers, not the ids."""
        m = members_table.c
        q = sa.select(sa.func.count(), sa.func.count(m.deleted_at)).where(
            m.source_uri == source_uri, m.dest_uri == dest_uri
        )
        with self._tx() as conn:
            known, deleted = conn.execute(q).one()
        return int(known), int(deleted)

    # -- pair membership (for deletions at the source) ---------------------------------
    def pair_members(self, source_uri: str, dest_uri: str) -> dict[str, float | None]:
        """Source ids this pair has listed, with when a complete listing lost them."""
        m = members_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(m.source_id, m.deleted_at).where(
                    m.source_uri == source_uri, m.dest_uri == dest_uri
                )
            ).all()
        return {r.source_id: r.deleted_at for r in rows}

    def add_pair_members(self, source_uri: str, dest_uri: str, source_ids: list[str]) -> None:
        """Remember newly listed runs (and un-delete any that came back)."""
        if not source_ids:
            return
        known = self.pair_members(source_uri, dest_uri)
        now = time.time()
        m = members_table.c
        with self._tx() as conn:
            for sid in source_ids:
                if sid not in known:  # if absent: a concurrent sync may just have added it
                    row = {"source_uri": source_uri, "dest_uri": dest_uri, "source_id": sid}
                    insert_absent(conn, members_table, {**row, "first_seen": now})
                elif known[sid] is not None:
                    conn.execute(
                        sa.update(members_table)
                        .where(m.source_uri == source_uri, m.dest_uri == dest_uri)
                        .where(m.source_id == sid)
                        .values(deleted_at=None)
                    )

    def mark_deleted(self, source_uri: str, dest_uri: str, source_id: str) -> None:
        m = members_table.c
        with self._tx() as conn:
            conn.execute(
                sa.update(members_table)
                .where(m.source_uri == source_uri, m.dest_uri == dest_uri)
                .where(m.source_id == source_id, m.deleted_at.is_(None))
                .values(deleted_at=time.time())
            )

    # -- the filters of a pair's last sync (verify's default scope) --------------------
    def put_pair_filters(self, source_uri: str, dest_uri: str, filters: dict[str, Any]) -> None:
        """Remember the reader filters a real sync of this pair ran with."""
        key = {"source_uri": source_uri, "dest_uri": dest_uri}
        values = {"filters": json.dumps(filters, sort_keys=True), "synced_at": time.time()}
        with self._tx() as conn:
            upsert(conn, pair_filters_table, key, values)

    def pair_filters(self, source_uri: str, dest_uri: str) -> dict[str, Any] | None:
        """The filters of this pair's last real sync (None: never synced)."""
        f = pair_filters_table.c
        with self._tx() as conn:
            text = conn.execute(
                sa.select(f.filters).where(f.source_uri == source_uri, f.dest_uri == dest_uri)
            ).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))
