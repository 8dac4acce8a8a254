"""The state store: what was written where, so a re-run never duplicates.

One store serves every source/destination pair. Rows are keyed by the destination's
credential-free URI and the source identity, not the source URI, so the same W&B run read
offline and later online maps to the same destination run. SQLite by default (a file in
the user's state dir); a PostgreSQL URL lets a team share it.

Everything here can be rebuilt from the destination (identity and completion tags), so a
lost state store costs time, never duplicates.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from platformdirs import user_state_dir
from pydantic import BaseModel, Field

from bridge.errors import BridgeError
from bridge.redact import redact, register_uri

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


resolutions_table = sa.Table(
    "bridge_resolutions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conflict_id", sa.Integer),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("source_id", sa.String(512), nullable=False),
    sa.Column("field", sa.String(512), nullable=False),
    sa.Column("choice", sa.String(16), nullable=False),  # "source" | "dest" | "superseded"
    sa.Column("source_value", sa.Text),
    sa.Column("dest_value", sa.Text),
    sa.Column("resolved_by", sa.String(256), nullable=False),  # user@host or policy:NAME
    sa.Column("resolved_at", sa.Float, nullable=False),
    sa.Column("note", sa.Text),
)

cycles_table = sa.Table(
    "bridge_cycles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_uri", sa.String(512), nullable=False),
    sa.Column("dest_uri", sa.String(512), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("result", sa.Integer),  # the exit code; NULL while running (or killed)
    sa.Column("skipped", sa.Text),  # why the cycle did not run (lock held ...)
    sa.Column("counts", sa.Text),  # JSON: actions, outcomes, points/files written
    sa.Column("errors", sa.Text),  # JSON list of one-line errors
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
)

members_table = sa.Table(
    "bridge_pair_runs",
    metadata,
    sa.Column("source_uri", sa.String(512), primary_key=True),
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float),  # when a complete listing stopped showing it
)

# Where a source artifact version's content lives in a destination (content addressed by
# the artifact's source identity): copied once, reused by every run or registry version.
objects_table = sa.Table(
    "bridge_objects",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),  # ArtifactVersion.source_id
    sa.Column("location", sa.String(1024), nullable=False),  # models:/ID, runs:/ID/path ...
)

# The version map: a source registry version <-> the destination's version number.
versions_table = sa.Table(
    "bridge_model_versions",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),  # ModelVersion.source_id
    sa.Column("model_name", sa.String(512), nullable=False),  # destination model name
    sa.Column("dest_version", sa.String(64), nullable=False),
)

# Aliases as last synced (both sides agreed): a move on both sides since is a conflict.
aliases_table = sa.Table(
    "bridge_model_aliases",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("model_source_id", sa.String(512), primary_key=True),
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column("source_version", sa.String(512)),  # ModelVersion.source_id it was on
    sa.Column("dest_version", sa.String(64)),
)

# --two-way: editable fields as last agreed by both sides (a change on both since = conflict).
editable_table = sa.Table(
    "bridge_editable",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("field", sa.String(512), primary_key=True),  # "notes", "tags", "label:<key>"
    sa.Column("value", sa.Text),
)

# Beside each watermark: an order-independent digest of the points it counts (see
# bridge/engine/streams.py), valid while ``points`` equals the watermark. A new table, so
# state stores from before it keep working (no digest = not known).
stream_digests_table = sa.Table(
    "bridge_stream_digests",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("points", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(16), nullable=False),  # 64-bit, hex
)

# The reader filters of each pair's last real sync: the scope `verify` checks by default.
pair_filters_table = sa.Table(
    "bridge_pair_filters",
    metadata,
    sa.Column("source_uri", sa.String(512), primary_key=True),
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("filters", sa.Text, nullable=False),  # JSON object
    sa.Column("synced_at", sa.Float, nullable=False),
)

# Content digests of source files that come without one, by the reader's cheap identity of
# that file version (FileRef.stat_key, e.g. path + size + mtime): hashed once, not per sync.
digests_table = sa.Table(
    "bridge_content_digests",
    metadata,
    sa.Column("stat_key", sa.String(64), primary_key=True),  # sha256 hex of FileRef.stat_key
    sa.Column("md5", sa.String(64), nullable=False),  # base64 MD5 of the content
)

# Run claims: who is copying a source run into a destination right now. One row per
# (destination, source identity), taken atomically, so two syncs whose sources yield the
# same identities (an offline folder and the server; two copies of a folder) never both
# create or write a run, while different runs of one pair proceed in parallel.
claims_table = sa.Table(
    "bridge_claims",
    metadata,
    sa.Column("dest_uri", sa.String(512), primary_key=True),
    sa.Column("source_id", sa.String(512), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),  # host:pid:nonce
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)


class Resolution(BaseModel):
    """How one conflict was settled: by a person (``conflicts resolve``) or a policy."""

    id: int
    conflict_id: int | None
    field: str
    choice: str
    source_value: str | None
    dest_value: str | None
    resolved_by: str
    resolved_at: float


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


def _native_insert(conn: sa.Connection) -> Any:
    """The dialect's ``INSERT ... ON CONFLICT`` construct, or None where there is none."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    return None


