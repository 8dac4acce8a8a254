"""Concurrency: the state store's correctness under concurrent writers, run claims, and
MLflow stores created by two processes at once — on SQLite and PostgreSQL state.

Concurrent writers in one process each get their own :class:`StateStore` (their own
engine and connections): that is how two processes meet in the database.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from sdk_runs import make_big_run

from bridge import api
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.engine.claims import RunClaims
from bridge.errors import BridgeError
from bridge.schema import MetricChunk
from bridge.state import RunState, StateStore

DEST = "mlflow:sqlite:///dest.db"
RUN_IDS = ("r0", "r1", "r2")
N_STEPS, N_METRICS = 300, 3


def _state(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    return str(tmp / "state.db") if kind == "sqlite" else request.getfixturevalue("pg_database")


def _together(n: int, body: Callable[[int, StateStore], Any], url: str) -> list[Any]:
    """Run ``body(i, store)`` in ``n`` threads released at once, each with its own store;
    returns their results (exceptions included, not raised)."""
    stores = [StateStore(url) for _ in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return body(i, stores[i])
        except Exception as exc:  # noqa: BLE001 - the test inspects them
            return exc

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for store in stores:
            store.close()


# -- (c) watermarks: compare-and-set ---------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_lower_watermark_written_later_does_not_lower_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = StateStore(_state(kind, tmp_path, request))
    store.set_watermarks(DEST, "s", {"loss": 100, "acc": 5})
    store.set_watermarks(DEST, "s", {"loss": 40, "acc": 7, "lr": 2})  # a slower writer
    assert store.get_watermarks(DEST, "s") == {"loss": 100, "acc": 7, "lr": 2}
    # a new destination run resets them on purpose (nothing is in it yet)
    store.put_file(DEST, "s", "files/a.txt", "md5:x")
    store.reset_run(DEST, "s", RunState(dest_id="new", project_dest_id="1"))
    assert store.get_watermarks(DEST, "s") == {} and store.get_files(DEST, "s") == {}
    got = store.get_run(DEST, "s")
    assert got is not None and got.dest_id == "new" and not got.complete
    store.set_watermarks(DEST, "s", {"loss": 3})
    assert store.get_watermarks(DEST, "s") == {"loss": 3}
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_watermark_writers_keep_the_highest(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _state(kind, tmp_path, request)
    counts = list(range(0, 400, 10))

    def write(i: int, store: StateStore) -> None:
        for count in counts[i::4]:
            store.set_watermarks(DEST, "s", {"loss": count})

    assert _together(4, write, url) == [None] * 4
    store = StateStore(url)
    assert store.get_watermarks(DEST, "s") == {"loss": max(counts)}
    store.close()


# -- (d) one open row per conflict -----------------------------------------------------

LONG = "x" * 9000  # a long tag value: beyond PostgreSQL's btree row limit unhashed


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_record_conflict_keeps_one_open_row(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _state(kind, tmp_path, request)
    conflicts = [
        ("param:lr", "0.2", "0.1"),
        ("run", None, None),
        ("tag:note", LONG + "a", LONG + "b"),
        ("tag:empty", "", None),  # "" and NULL are different values
        ("tag:empty", None, ""),
    ] + [(f"param:k{i}", str(i), "old") for i in range(15)]

    def record(i: int, store: StateStore) -> None:
        for field, source, dest in conflicts:
            store.record_conflict(DEST, "s", field, source, dest, "synced")

    assert _together(6, record, url) == [None] * 6
    store = StateStore(url)
    rows = store.open_conflicts(DEST)
    got = sorted((r["field"], r["source_value"] or "", r["dest_value"] or "") for r in rows)
    want = sorted((f, s or "", d or "") for f, s, d in conflicts)
    assert got == want, f"{len(rows)} open rows for {len(conflicts)} conflicts"
    # a settled conflict seen again later is a new open row (the index covers open rows)
    store.resolve_conflict(DEST, "s", "param:lr", "0.2", "0.1", "dest", "me@host")
    store.record_conflict(DEST, "s", "param:lr", "0.2", "0.1", "synced")
    assert sum(r["field"] == "param:lr" for r in store.open_conflicts(DEST)) == 1
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_resolve_racing_record_closes_the_conflict(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A policy settling a conflict while another sync records it: no IntegrityError, and
    the conflict ends closed or open once — never twice."""
    url = _state(kind, tmp_path, request)
    fields = [f"tag:t{i}" for i in range(20)]

    def work(i: int, store: StateStore) -> None:
        for field in fields:
            if i % 2:
                store.resolve_conflict(DEST, "s", field, "a", "b", "source", "policy:source-wins")
            else:
                store.record_conflict(DEST, "s", field, "a", "b", None)

    assert _together(4, work, url) == [None] * 4
    store = StateStore(url)
    open_fields = [r["field"] for r in store.open_conflicts(DEST)]
    assert len(open_fields) == len(set(open_fields))
    store.close()


