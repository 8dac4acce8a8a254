"""Sharded passes and deferred parent links (see bridge/passes.py and engine/links.py)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import sqlalchemy as sa

from bridge.redact import redact
from bridge.state.base import StoreBase
from bridge.state.sql import insert_absent
from bridge.state.tables import (
    parent_links_table,
    pass_open_table,
    pass_shards_table,
    passes_table,
)


def new_pass_id(now: float) -> str:
    """A pass id: its UTC start and a random part (sortable, unique)."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{uuid.uuid4().hex[:8]}"


class PassesMixin(StoreBase):
    """Passes, their shards, the final step's compare-and-set; pending parent links."""

    # -- passes --------------------------------------------------------------------------
    def join_pass(
        self,
        source_uri: str,
        dest_uri: str,
        count: int,
        shard: int,
        holder: str,
        pass_id: str | None = None,
    ) -> str:
        """The pass this index runs in, its row taken (or taken over) by ``holder``: the
        given ``pass_id``; else the pass shards of this pair and count are joining, unless
        its final step ran or this index already ended in it: then a new one."""
        now = time.time()
        p, s = passes_table.c, pass_shards_table.c
        with self._tx() as conn:
            if pass_id is None:
                o = pass_open_table.c
                key = (o.source_uri == source_uri) & (o.dest_uri == dest_uri)
                key = key & (o.shard_count == count)
                for _ in range(5):
                    current = conn.execute(sa.select(o.pass_id).where(key)).scalar()
                    if current is not None and self._joinable(conn, current, shard):
                        pass_id = current
                        break
                    new = new_pass_id(now)
                    if current is None:
                        slot = {"source_uri": source_uri, "dest_uri": dest_uri}
                        won = insert_absent(
                            conn, pass_open_table, slot | {"shard_count": count, "pass_id": new}
                        )
                    else:  # compare-and-set: replace the pass this index cannot join
                        won = (
                            conn.execute(
                                sa.update(pass_open_table)
                                .where(key & (o.pass_id == current))
                                .values(pass_id=new)
                            ).rowcount
                            == 1
                        )
                    if won:
                        pass_id = new
                        break
                assert pass_id is not None, "could not open a pass"
            insert_absent(
                conn,
                passes_table,
                {
                    "pass_id": pass_id,
                    "source_uri": source_uri,
                    "dest_uri": dest_uri,
                    "shard_count": count,
                    "started_at": now,
                },
            )
            found = conn.execute(sa.select(p.shard_count).where(p.pass_id == pass_id)).scalar()
            if found != count:
                raise ValueError(f"pass {pass_id} has {found} shards, not {count}")
            row: dict[str, Any] = {"holder": holder, "heartbeat": now, "ended_at": None}
            row["result"] = None
            mine = (s.pass_id == pass_id) & (s.shard == shard)
            if not conn.execute(sa.update(pass_shards_table).where(mine).values(**row)).rowcount:
                new_row = {"pass_id": pass_id, "shard": shard, "started_at": now}
                conn.execute(sa.insert(pass_shards_table).values(**new_row, **row))
        return pass_id

    @staticmethod
    def _joinable(conn: sa.Connection, pass_id: str, shard: int) -> bool:
        p, s = passes_table.c, pass_shards_table.c
        final = conn.execute(sa.select(p.final_state).where(p.pass_id == pass_id)).first()
        if final is not None and final[0] is not None:
            return False
        ended = conn.execute(
            sa.select(s.ended_at).where((s.pass_id == pass_id) & (s.shard == shard))
        ).scalar()
        return ended is None

    def beat_shard(self, pass_id: str, shard: int, holder: str) -> None:
        s = pass_shards_table.c
        with self._tx() as conn:
            conn.execute(
                sa.update(pass_shards_table)
                .where((s.pass_id == pass_id) & (s.shard == shard) & (s.holder == holder))
                .values(heartbeat=time.time())
            )

    def end_shard(
        self,
        pass_id: str,
        shard: int,
        holder: str,
        result: int,
        counts: dict[str, Any] | None,
        errors: list[str],
    ) -> None:
        s = pass_shards_table.c
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                sa.update(pass_shards_table)
                .where((s.pass_id == pass_id) & (s.shard == shard) & (s.holder == holder))
                .values(
                    ended_at=now,
                    heartbeat=now,
                    result=result,
                    counts=json.dumps(counts or {}, sort_keys=True),
                    errors=json.dumps([redact(e) for e in errors]),
                )
            )

    def get_pass(self, pass_id: str) -> dict[str, Any] | None:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(passes_table).where(passes_table.c.pass_id == pass_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def pass_shards(self, pass_id: str) -> list[dict[str, Any]]:
        s = pass_shards_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(pass_shards_table).where(s.pass_id == pass_id).order_by(s.shard)
            ).all()
        out = []
        for row in rows:
            d = dict(row._mapping)
            d["counts"] = json.loads(d["counts"]) if d["counts"] else {}
            d["errors"] = json.loads(d["errors"]) if d["errors"] else []
            out.append(d)
        return out

    def passes(
        self, source_uri: str | None = None, dest_uri: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Passes, newest first."""
        p = passes_table.c
        q = sa.select(passes_table).order_by(p.started_at.desc()).limit(limit)
        if source_uri is not None:
            q = q.where(p.source_uri == source_uri)
        if dest_uri is not None:
            q = q.where(p.dest_uri == dest_uri)
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(q).all()]

    def take_final(self, pass_id: str, holder: str, stale_before: float | None = None) -> bool:
        """Compare-and-set: True for exactly one caller (the final step not taken yet; or,
        with ``stale_before``, taken by a holder that stopped renewing it before then)."""
        p, o = passes_table.c, pass_open_table.c
        free: Any = p.final_state.is_(None)
        if stale_before is not None:
            free = free | ((p.final_state == "running") & (p.final_at < stale_before))
        with self._tx() as conn:
            won = conn.execute(
                sa.update(passes_table)
                .where((p.pass_id == pass_id) & free)
                .values(final_state="running", final_holder=holder, final_at=time.time())
            ).rowcount
            if won == 1:  # no shard joins it any more
                conn.execute(sa.delete(pass_open_table).where(o.pass_id == pass_id))
        return won == 1

    def beat_final(self, pass_id: str, holder: str) -> None:
        p = passes_table.c
        with self._tx() as conn:
            conn.execute(
                sa.update(passes_table)
                .where((p.pass_id == pass_id) & (p.final_holder == holder))
                .values(final_at=time.time())
            )

    def end_final(self, pass_id: str, holder: str, incomplete: str | None) -> None:
        p = passes_table.c
        with self._tx() as conn:
            conn.execute(
                sa.update(passes_table)
                .where((p.pass_id == pass_id) & (p.final_holder == holder))
                .values(final_state="done", final_at=time.time(), incomplete=incomplete)
            )

    # -- deferred parent links -------------------------------------------------------------
    def add_parent_link(self, dest_uri: str, source_id: str, parent_source_id: str) -> None:
        row = {"dest_uri": dest_uri, "source_id": source_id}
        with self._tx() as conn:
            insert_absent(conn, parent_links_table, row | {"parent_source_id": parent_source_id})

    def parent_links(self, dest_uri: str) -> list[tuple[str, str]]:
        """Pending links of a destination: (child source id, parent source id)."""
        c = parent_links_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(c.source_id, c.parent_source_id)
                .where(c.dest_uri == dest_uri)
                .order_by(c.source_id)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def drop_parent_link(self, dest_uri: str, source_id: str) -> None:
        c = parent_links_table.c
        with self._tx() as conn:
            conn.execute(
                sa.delete(parent_links_table).where(
                    (c.dest_uri == dest_uri) & (c.source_id == source_id)
                )
            )
