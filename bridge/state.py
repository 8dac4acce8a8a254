"""The state store: what was written where, so a re-run never duplicates.

One store serves every source/destination pair. Rows are keyed by the destination's
credential-free URI and the source identity, not the source URI, so the same W&B run read
offline and later online maps to the same destination run. SQLite by default (a file in
the user's state dir); a PostgreSQL URL lets a team share it.

Everything here can be rebuilt from the destination (identity and completion tags), so a
lost state store costs time, never duplicates.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from platformdirs import user_state_dir
from pydantic import BaseModel, Field

from bridge.errors import BridgeError

metadata = sa.MetaData()

runs_table = sa.Table(
    "bridge_runs",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("dest_id", sa.String(128), nullable=False),
    sa.Column("project_dest_id", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.String(128)),  # source fingerprint at last completion
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("written_params", sa.Text),  # JSON: what the bridge wrote, for conflict checks
    sa.Column("written_tags", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
)

streams_table = sa.Table(
    "bridge_streams",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),  # watermark: points already written
)

files_table = sa.Table(
    "bridge_files",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(256), nullable=False),
)

conflicts_table = sa.Table(
    "bridge_conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("source_id", sa.String(512), nullable=False),
    sa.Column("field", sa.String(512), nullable=False),
    sa.Column("source_value", sa.Text),
    sa.Column("dest_value", sa.Text),
    sa.Column("synced_value", sa.Text),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
)


class RunState(BaseModel):
    dest_id: str
    project_dest_id: str
    fingerprint: str | None = None
    complete: bool = False
    written_params: dict[str, str] = Field(default_factory=dict)
    written_tags: dict[str, str] = Field(default_factory=dict)


def default_state_url() -> str:
    """SQLite file in the user's state dir (platformdirs), one store for all pairs."""
    folder = Path(user_state_dir("tracking-bridge", appauthor=False))
    return f"sqlite:///{folder / 'state.db'}"


def normalize_state_url(value: str | None) -> str:
    """Accept a SQLAlchemy URL or a plain file path."""
    if not value:
        return default_state_url()
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


