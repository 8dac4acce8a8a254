"""The run map: destination run per source run, metric watermarks and their digests, file
digests, and the content digests of files that come without one."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.claims import Fence, check_fence
from bridge.state.records import RunState
from bridge.state.sql import drop_run_rows, key_hash, upsert, upsert_many
from bridge.state.tables import (
    digests_table,
    files_table,
    runs_table,
    stream_digests_table,
    streams_table,
)


class RunsMixin(StoreBase):
    """Runs, watermarks, files and digests."""

    # -- runs -------------------------------------------------------------------------
    def get_run(self, dest_uri: str, source_id: str) -> RunState | None:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(runs_table).where(
                    runs_table.c.dest_uri == dest_uri, runs_table.c.source_id == source_id
                )
            ).first()
        if row is None:
            return None
        return RunState(
            dest_id=row.dest_id,
            project_dest_id=row.project_dest_id,
            fingerprint=row.fingerprint,
            complete=bool(row.complete),
            written_params=json.loads(row.written_params or "{}"),
            written_tags=json.loads(row.written_tags or "{}"),
        )

    def put_run(
        self, dest_uri: str, source_id: str, state: RunState, fence: Fence | None = None
    ) -> None:
        """Upsert one run's row. Every per-run write takes the ``fence`` of the pass's claim
        on the run (bridge/state/claims.py ``check_fence``): a stale holder writes nothing."""
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            key = {"dest_uri": dest_uri, "source_id": source_id}
            upsert(conn, runs_table, key, _run_values(state))

    def forget_run(self, dest_uri: str, source_id: str, fence: Fence | None = None) -> None:
        """Drop every row of one run (its destination run was deleted)."""
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            drop_run_rows(
                conn,
                dest_uri,
                source_id,
                (runs_table, streams_table, stream_digests_table, files_table),
            )

    def reset_run(
        self, dest_uri: str, source_id: str, state: RunState, fence: Fence | None = None
    ) -> None:
        """Record a destination run just created for this source run. Watermarks and file
        digests of any earlier copy are dropped in the same transaction: nothing is in the
        new run yet (the one way a watermark goes down, on purpose)."""
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            drop_run_rows(
                conn, dest_uri, source_id, (streams_table, stream_digests_table, files_table)
            )
            key = {"dest_uri": dest_uri, "source_id": source_id}
            upsert(conn, runs_table, key, _run_values(state))

    def count_runs(self, dest_uri: str, complete_since: float | None = None) -> int:
        """Runs mapped in ``dest_uri``; with ``complete_since``, those whose copy was
        completed (or rewritten) since then: a running pass's progress."""
        r = runs_table.c
        q = sa.select(sa.func.count()).select_from(runs_table).where(r.dest_uri == dest_uri)
        if complete_since is not None:
            q = q.where(r.complete.is_(True), r.updated_at >= complete_since)
        with self._tx() as conn:
            return int(conn.execute(q).scalar_one())

    # -- metric watermarks ---------------------------------------------------------------
    def get_watermarks(self, dest_uri: str, source_id: str) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(streams_table.c.key, streams_table.c.points).where(
                    streams_table.c.dest_uri == dest_uri, streams_table.c.source_id == source_id
                )
            ).all()
        return {r.key: int(r.points) for r in rows}

    def set_watermarks(
        self,
        dest_uri: str,
        source_id: str,
        points: dict[str, int],
        digests: dict[str, tuple[int, str]] | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Raise the per-stream watermarks to ``points``. Never lowers one: a writer holding
        an older count cannot undo a newer one (compare-and-set in the upsert). Only a new
        destination run starts them again from zero (:meth:`reset_run`).

        Pass only the keys that changed: the cost is O(len(points)), one statement per
        table. ``digests`` (points, digest per key; see engine/streams.py) go in the same
        transaction, so a watermark and the digest of the points it counts are stored together."""
        if not points and not digests:
            return
        ident = {"dest_uri": dest_uri, "source_id": source_id}
        rows = [{**ident, "key": key, "points": count} for key, count in points.items()]
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            upsert_many(conn, streams_table, _STREAM_KEY, rows, keep_max=("points",))
            _put_digests(conn, ident, digests or {})

    # -- files ------------------------------------------------------------------------
    def get_files(self, dest_uri: str, source_id: str) -> dict[str, str]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(files_table.c.path, files_table.c.digest).where(
                    files_table.c.dest_uri == dest_uri, files_table.c.source_id == source_id
                )
            ).all()
        return {r.path: r.digest for r in rows}

    def put_file(
        self, dest_uri: str, source_id: str, path: str, digest: str, fence: Fence | None = None
    ) -> None:
        row = {"dest_uri": dest_uri, "source_id": source_id, "path": path}
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            upsert(conn, files_table, row, {"digest": digest})

    # -- content digests of files without one ------------------------------------------
    def get_digest(self, stat_key: str) -> str | None:
        """The cached MD5 (base64) of the file version named by ``stat_key``."""
        d = digests_table.c
        with self._tx() as conn:
            return conn.execute(
                sa.select(d.md5).where(d.stat_key == key_hash(stat_key))
            ).scalar_one_or_none()

    def put_digest(self, stat_key: str, md5: str) -> None:
        with self._tx() as conn:
            upsert(conn, digests_table, {"stat_key": key_hash(stat_key)}, {"md5": md5})

    # -- per-stream digests (beside the watermarks) -------------------------------------
    def get_stream_digests(self, dest_uri: str, source_id: str) -> dict[str, tuple[int, str]]:
        """Per metric key: (points, digest) as last recorded."""
        d = stream_digests_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(d.key, d.points, d.digest).where(
                    d.dest_uri == dest_uri, d.source_id == source_id
                )
            ).all()
        return {r.key: (int(r.points), r.digest) for r in rows}


_STREAM_KEY = ("dest_uri", "source_id", "key")


def _put_digests(
    conn: sa.Connection, ident: dict[str, str], digests: dict[str, tuple[int, str]]
) -> None:
    """Upsert (points, digest) per key of one run, in one statement."""
    rows = [
        {**ident, "key": key, "points": points, "digest": digest}
        for key, (points, digest) in digests.items()
    ]
    upsert_many(conn, stream_digests_table, _STREAM_KEY, rows)


def _run_values(state: RunState) -> dict[str, Any]:
    """The non-key columns of a run's state row."""
    return {
        "dest_id": state.dest_id,
        "project_dest_id": state.project_dest_id,
        "fingerprint": state.fingerprint,
        "complete": state.complete,
        "written_params": json.dumps(state.written_params, sort_keys=True),
        "written_tags": json.dumps(state.written_tags, sort_keys=True),
        "updated_at": time.time(),
    }