def _upsert(
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
    insert = _native_insert(conn)
    if insert is None:
        _upsert_portable(conn, table, key, values, keep_max)
        return
    stmt = insert(table).values(**key, **values)
    changes = {name: stmt.excluded[name] for name in values}
    for name in keep_max:
        changes[name] = _greater(stmt.excluded[name], table.c[name])
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=changes))


def _upsert_many(
    conn: sa.Connection,
    table: sa.Table,
    key: tuple[str, ...],
    rows: list[dict[str, Any]],
    keep_max: tuple[str, ...] = (),
) -> None:
    """:func:`_upsert` for many rows of one shape (primary ``key`` columns + values) in one
    ``executemany`` of one statement: a flush of N changed keys costs one round trip per
    batch of rows, not N statements."""
    if not rows:
        return
    values = [name for name in rows[0] if name not in key]
    insert = _native_insert(conn)
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


_STREAM_KEY = ("dest_uri", "source_id", "key")


def _put_digests(
    conn: sa.Connection, ident: dict[str, str], digests: dict[str, tuple[int, str]]
) -> None:
    """Upsert (points, digest) per key of one run, in one statement."""
    rows = [
        {**ident, "key": key, "points": points, "digest": digest}
        for key, (points, digest) in digests.items()
    ]
    _upsert_many(conn, stream_digests_table, _STREAM_KEY, rows)


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
    if conn.execute(update).rowcount == 0 and not _insert_absent(conn, table, {**key, **values}):
        conn.execute(update)


def _insert_absent(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless a row with the same unique key exists; True when inserted.
    Atomic (``ON CONFLICT DO NOTHING``) on SQLite and PostgreSQL."""
    insert = _native_insert(conn)
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


def _create_tables(engine: sa.Engine, attempts: int = 10, indexes: bool = True) -> None:
    """Create missing tables and indexes. Two processes opening a new store at once race on
    CREATE TABLE (SQLite: "already exists" / "database is locked"); the loser looks again.
    New tables and indexes only (``IF NOT EXISTS``): existing stores keep opening.
    ``indexes=False`` (a read-only store): the index that guards writes waits for a writer,
    which may first have to close duplicate rows of an older store."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            if indexes:
                _create_open_conflict_index(engine)
            return
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


#: At most one open conflict per (destination, run, field, both values), enforced by the
#: database: a partial unique index over the open rows. Values can be long (PostgreSQL's
#: btree rows are limited to ~2.7 kB), so PostgreSQL indexes their MD5; ``IS NULL`` keeps
#: NULL apart from "" (unique indexes treat NULLs as distinct).
OPEN_CONFLICT_INDEX = "bridge_conflicts_one_open"
_OPEN_CONFLICT_DDL = {
    "sqlite": (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {OPEN_CONFLICT_INDEX} ON bridge_conflicts "
        "(dest_uri, source_id, field, ifnull(source_value, ''), (source_value IS NULL), "
        "ifnull(dest_value, ''), (dest_value IS NULL)) WHERE NOT resolved"
    ),
    "postgresql": (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {OPEN_CONFLICT_INDEX} ON bridge_conflicts "
        "(dest_uri, source_id, field, md5(coalesce(source_value, '')), (source_value IS NULL), "
        "md5(coalesce(dest_value, '')), (dest_value IS NULL)) WHERE NOT resolved"
    ),
}
_INDEX_EXISTS = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n",
    "postgresql": "SELECT 1 FROM pg_indexes WHERE indexname = :n",
}


