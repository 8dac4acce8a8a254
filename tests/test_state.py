"""State store: id map, watermarks, files and conflicts on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import BridgeError
from bridge.state import RunState, StateStore, normalize_state_url


def _exercise(store: StateStore) -> None:
    dest = "mlflow:sqlite:///x.db"
    assert store.get_run(dest, "wandb:a/p/r1") is None
    st = RunState(dest_id="abc", project_dest_id="1", written_params={"lr": "0.1"})
    store.put_run(dest, "wandb:a/p/r1", st)
    got = store.get_run(dest, "wandb:a/p/r1")
    assert got is not None and got.dest_id == "abc" and not got.complete
    assert got.written_params == {"lr": "0.1"}
    st.complete, st.fingerprint = True, "fp1"
    store.put_run(dest, "wandb:a/p/r1", st)
    got = store.get_run(dest, "wandb:a/p/r1")
    assert got is not None and got.complete and got.fingerprint == "fp1"
    # the same source id in another destination is a separate row
    assert store.get_run("mlflow:http://other", "wandb:a/p/r1") is None
    assert store.count_runs(dest) == 1

    store.set_watermarks(dest, "wandb:a/p/r1", {"loss": 10, "acc": 3})
    store.set_watermarks(dest, "wandb:a/p/r1", {"loss": 25})
    assert store.get_watermarks(dest, "wandb:a/p/r1") == {"loss": 25, "acc": 3}

    store.put_file(dest, "wandb:a/p/r1", "files/output.log", "size:10")
    store.put_file(dest, "wandb:a/p/r1", "files/output.log", "size:12")
    assert store.get_files(dest, "wandb:a/p/r1") == {"files/output.log": "size:12"}

    store.record_conflict(dest, "wandb:a/p/r1", "param:lr", "0.2", "0.1", "0.1")
    store.record_conflict(dest, "wandb:a/p/r1", "param:lr", "0.2", "0.1", "0.1")
    conflicts = store.open_conflicts(dest)
    assert len(conflicts) == 1 and conflicts[0]["field"] == "param:lr"

    store.forget_run(dest, "wandb:a/p/r1")
    assert store.get_run(dest, "wandb:a/p/r1") is None
    assert store.get_watermarks(dest, "wandb:a/p/r1") == {}


def test_sqlite_state_round_trip(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.db"))
    _exercise(store)
    store.close()
    # survives reopening
    store = StateStore(str(tmp_path / "state.db"))
    assert store.open_conflicts() != []


def test_postgres_state_round_trip(pg_database: str) -> None:
    store = StateStore(pg_database)
    _exercise(store)
    store.close()


def test_dry_run_does_not_create_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"
    store = StateStore(str(path), read_only=True)
    assert store.get_run("d", "s") is None
    assert not path.exists()


def test_unusable_state_url_is_one_clear_error() -> None:
    with pytest.raises(BridgeError) as err:
        StateStore("postgresql://bridge:secret@127.0.0.1:1/nope")
    assert "state store" in str(err.value) and "secret" not in str(err.value)


def test_plain_paths_become_sqlite_urls(tmp_path: Path) -> None:
    assert normalize_state_url(str(tmp_path / "s.db")).startswith("sqlite:////")
    assert normalize_state_url("postgresql://x/y") == "postgresql://x/y"
