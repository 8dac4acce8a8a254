"""Run claims: who is copying a source run into a destination right now, and the fencing
token that keeps a holder whose lease expired from writing over its successor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from bridge.errors import LeaseLost
from bridge.state.base import StoreBase
from bridge.state.sql import insert_absent
from bridge.state.tables import claim_fences_table, claims_table


@dataclass(frozen=True)
class Fence:
    """What one take of a run's claim proves: the holder and the token that take got.
    A state write carrying it succeeds only while both are still the claim's."""

    holder: str
    token: int


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
        """Claim one run for ``holder``; None when it is ours now, else the live holder
        (:meth:`take_fenced_claim` without the fence)."""
        taken = self.take_fenced_claim(dest_uri, source_id, holder, is_stale)
        return None if isinstance(taken, Fence) else taken

    def take_fenced_claim(
        self,
        dest_uri: str,
        source_id: str,
        holder: str,
        is_stale: Callable[[str, float], bool],
    ) -> Fence | str:
        """Claim one run for ``holder``: its :class:`Fence` when it is ours now, else the
        live holder. A claim whose holder ``is_stale(holder, heartbeat)`` (a dead process,
        an expired lease) is taken over by compare-and-set, so two takers never both get
        it. Every take bumps the run's fencing token in the same transaction."""
        k = claims_table.c
        key = (k.dest_uri == dest_uri) & (k.source_id == source_id)
        while True:
            now = time.time()
            with self._tx() as conn:
                row = {"dest_uri": dest_uri, "source_id": source_id, "holder": holder}
                if insert_absent(conn, claims_table, {**row, "taken_at": now, "heartbeat": now}):
                    return Fence(holder, _bump_token(conn, dest_uri, source_id, holder))
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
                    return Fence(holder, _bump_token(conn, dest_uri, source_id, holder))

    def touch_claims(self, holder: str) -> set[str]:
        """Renew the heartbeat of every claim ``holder`` has (its lease); returns the
        source ids it still holds (a claim missing was taken over by a successor)."""
        k = claims_table.c
        with self._tx() as conn:
            conn.execute(
                sa.update(claims_table).where(k.holder == holder).values(heartbeat=time.time())
            )
            return {
                r.source_id for r in conn.execute(sa.select(k.source_id).where(k.holder == holder))
            }

    def claim_taker(self, dest_uri: str, source_id: str) -> str | None:
        """Who took one run's claim last (``host:pid:nonce``; it may have released it
        since), None when it was never taken."""
        with self._tx() as conn:
            return _taker(conn, dest_uri, source_id)

    def release_claim(self, dest_uri: str, source_id: str, holder: str) -> None:
        """Give one claim back (only if ``holder`` still has it). Its token is kept: the
        next take counts on from it."""
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

    def claim_token(self, dest_uri: str, source_id: str) -> int | None:
        """The run's current fencing token (None before its first take; for tests)."""
        with self._tx() as conn:
            return _token(conn, dest_uri, source_id)


def check_fence(conn: sa.Connection, dest_uri: str, source_id: str, fence: Fence | None) -> None:
    """The first statement of a fenced state write, in its transaction: raise
    :class:`~bridge.errors.LeaseLost` (the caller's transaction rolls back: nothing is
    written) unless the run's claim is still ``fence.holder``'s with ``fence.token``.

    The check is one statement, a no-op UPDATE of the run's token row where the claim row
    is still ours, so it locks what a takeover must change: on PostgreSQL the row (a
    successor's takeover waits for this transaction, or this UPDATE sees the bumped token
    and matches nothing), on SQLite the database's write lock (no takeover can commit
    between the check and the write). ``None``: an
    unclaimed write (a dry run writes nothing; the CLI's conflict resolution), unchecked."""
    if fence is None:
        return
    f, k = claim_fences_table.c, claims_table.c
    ours = sa.exists().where(
        k.dest_uri == dest_uri, k.source_id == source_id, k.holder == fence.holder
    )
    kept = conn.execute(
        sa.update(claim_fences_table)
        .where(f.dest_uri == dest_uri, f.source_id == source_id, f.token == fence.token, ours)
        .values(token=f.token)
    ).rowcount
    if kept == 1:
        return
    # Taken since (the token moved on): name the taker; else the claim was given back.
    moved = _token(conn, dest_uri, source_id) != fence.token
    taker = _taker(conn, dest_uri, source_id) if moved else None
    raise LeaseLost(source_id, None if taker is None else taker.rsplit(":", 1)[0])


def _token(conn: sa.Connection, dest_uri: str, source_id: str) -> int | None:
    f = claim_fences_table.c
    token = conn.execute(
        sa.select(f.token).where(f.dest_uri == dest_uri, f.source_id == source_id)
    ).scalar_one_or_none()
    return None if token is None else int(token)


def _taker(conn: sa.Connection, dest_uri: str, source_id: str) -> str | None:
    f = claim_fences_table.c
    taker = conn.execute(
        sa.select(f.holder).where(f.dest_uri == dest_uri, f.source_id == source_id)
    ).scalar_one_or_none()
    return None if taker is None else str(taker)


def _bump_token(conn: sa.Connection, dest_uri: str, source_id: str, holder: str) -> int:
    """Count the run's fencing token up by one (1 on its first take) for ``holder``; the
    new token."""
    f = claim_fences_table.c
    key = (f.dest_uri == dest_uri) & (f.source_id == source_id)
    bump = sa.update(claim_fences_table).where(key).values(token=f.token + 1, holder=holder)
    if conn.execute(bump).rowcount == 0:
        row = {"dest_uri": dest_uri, "source_id": source_id, "token": 1, "holder": holder}
        if not insert_absent(conn, claim_fences_table, row):
            conn.execute(bump)
    return int(conn.execute(sa.select(f.token).where(key)).scalar_one())