def _create_open_conflict_index(engine: sa.Engine) -> None:
    """The one-open-conflict index; duplicates an older bridge recorded are closed first
    (superseded by the oldest open row), or the index could not be built."""
    ddl = _OPEN_CONFLICT_DDL.get(engine.dialect.name)
    if ddl is None:
        return  # another database: record_conflict checks before inserting (best effort)
    with engine.begin() as conn:
        probe = sa.text(_INDEX_EXISTS[engine.dialect.name])
        if conn.execute(probe, {"n": OPEN_CONFLICT_INDEX}).first() is not None:
            return
        _close_duplicate_conflicts(conn)
        conn.execute(sa.text(ddl))


def _close_duplicate_conflicts(conn: sa.Connection) -> None:
    """Close every open conflict row that repeats an older open one (same run, field and
    values), recorded as superseded."""
    c = conflicts_table.c
    rows = conn.execute(
        sa.select(conflicts_table).where(c.resolved.is_(False)).order_by(c.id)
    ).all()
    first: dict[tuple[str | None, ...], int] = {}
    for row in rows:
        key = (row.dest_uri, row.source_id, row.field, row.source_value, row.dest_value)
        if key not in first:
            first[key] = row.id
            continue
        conn.execute(sa.update(conflicts_table).where(c.id == row.id).values(resolved=True))
        _insert_resolution(
            conn,
            row.id,
            "superseded",
            "bridge",
            time.time(),
            f"duplicate of open conflict #{first[key]}",
            row.dest_uri,
            row.source_id,
            row.field,
            row.source_value,
            row.dest_value,
        )


