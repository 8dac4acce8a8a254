"""What a pass asks the state store per run (or per heartbeat) is answered through an index
or a primary key, never by scanning a table (issue 15: 10,000-run passes): every SELECT,
UPDATE and DELETE the store sends while one run is planned, settled, written and released is
checked with SQLite's ``EXPLAIN QUERY PLAN`` and PostgreSQL's ``EXPLAIN`` (sequential scans
off: a plan that still scans has no index to use). A store made before the indexes gets them
when it is opened (migrate.create_missing_indexes)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.state import RunState, StateStore

GOLDEN = Path(__file__).with_name("state_schema_sqlite.sql")
DEST, SRC_URI = "mlflow:sqlite:///d.db", "mlflow:sqlite:///s.db"
NEW_INDEXES = (
    "ix_bridge_conflicts_run",
    "ix_bridge_resolutions_run",
    "ix_bridge_cycles_pair",
    "ix_bridge_claims_holder",
)


def _fill(store: StateStore, runs: int = 60) -> None:
    """Rows of many runs, so a scan and a look-up differ."""
    for i in range(runs):
        sid = f"mlflow:exp/{i}"
        store.put_run(DEST, sid, RunState(dest_id=f"d{i}", project_dest_id="p"))
        store.set_watermarks(DEST, sid, {"loss": 10})
        store.put_file(DEST, sid, "a.txt", "md5")
        store.record_conflict(DEST, sid, "param:lr", "1", "2", "0")
        store.take_claim(DEST, sid, f"host:{i}:n", lambda _h, _b: False)
        store.put_item(DEST, f"trace:{i}", "trace", f"t{i}", "fp")
    store.add_pair_members(SRC_URI, DEST, [f"mlflow:exp/{i}" for i in range(runs)])
    store.resolve_conflict(DEST, "mlflow:exp/1", "param:lr", "1", "2", "source", "me")
    for _ in range(5):
        store.end_cycle(store.start_cycle(SRC_URI, DEST, "host", 1), 0, {}, [])


def _one_run(store: StateStore) -> None:
    """What a pass does with one run, its claim and its holder's heartbeat."""
    sid, holder = "mlflow:exp/7", "me:1:x"
    store.release_claim(DEST, sid, "host:7:n")
    store.take_claim(DEST, sid, holder, lambda _h, _b: True)
    store.touch_claims(holder)
    store.get_run(DEST, sid)
    store.resolutions(DEST, sid)
    store.get_watermarks(DEST, sid)
    store.get_stream_digests(DEST, sid)
    store.get_files(DEST, sid)
    store.get_editable(DEST, sid)
    store.get_item(DEST, "trace:7")
    store.record_conflict(DEST, sid, "param:lr", "1", "3", "0")
    store.close_stale_conflicts(DEST, sid, set())
    store.put_run(DEST, sid, RunState(dest_id="d7", project_dest_id="p", complete=True))
    store.set_watermarks(DEST, sid, {"loss": 12})
    store.put_file(DEST, sid, "b.txt", "md5")
    store.mark_deleted(SRC_URI, DEST, "mlflow:exp/8")
    store.reset_run(DEST, "mlflow:exp/9", RunState(dest_id="d9b", project_dest_id="p"))
    store.forget_run(DEST, "mlflow:exp/10")
    store.release_claim(DEST, sid, holder)
    store.release_claims(holder)
    store.cycles(SRC_URI, DEST, limit=3)


def _statements(store: StateStore, calls: Callable[[StateStore], None]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE"):
            seen.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", grab)
    try:
        calls(store)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", grab)
    return seen


def _sqlite_scans(db: Path, statements: list[tuple[str, Any]]) -> list[str]:
    """Each statement that reads a whole table or index (``SCAN``), with its plan."""
    bad = []
    with sqlite3.connect(db) as con:
        for sql, params in statements:
            plan = [r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            if any(line.startswith("SCAN") for line in plan):
                bad.append(f"{' '.join(sql.split())} -> {plan}")
    return bad


def _sqlite_store(tmp_path: Path) -> tuple[StateStore, Path]:
    db = tmp_path / "state.db"
    store = StateStore(str(db))
    _fill(store)
    with sqlite3.connect(db) as con:
        con.execute("ANALYZE")
    return store, db


def test_sqlite_per_run_queries_use_an_index(tmp_path: Path) -> None:
    store, db = _sqlite_store(tmp_path)
    statements = _statements(store, _one_run)
    store.close()
    assert len(statements) > 20  # the calls above were all seen
    assert _sqlite_scans(db, statements) == []


def test_the_check_finds_a_scan_without_the_indexes(tmp_path: Path) -> None:
    """The check above can fail: without the new indexes the same calls scan tables."""
    store, db = _sqlite_store(tmp_path)
    statements = _statements(store, _one_run)
    store.close()
    with sqlite3.connect(db) as con:
        for name in NEW_INDEXES:
            con.execute(f"DROP INDEX {name}")
        con.execute("DROP INDEX bridge_conflicts_one_open")
    scans = "\n".join(_sqlite_scans(db, statements))
    for table in ("bridge_resolutions", "bridge_conflicts", "bridge_claims", "bridge_cycles"):
        assert f"SCAN {table}" in scans


def test_an_older_store_gets_the_indexes_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:  # the stored format, as a store made before them
        con.executescript(GOLDEN.read_text())
        for name in NEW_INDEXES:
            con.execute(f"DROP INDEX IF EXISTS {name}")
        con.execute("INSERT INTO bridge_claims VALUES ('d', 'mlflow:r', 'h:1:n', 1.0, 1.0)")
    StateStore(str(db), read_only=True).close()  # a reader adds nothing
    with sqlite3.connect(db) as con:
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not have & set(NEW_INDEXES)
    store = StateStore(str(db))
    assert store.claims() == {("d", "mlflow:r"): "h:1:n"}  # rows kept
    store.close()
    with sqlite3.connect(db) as con:
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert set(NEW_INDEXES) <= have
    StateStore(str(db)).close()  # opened again: nothing to add, no error


def test_postgresql_per_run_queries_use_an_index(pg_database: str) -> None:
    store = StateStore(pg_database)
    _fill(store)
    statements = _statements(store, _one_run)
    assert len(statements) > 20
    bad = []
    with store.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("ANALYZE")
        for sql, params in statements:
            plan = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params)]
            if any("Seq Scan" in line for line in plan):
                bad.append(f"{' '.join(sql.split())} -> {plan}")
        conn.rollback()
    store.close()
    assert bad == []


@pytest.mark.parametrize("name", NEW_INDEXES)
def test_a_new_postgresql_store_has_the_indexes(pg_database: str, name: str) -> None:
    store = StateStore(pg_database)
    with store.engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": name}
        ).first()
    store.close()
    assert found is not None
