"""Opening an MLflow store: a new sqlite store's schema is created fsync-free
(bridge/adapters/mlflow/uri.py ``create_sqlite_schema``) and must be exactly MLflow's own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.adapters.mlflow import uri as uri_mod
from bridge.adapters.mlflow.uri import _empty_sqlite_file, create_sqlite_schema
from bridge.adapters.mlflow.writer import MlflowWriter


def _schema(db: Path) -> tuple[list[tuple[str, str, list[str]]], list[tuple[object, ...]]]:
    """Every table/index definition and alembic's version row(s). A definition's lines are
    compared as a sorted list: alembic's batch rebuild of ``runs`` orders its named CHECK
    constraints differently from one process state to another with MLflow alone."""
    con = sqlite3.connect(db)
    try:
        defs = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        version = con.execute("SELECT * FROM alembic_version").fetchall()
        lines = [
            (t, n, sorted(x.strip().rstrip(",") for x in (q or "").splitlines()))
            for t, n, q in defs
        ]
        return lines, version
    finally:
        con.close()


def _rows(db: Path, table: str, skip: set[str]) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if r[1] not in skip]
        names = ", ".join(f'"{c}"' for c in cols)
        return sorted(con.execute(f'SELECT {names} FROM "{table}"').fetchall(), key=repr)
    finally:
        con.close()


def test_new_sqlite_store_is_mlflows_own_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge's fast creation and a plain ``MlflowClient`` give the same tables,
    indexes, alembic version and rows (the Default experiment, the default workspace)."""
    from mlflow.tracking import MlflowClient

    created: list[str] = []

    def spy(uri: str) -> None:
        created.append(uri)
        create_sqlite_schema(uri)

    monkeypatch.setattr(uri_mod, "create_sqlite_schema", spy)

    plain, fast = tmp_path / "plain.db", tmp_path / "sub" / "fast.db"
    MlflowClient(tracking_uri=f"sqlite:///{plain}").search_experiments()
    writer = MlflowWriter(f"sqlite:///{fast}")
    experiments = writer.client.search_experiments()
    assert [e.name for e in experiments] == ["Default"]
    assert created == [f"sqlite:///{fast}"]
    assert _schema(fast) == _schema(plain)
    con = sqlite3.connect(plain)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    con.close()
    times = {"creation_time", "last_update_time", "artifact_location"}
    for table in tables:
        assert _rows(fast, table, times) == _rows(plain, table, times), table


def test_existing_files_are_left_to_mlflow(tmp_path: Path) -> None:
    """A file that holds any table (a foreign database, a store to upgrade) is not touched:
    creating a schema there, and fsync-free, is MLflow's call to make, not ours."""
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.commit()
    con.close()
    create_sqlite_schema(f"sqlite:///{db}")
    assert [n for (_t, n, _s) in _schema_names(db)] == ["mine"]


def _schema_names(db: Path) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(db)
    try:
        return [tuple(r) for r in con.execute("SELECT type, name, sql FROM sqlite_master")]
    finally:
        con.close()


@pytest.mark.parametrize(
    "uri", ["sqlite:///:memory:", "sqlite://", "postgresql://nobody@127.0.0.1:1/x"]
)
def test_other_uris_are_not_created_here(uri: str) -> None:
    """In-memory sqlite and server databases: nothing to create (no connection made)."""
    assert _empty_sqlite_file(uri) is None


_KILL_MIDWAY = """
import os, signal, sys
import sqlalchemy as sa
seen = [0]
def hit(*args):
    seen[0] += 1
    if seen[0] >= int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
sa.event.listen(sa.engine.Engine, "after_cursor_execute", hit)
from bridge.adapters.mlflow.writer import MlflowWriter
MlflowWriter(sys.argv[1]).client.search_experiments()
"""


@pytest.mark.parametrize("statements", [50, 400])
def test_creation_killed_midway_then_reopened(tmp_path: Path, statements: int) -> None:
    """SIGKILL after N SQL statements of the creation (N=50: inside the first migrations,
    400: inside a batch table rebuild). MLflow's own creation leaves a store it cannot open
    again ("duplicate column name: step", an ``_alembic_tmp_*`` table); the bridge's opens."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'k.db'}"
    done = subprocess.run([sys.executable, "-c", _KILL_MIDWAY, uri, str(statements)], check=False)
    assert done.returncode == -9
    writer = MlflowWriter(uri)
    assert [e.name for e in writer.client.search_experiments()] == ["Default"]
    assert not (tmp_path / "k.db.bridge-new").exists()


def test_a_symlinked_new_store_is_created_at_its_target(tmp_path: Path) -> None:
    """The rename into place must not replace the user's link with a file."""
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "real" / "t.db")
    writer = MlflowWriter(f"sqlite:///{link}")
    assert [e.name for e in writer.client.search_experiments()] == ["Default"]
    assert link.is_symlink() and (tmp_path / "real" / "t.db").stat().st_size > 0