class StateStore:
    """Thread-safe access to the state tables (writes are serialized)."""

    def __init__(self, url: str | None = None, read_only: bool = False) -> None:
        self.url = normalize_state_url(url)
        register_uri(self.url)
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
            _create_tables(self.engine, indexes=not read_only)
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
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            _upsert(conn, runs_table, key, _run_values(state))

    def forget_run(self, dest_uri: str, source_id: str) -> None:
        """Drop every row of one run (its destination run was deleted)."""
        with self._tx() as conn:
            _drop_run_rows(
                conn,
                dest_uri,
                source_id,
                (runs_table, streams_table, stream_digests_table, files_table),
            )

    def reset_run(self, dest_uri: str, source_id: str, state: RunState) -> None:
        """Record a destination run just created for this source run. Watermarks and file
        digests of any earlier copy are dropped in the same transaction: nothing is in the
        new run yet (the one way a watermark goes down, on purpose)."""
        with self._tx() as conn:
            _drop_run_rows(
                conn, dest_uri, source_id, (streams_table, stream_digests_table, files_table)
            )
            key = {"dest_uri": dest_uri, "source_id": source_id}
            _upsert(conn, runs_table, key, _run_values(state))

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

    def set_watermarks(
        self,
        dest_uri: str,
        source_id: str,
        points: dict[str, int],
        digests: dict[str, tuple[int, str]] | None = None,
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
            _upsert_many(conn, streams_table, _STREAM_KEY, rows, keep_max=("points",))
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

    def put_file(self, dest_uri: str, source_id: str, path: str, digest: str) -> None:
        row = {"dest_uri": dest_uri, "source_id": source_id, "path": path}
        with self._tx() as conn:
            _upsert(conn, files_table, row, {"digest": digest})

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
        """Record a conflict once; an identical open one is not recorded again (on SQLite
        and PostgreSQL the database guarantees it, for concurrent writers too)."""
        with self._tx() as conn:
            if _native_insert(conn) is not None:  # the one-open-conflict index decides
                row = _conflict_values(
                    dest_uri, source_id, field, source_value, dest_value, synced_value
                )
                _insert_absent(conn, conflicts_table, row)
                return
            match = _conflict_match(dest_uri, source_id, field, source_value, dest_value)
            existing = conn.execute(
                sa.select(conflicts_table.c.id).where(match, conflicts_table.c.resolved.is_(False))
            ).first()
            if existing is None:
                _insert_conflict(
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
    ) -> int:
        """Record a settlement and close every open conflict it covers; returns the
        resolution id. A conflict no earlier sync recorded (a policy settling it on first
        sight) is inserted already closed, so the audit trail is complete."""
        now = time.time()
        c = conflicts_table.c
        with self._tx() as conn:
            match = _conflict_match(dest_uri, source_id, field, source_value, dest_value)
            open_ids = sa.select(c.id).where(match, c.resolved.is_(False)).order_by(c.id)
            ids = [r.id for r in conn.execute(open_ids)]
            if not ids:  # inserted unless a concurrent sync just recorded it (then closed)
                row = _conflict_values(
                    dest_uri, source_id, field, source_value, dest_value, None, now
                )
                _insert_absent(conn, conflicts_table, row)
                ids = [r.id for r in conn.execute(open_ids)]
            conn.execute(sa.update(conflicts_table).where(c.id.in_(ids)).values(resolved=True))
            res_id = _insert_resolution(
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
    ) -> int:
        """Close open conflicts of a run that its latest full comparison no longer finds
        (someone fixed one side by hand, or the source moved on): recorded as superseded.
        ``fields``: only conflicts whose field starts with one of these (what was compared)."""
        c = conflicts_table.c
        now = time.time()
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(conflicts_table).where(
                    c.dest_uri == dest_uri, c.source_id == source_id, c.resolved.is_(False)
                )
            ).all()
            stale = [
                row
                for row in rows
                if _conflict_key(row) not in current
                and (fields is None or row.field.startswith(fields))
            ]
            for row in stale:
                conn.execute(sa.update(conflicts_table).where(c.id == row.id).values(resolved=True))
                _insert_resolution(
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

    # -- cycles (mirror / sync history) -------------------------------------------------
    def start_cycle(self, source_uri: str, dest_uri: str, host: str, pid: int) -> int:
        """A row written before the cycle runs: a cycle killed mid-way stays visible."""
        with self._tx() as conn:
            key = _pk(
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
        """Every (source, dest) pair that has run at least one cycle."""
        c = cycles_table.c
        with self._tx() as conn:
            rows = conn.execute(sa.select(c.source_uri, c.dest_uri).distinct()).all()
        return sorted((r.source_uri, r.dest_uri) for r in rows)

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
                    _insert_absent(conn, members_table, {**row, "first_seen": now})
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

    # -- model objects, the version map and alias baselines ---------------------------
    def get_object(self, dest_uri: str, source_id: str) -> str | None:
        o = objects_table.c
        with self._tx() as conn:
            return conn.execute(
                sa.select(o.location).where(o.dest_uri == dest_uri, o.source_id == source_id)
            ).scalar_one_or_none()

    def put_object(self, dest_uri: str, source_id: str, location: str) -> None:
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            _upsert(conn, objects_table, key, {"location": location})

    def get_version(self, dest_uri: str, source_id: str) -> tuple[str, str] | None:
        """(destination model name, destination version) of a source registry version."""
        v = versions_table.c
        with self._tx() as conn:
            row = conn.execute(
                sa.select(v.model_name, v.dest_version).where(
                    v.dest_uri == dest_uri, v.source_id == source_id
                )
            ).first()
        return (row.model_name, row.dest_version) if row else None

    def put_version(self, dest_uri: str, source_id: str, model_name: str, version: str) -> None:
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            _upsert(conn, versions_table, key, {"model_name": model_name, "dest_version": version})

    def get_aliases(self, dest_uri: str, model_source_id: str) -> dict[str, tuple[str, str]]:
        """alias -> (source version id, destination version) as last synced."""
        a = aliases_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(a.alias, a.source_version, a.dest_version).where(
                    a.dest_uri == dest_uri, a.model_source_id == model_source_id
                )
            ).all()
        return {r.alias: (r.source_version, r.dest_version) for r in rows}

    def put_alias(
        self,
        dest_uri: str,
        model_source_id: str,
        alias: str,
        source_version: str | None,
        dest_version: str | None,
    ) -> None:
        """Record an alias as synced; both None forgets it (removed on both sides)."""
        key = {"dest_uri": dest_uri, "model_source_id": model_source_id, "alias": alias}
        with self._tx() as conn:
            if source_version is None and dest_version is None:
                a = aliases_table.c
                conn.execute(
                    sa.delete(aliases_table).where(
                        a.dest_uri == dest_uri,
                        a.model_source_id == model_source_id,
                        a.alias == alias,
                    )
                )
                return
            values = {"source_version": source_version, "dest_version": dest_version}
            _upsert(conn, aliases_table, key, values)

    def get_editable(self, dest_uri: str, source_id: str) -> dict[str, str | None] | None:
        """Editable fields as last agreed (None: never compared in two-way mode)."""
        e = editable_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(e.field, e.value).where(e.dest_uri == dest_uri, e.source_id == source_id)
            ).all()
        return {r.field: r.value for r in rows} if rows else None

    def put_editable(self, dest_uri: str, source_id: str, values: dict[str, str | None]) -> None:
        """Replace the agreed values of one run (absent fields are kept as a NULL row, so
        an empty agreement is still an agreement)."""
        e = editable_table.c
        rows = values or {"notes": None}
        with self._tx() as conn:
            conn.execute(
                sa.delete(editable_table).where(e.dest_uri == dest_uri, e.source_id == source_id)
            )
            for field, value in rows.items():
                key = {"dest_uri": dest_uri, "source_id": source_id, "field": field}
                _upsert(conn, editable_table, key, {"value": value})

    # -- content digests of files without one ------------------------------------------
    def get_digest(self, stat_key: str) -> str | None:
        """The cached MD5 (base64) of the file version named by ``stat_key``."""
        d = digests_table.c
        with self._tx() as conn:
            return conn.execute(
                sa.select(d.md5).where(d.stat_key == _key_hash(stat_key))
            ).scalar_one_or_none()

    def put_digest(self, stat_key: str, md5: str) -> None:
        with self._tx() as conn:
            _upsert(conn, digests_table, {"stat_key": _key_hash(stat_key)}, {"md5": md5})

    # -- the filters of a pair's last sync (verify's default scope) --------------------
    def put_pair_filters(self, source_uri: str, dest_uri: str, filters: dict[str, Any]) -> None:
        """Remember the reader filters a real sync of this pair ran with."""
        key = {"source_uri": source_uri, "dest_uri": dest_uri}
        values = {"filters": json.dumps(filters, sort_keys=True), "synced_at": time.time()}
        with self._tx() as conn:
            _upsert(conn, pair_filters_table, key, values)

    def pair_filters(self, source_uri: str, dest_uri: str) -> dict[str, Any] | None:
        """The filters of this pair's last real sync (None: never synced)."""
        f = pair_filters_table.c
        with self._tx() as conn:
            text = conn.execute(
                sa.select(f.filters).where(f.source_uri == source_uri, f.dest_uri == dest_uri)
            ).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))

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
                if _insert_absent(conn, claims_table, {**row, "taken_at": now, "heartbeat": now}):
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

    def close(self) -> None:
        self.engine.dispose()


def _pk(result: Any) -> int:
    """The new row's integer key (typed, for mypy)."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _eq(column: Any, value: str | None) -> Any:
    """``column = value`` that also matches NULL to None."""
    return column.is_(None) if value is None else column == value


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


def _drop_run_rows(
    conn: sa.Connection, dest_uri: str, source_id: str, tables: tuple[sa.Table, ...]
) -> None:
    """Delete one run's rows from ``tables``."""
    for table in tables:
        conn.execute(
            sa.delete(table).where(table.c.dest_uri == dest_uri, table.c.source_id == source_id)
        )


def _conflict_key(row: Any) -> str:
    return f"{row.field}\x00{row.source_value}\x00{row.dest_value}"


def conflict_key(field: str, source_value: str | None, dest_value: str | None) -> str:
    """Identity of a conflict for :meth:`StateStore.close_stale_conflicts`."""
    return f"{field}\x00{source_value}\x00{dest_value}"


def _key_hash(text: str) -> str:
    """A fixed-width key for arbitrary-length identities (paths can be long)."""
    return hashlib.sha256(text.encode()).hexdigest()