class StateStore:
    """Thread-safe access to the state tables (writes are serialized)."""

    def __init__(self, url: str | None = None, read_only: bool = False) -> None:
        self.url = normalize_state_url(url)
        self._lock = threading.RLock()
        sqlite_path = self.url[len("sqlite:///") :] if self.url.startswith("sqlite:///") else None
        if read_only and sqlite_path and not Path(sqlite_path).exists():
            # A dry run against a state store that does not exist yet: read an empty
            # in-memory one rather than create a file.
            self.url = "sqlite://"
            sqlite_path = None
        try:
            if sqlite_path:
                Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = sa.create_engine(
                    self.url, connect_args={"check_same_thread": False, "timeout": 60}
                )
            elif self.url == "sqlite://":
                self.engine = sa.create_engine(
                    self.url, connect_args={"check_same_thread": False}, poolclass=sa.StaticPool
                )
            else:
                self.engine = sa.create_engine(self.url, pool_pre_ping=True)
            metadata.create_all(self.engine)
        except Exception as exc:
            safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
            raise BridgeError(
                f"state store {safe} cannot be opened ({type(exc).__name__}); "
                "pass --state with a writable path or a reachable database URL"
            ) from exc

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.begin() as conn:
            yield conn

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

    def put_run(self, dest_uri: str, source_id: str, state: RunState) -> None:
        values: dict[str, Any] = {
            "dest_id": state.dest_id,
            "project_dest_id": state.project_dest_id,
            "fingerprint": state.fingerprint,
            "complete": state.complete,
            "written_params": json.dumps(state.written_params, sort_keys=True),
            "written_tags": json.dumps(state.written_tags, sort_keys=True),
            "updated_at": time.time(),
        }
        key = (runs_table.c.dest_uri == dest_uri) & (runs_table.c.source_id == source_id)
        with self._tx() as conn:
            if conn.execute(sa.update(runs_table).where(key).values(**values)).rowcount == 0:
                conn.execute(
                    sa.insert(runs_table).values(dest_uri=dest_uri, source_id=source_id, **values)
                )

    def forget_run(self, dest_uri: str, source_id: str) -> None:
        """Drop every row of one run (its destination run was deleted)."""
        with self._tx() as conn:
            for table in (runs_table, streams_table, files_table):
                conn.execute(
                    sa.delete(table).where(
                        table.c.dest_uri == dest_uri, table.c.source_id == source_id
                    )
                )

    def count_runs(self, dest_uri: str) -> int:
        with self._tx() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(runs_table)
                    .where(runs_table.c.dest_uri == dest_uri)
                ).scalar_one()
            )

    # -- metric watermarks ---------------------------------------------------------------
    def get_watermarks(self, dest_uri: str, source_id: str) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(streams_table.c.key, streams_table.c.points).where(
                    streams_table.c.dest_uri == dest_uri, streams_table.c.source_id == source_id
                )
            ).all()
        return {r.key: int(r.points) for r in rows}

    def set_watermarks(self, dest_uri: str, source_id: str, points: dict[str, int]) -> None:
        if not points:
            return
        with self._tx() as conn:
            for key, count in points.items():
                where = (
                    (streams_table.c.dest_uri == dest_uri)
                    & (streams_table.c.source_id == source_id)
                    & (streams_table.c.key == key)
                )
                if (
                    conn.execute(
                        sa.update(streams_table).where(where).values(points=count)
                    ).rowcount
                    == 0
                ):
                    conn.execute(
                        sa.insert(streams_table).values(
                            dest_uri=dest_uri, source_id=source_id, key=key, points=count
                        )
                    )

    # -- files ------------------------------------------------------------------------
    def get_files(self, dest_uri: str, source_id: str) -> dict[str, str]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(files_table.c.path, files_table.c.digest).where(
                    files_table.c.dest_uri == dest_uri, files_table.c.source_id == source_id
                )
            ).all()
        return {r.path: r.digest for r in rows}

    def put_file(self, dest_uri: str, source_id: str, path: str, digest: str) -> None:
        where = (
            (files_table.c.dest_uri == dest_uri)
            & (files_table.c.source_id == source_id)
            & (files_table.c.path == path)
        )
        with self._tx() as conn:
            if (
                conn.execute(sa.update(files_table).where(where).values(digest=digest)).rowcount
                == 0
            ):
                conn.execute(
                    sa.insert(files_table).values(
                        dest_uri=dest_uri, source_id=source_id, path=path, digest=digest
                    )
                )

    # -- conflicts --------------------------------------------------------------------
    def record_conflict(
        self,
        dest_uri: str,
        source_id: str,
        field: str,
        source_value: str | None,
        dest_value: str | None,
        synced_value: str | None,
    ) -> None:
        """Record a conflict once; an identical open one is not recorded again."""
        with self._tx() as conn:
            existing = conn.execute(
                sa.select(conflicts_table.c.id).where(
                    conflicts_table.c.dest_uri == dest_uri,
                    conflicts_table.c.source_id == source_id,
                    conflicts_table.c.field == field,
                    conflicts_table.c.source_value == source_value,
                    conflicts_table.c.dest_value == dest_value,
                    conflicts_table.c.resolved.is_(False),
                )
            ).first()
            if existing is None:
                conn.execute(
                    sa.insert(conflicts_table).values(
                        dest_uri=dest_uri,
                        source_id=source_id,
                        field=field,
                        source_value=source_value,
                        dest_value=dest_value,
                        synced_value=synced_value,
                        detected_at=time.time(),
                        resolved=False,
                    )
                )

    def open_conflicts(self, dest_uri: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(conflicts_table).where(conflicts_table.c.resolved.is_(False))
        if dest_uri is not None:
            query = query.where(conflicts_table.c.dest_uri == dest_uri)
        with self._tx() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]

    def close(self) -> None:
        self.engine.dispose()