def test_an_older_state_store_with_duplicate_open_conflicts_still_opens(tmp_path: Path) -> None:
    """Stores written before the one-open-row index: the duplicates are closed (superseded,
    with a note), the oldest stays open, and the index is built."""
    path = tmp_path / "old.db"
    store = StateStore(str(path))
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX bridge_conflicts_one_open")  # as an older bridge left it
    for _ in range(3):
        db.execute(
            "INSERT INTO bridge_conflicts (dest_uri, source_id, field, source_value, dest_value,"
            " detected_at, resolved) VALUES (?, 's', 'param:lr', '0.2', '0.1', 1.0, 0)",
            (DEST,),
        )
    db.commit()
    db.close()
    store = StateStore(str(path))
    (row,) = store.open_conflicts(DEST)
    assert row["id"] == 1
    notes = [r["note"] for r in _all_resolutions(store)]
    assert notes == ["duplicate of open conflict #1"] * 2
    store.record_conflict(DEST, "s", "param:lr", "0.2", "0.1", None)
    assert len(store.open_conflicts(DEST)) == 1
    store.close()


def _all_resolutions(store: StateStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM bridge_resolutions ORDER BY id"))
        return [dict(r._mapping) for r in rows]


# -- (e) upserts under concurrent writers ----------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_upserts_of_new_rows_do_not_raise(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _state(kind, tmp_path, request)

    def write(i: int, store: StateStore) -> None:
        for n in range(15):
            sid = f"wandb:a/p/run{n}"
            store.put_run(DEST, sid, RunState(dest_id=f"d{i}", project_dest_id="1"))
            store.set_watermarks(DEST, sid, {"loss": i})
            store.put_file(DEST, sid, "files/a.txt", f"md5:{i}")
            store.put_object(DEST, f"art{n}", f"runs:/d{i}/x")
            store.put_editable(DEST, sid, {"notes": str(i)})
            store.add_pair_members("src", DEST, [sid])

    results = _together(6, write, url)
    assert [r for r in results if r is not None] == []
    store = StateStore(url)
    assert store.count_runs(DEST) == 15
    assert len(store.pair_members("src", DEST)) == 15
    store.close()


# -- run claims ------------------------------------------------------------------------


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_run_claim_is_taken_by_exactly_one_process(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _state(kind, tmp_path, request)
    holders: dict[int, RunClaims] = {}

    def take(i: int, store: StateStore) -> str | None:
        holders[i] = RunClaims(store, DEST)
        return holders[i].take("wandb:a/p/r1")

    results = _together(5, take, url)
    assert results.count(None) == 1, results
    winner = holders[results.index(None)]
    assert all(r == winner.holder for r in results if r is not None)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_claims_of_dead_or_silent_holders_are_taken_over(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = StateStore(_state(kind, tmp_path, request))
    host = socket.gethostname()
    never = lambda holder, beat: False  # noqa: E731 - a holder that never goes stale
    live = _sleeper()
    try:
        other = f"{host}:{live.pid}:n1"
        assert store.take_claim(DEST, "a", other, never) is None
        claims = RunClaims(store, DEST)
        assert claims.take("a") == other  # a live process on this host keeps it
        live.kill()
        live.wait()
        assert claims.take("a") is None  # its pid is gone: taken over
        assert store.claims(DEST)[(DEST, "a")] == claims.holder
    finally:
        live.kill()
    # another machine: only its heartbeat tells
    remote = "elsewhere:4242:n2"
    assert store.take_claim(DEST, "b", remote, never) is None
    assert claims.take("b") == remote
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE bridge_claims SET heartbeat = 0 WHERE source_id = 'b'"))
    assert claims.take("b") is None  # its lease expired
    # an earlier pass of this very process that ended without releasing
    leftover = RunClaims(store, DEST)
    assert leftover.take("c") is None
    leftover._finalizer.detach()  # as if the pass had not given it back
    with _live_nonces_cleared(leftover):
        assert claims.take("c") is None
    claims.close()
    assert store.claims(DEST) == {}
    store.close()


class _live_nonces_cleared:
    """The pass behind ``claims`` is over (its nonce no longer live in this process)."""

    def __init__(self, claims: RunClaims) -> None:
        self.nonce = claims.nonce

    def __enter__(self) -> None:
        from bridge.engine import claims as module

        module._LIVE.discard(self.nonce)

    def __exit__(self, *exc: object) -> None:
        pass


# -- syncs: SDK-made W&B runs into MLflow ----------------------------------------------


@pytest.fixture(scope="module")
def wandb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three offline runs (same project) made by the real SDK, in parallel."""
    root = tmp_path_factory.mktemp("runs")
    with ThreadPoolExecutor(len(RUN_IDS)) as pool:
        list(
            pool.map(
                lambda rid: make_big_run(root, N_STEPS * N_METRICS, N_METRICS, rid, project="demo"),
                RUN_IDS,
            )
        )
    return root / "wandb"


def _source_points(folder: Path) -> dict[str, dict[str, int]]:
    """source id -> metric key -> number of points, as the reader gives them."""
    reader = WandbOfflineReader(str(folder))
    out: dict[str, dict[str, int]] = {}
    for header in reader.list_runs():
        counts = out.setdefault(header.source_id, {})
        for item in reader.iter_history(reader.read_run(header)):
            if isinstance(item, MetricChunk):
                counts[item.key] = counts.get(item.key, 0) + len(item)
    reader.close()
    return out


def _dest_points(db: Path) -> dict[str, list[dict[str, int]]]:
    """source id -> one {metric key: points} per destination run carrying that identity."""
    con = sqlite3.connect(db)
    try:
        runs = con.execute(
            "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'bridge.source_id' AND r.lifecycle_stage = 'active'"
        ).fetchall()
        out: dict[str, list[dict[str, int]]] = {}
        for run_id, sid in runs:
            rows = con.execute(
                "SELECT key, count(*) FROM metrics WHERE run_uuid = ? GROUP BY key", (run_id,)
            ).fetchall()
            out.setdefault(sid, []).append(dict(rows))
        return out
    finally:
        con.close()


_LAUNCH = """
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
# Everything slow to import is imported before the start line, so the processes reach
# the planning of the same runs within milliseconds of each other.
import bridge.adapters.mlflow.writer, bridge.adapters.wandb.offline_reader, bridge.api
import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store
from bridge.cli import main
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
main.main(args=sys.argv[3:], prog_name="bridge")
"""


def _start_together(tmp: Path, commands: list[list[str]], script: str = _LAUNCH) -> list[Any]:
    """Start one process per command and release them at the same instant."""
    go = tmp / "go"
    procs = []
    for i, args in enumerate(commands):
        ready = tmp / f"ready-{i}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, str(ready), str(go), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(os.environ, CI="1"),
            )
        )
    deadline = time.time() + 120
    while not all((tmp / f"ready-{i}").exists() for i in range(len(commands))):
        assert time.time() < deadline, "the processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    return [(*p.communicate(timeout=300), p.returncode) for p in procs]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_syncs_from_two_copies_of_a_folder_copy_each_run_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, wandb_folder: Path
) -> None:
    """(a) The same runs through two source URIs (a folder and its copy) into one MLflow,
    at the same time, sharing the state store: the URI-keyed pair lock does not serialize
    them; the run claims must. One destination run per identity, every point once."""
    copy = tmp_path / "copy"
    shutil.copytree(wandb_folder, copy, symlinks=True)
    db = tmp_path / "mlflow.db"
    dest = f"mlflow:sqlite:///{db}"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # an existing store
    state = _state(kind, tmp_path, request)
    outs = _start_together(
        tmp_path,
        [
            ["sync", f"wandb-offline:{folder}", dest, "--state", state, "--json"]
            for folder in (wandb_folder, copy)
        ],
    )
    assert [code for _, _, code in outs] == [0, 0], [err[-3000:] for _, err, _ in outs]
    reports = [json.loads(out) for out, _, _ in outs]

    source = _source_points(wandb_folder)
    assert len(source) == len(RUN_IDS)
    written = _dest_points(db)
    assert {sid: len(copies) for sid, copies in written.items()} == {sid: 1 for sid in source}
    for sid, counts in source.items():
        assert written[sid] == [counts], sid  # every point, once
        lines = [r for report in reports for r in report["runs"] if r["source_id"] == sid]
        assert len(lines) == 2 and all(r["outcome"] != "failed" for r in lines), lines
        assert sorted(r["action"] for r in lines).count("create") == 1, lines
        # The other process found it claimed, or planned it once the first had written it
        # (compared then: the copy's folder has another fingerprint) — the same dest run.
        for line in lines:
            if line["outcome"] == "skipped":
                assert line["reason"].startswith("being copied by "), line
        assert len({r["dest_id"] for r in lines if r["dest_id"]}) == 1, lines
    assert StateStore(state).claims() == {}  # every claim given back

    again = api.sync(f"wandb-offline:{copy}", dest, state=state)  # nothing left to write
    assert "create" not in again.counts() and again.exit_code() == 0
    assert sum(r.points_written + r.files_written for r in again.runs) == 0


_INIT = """
import os, sys, time
ready, go, uri = sys.argv[1], sys.argv[2], sys.argv[3]
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.errors import BridgeError
from bridge.schema import Project
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
writer = MlflowWriter(uri)
try:
    writer.check()
    print(writer.ensure_project(Project(source_id="wandb:acme/demo", name="demo", entity="acme")))
except BridgeError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def _alembic_tmp_tables(uri: str) -> list[str]:
    engine = sa.create_engine(uri)
    try:
        return [n for n in sa.inspect(engine).get_table_names() if n.startswith("_alembic")]
    finally:
        engine.dispose()


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_processes_creating_a_new_mlflow_store_at_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, wandb_folder: Path
) -> None:
    """(b) Three processes open a brand-new MLflow store at the same instant: MLflow's
    schema migrations run once (serialized), all succeed, no ``_alembic_tmp_*`` table is
    left, and a later sync works."""
    uri = (
        f"sqlite:///{tmp_path / 'new.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    outs = _start_together(tmp_path, [[uri]] * 3, script=_INIT)
    assert [code for _, _, code in outs] == [0] * 3, [err[-3000:] for _, err, _ in outs]
    assert len({out.strip() for out, _, _ in outs}) == 1  # one experiment, the same for all
    assert _alembic_tmp_tables(uri) == []
    plan = api.sync(f"wandb-offline:{wandb_folder}", f"mlflow:{uri}", state=str(tmp_path / "s.db"))
    assert plan.exit_code() == 0 and plan.counts() == {"create": len(RUN_IDS)}


def test_a_half_migrated_store_is_named_with_its_fix(tmp_path: Path) -> None:
    """A crash mid-migration leaves an ``_alembic_tmp_<table>``; MLflow then fails with
    "table already exists" on every later open. Say which table and what to do."""
    db = tmp_path / "half.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE _alembic_tmp_runs (run_uuid VARCHAR(32))")
    con.commit()
    con.close()
    writer = MlflowWriter(f"sqlite:///{db}")
    with pytest.raises(BridgeError) as err:
        writer.check()
    text = str(err.value)
    assert "\n" not in text
    assert "_alembic_tmp_runs" in text and f"mlflow db upgrade sqlite:///{db}" in text


_HOLD = """
import sys, time
from bridge.engine.claims import RunClaims
from bridge.state import StateStore
claims = RunClaims(StateStore(sys.argv[1]), sys.argv[2])
assert claims.take(sys.argv[3]) is None
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.e2e
def test_a_run_another_process_is_copying_is_skipped_not_lost(
    tmp_path: Path, wandb_folder: Path
) -> None:
    state = str(tmp_path / "state.db")
    dest = f"mlflow:sqlite:///{tmp_path / 'mlflow.db'}"
    held = "wandb:acme/demo/r1"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, state, dest, held], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        plan = api.sync(f"wandb-offline:{wandb_folder}", dest, state=state)
        line = next(r for r in plan.runs if r.source_id == held)
        assert (line.action, line.outcome) == ("skip", "skipped")
        assert line.reason == f"being copied by {socket.gethostname()}:{holder.pid}"
        assert plan.exit_code() == 0
        assert plan.counts() == {"create": len(RUN_IDS) - 1, "skip": 1}
    finally:
        holder.kill()
        holder.wait()
    plan = api.sync(f"wandb-offline:{wandb_folder}", dest, state=state)
    assert plan.counts() == {"create": 1, "unchanged": len(RUN_IDS) - 1}
    copies = _dest_points(tmp_path / "mlflow.db")
    assert sorted(copies) == sorted(f"wandb:acme/demo/{r}" for r in RUN_IDS)
    assert all(len(c) == 1 for c in copies.values())
