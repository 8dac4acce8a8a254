"""The state store's stored format is fixed (issue 12): table names, columns, keys and the
one-open-conflict index as the code before the bridge/state/ split created them
(tests/state_schema_sqlite.sql, dumped from that code). A store made by it opens unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.state import RunState, StateStore

GOLDEN = Path(__file__).with_name("state_schema_sqlite.sql")


def _dump(db: Path) -> str:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type DESC, name")
        return "".join(f"-- {kind} {name}\n{sql};\n" for kind, name, sql in rows if sql)


def test_a_new_store_has_exactly_the_stored_format(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.db"))
    store.close()
    assert _dump(tmp_path / "state.db") == GOLDEN.read_text()


def test_a_store_made_before_the_split_opens_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:
        con.executescript(GOLDEN.read_text())
        con.execute(
            "INSERT INTO bridge_runs VALUES ('mlflow:x', 'wandb:e/p/r', 'd1', 'p1', 'fp', 1, "
            "'{\"a\": \"1\"}', '{}', 1.0)"
        )
        con.execute("INSERT INTO bridge_streams VALUES ('mlflow:x', 'wandb:e/p/r', 'loss', 7)")
    store = StateStore(str(db))
    assert store.get_run("mlflow:x", "wandb:e/p/r") == RunState(
        dest_id="d1", project_dest_id="p1", fingerprint="fp", complete=True,
        written_params={"a": "1"},
    )  # fmt: skip
    assert store.get_watermarks("mlflow:x", "wandb:e/p/r") == {"loss": 7}
    store.close()
    assert _dump(db) == GOLDEN.read_text()


def test_a_store_made_before_sharding_is_brought_up_to_date(tmp_path: Path) -> None:
    """A store of the format before issue 15 (no pass, fence or parent-link tables, no
    per-run indexes on conflicts/claims/cycles) opens, keeps its rows, and is then exactly
    the current format."""
    db = tmp_path / "before.db"
    with sqlite3.connect(db) as con:
        con.executescript(GOLDEN.with_name("state_schema_sqlite_before_15.sql").read_text())
        con.execute(
            "INSERT INTO bridge_runs VALUES ('mlflow:x', 'wandb:e/p/r', 'd1', 'p1', 'fp', 1, "
            "'{}', '{}', 1.0)"
        )
    store = StateStore(str(db))
    assert store.get_run("mlflow:x", "wandb:e/p/r") is not None
    store.close()
    assert _dump(db) == GOLDEN.read_text()
