"""Run claims: who is copying a source run into a destination right now."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.sql import insert_absent
from bridge.state.tables import claims_table


class ClaimsMixin(StoreBase):
    """Take, renew and release run claims."""

    # -- run claims (bridge/engine/claims.py) --------------------------------------------
    def take_claim(
        self,
        dest_uri: str,
        source_id: str,
        holder: str,
        is_stale: Callable[[str, float], bool],
    ) -> str | None:
        """Claim one run for ``holder``; None when it is ours now, else the live holder.
        A claim whose holder ``is_stale(holder, heartbeat)`` (a dead process, an expired
        lease) is taken over by compare-and-set, so two takers never both get it."""
        k = claims_table.c
        key = (k.dest_uri == dest_uri) & (k.source_id == source_id)
        while True:
            now = time.time()
            with self._tx() as conn:
                row = {"dest_uri": dest_uri, "source_id": source_id, "holder": holder}
                if insert_absent(conn, claims_table, {**row, "taken_at": now, "heartbeat": now}):
                    return None
                current = conn.execute(sa.select(k.holder, k.heartbeat).where(key)).first()
                if current is None:
                    continue  # released meanwhile: try again
                if current.holder != holder and not is_stale(current.holder, current.heartbeat):
                    return str(current.holder)
                taken = conn.execute(
                    sa.update(claims_table)
                    .where(key, k.holder == current.holder, k.heartbeat == current.heartbeat)
                    .values(holder=holder, taken_at=now, heartbeat=now)
                ).rowcount
            if taken:
                return None

    def touch_claims(self, holder: str) -> None:
        """Renew the heartbeat of every claim ``holder`` has (its lease)."""
        with self._tx() as conn:
            conn.execute(
                sa.update(claims_table)
                .where(claims_table.c.holder == holder)
                .values(heartbeat=time.time())
            )

    def release_claim(self, dest_uri: str, source_id: str, holder: str) -> None:
        """Give one claim back (only if ``holder`` still has it)."""
        k = claims_table.c
        with self._tx() as conn:
            conn.execute(
                sa.delete(claims_table).where(
                    k.dest_uri == dest_uri, k.source_id == source_id, k.holder == holder
                )
            )

    def release_claims(self, holder: str) -> None:
        """Give back every claim ``holder`` has."""
        with self._tx() as conn:
            conn.execute(sa.delete(claims_table).where(claims_table.c.holder == holder))

    def claims(self, dest_uri: str | None = None) -> dict[tuple[str, str], str]:
        """(destination, source id) -> holder of every claim (for status and tests)."""
        k = claims_table.c
        query = sa.select(k.dest_uri, k.source_id, k.holder)
        if dest_uri is not None:
            query = query.where(k.dest_uri == dest_uri)
        with self._tx() as conn:
            return {(r.dest_uri, r.source_id): r.holder for r in conn.execute(query)}
