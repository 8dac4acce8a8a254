"""Leases and fencing tokens on run claims (issue 15): a holder that kept running past its
lease cannot overwrite its successor — on SQLite (one machine) and PostgreSQL (shared).

Every take of a run's claim bumps its token (``bridge_claim_fences``); every state write of
a claimed run carries the pass's (holder, token) and is checked in its own transaction.
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
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from sdk_runs import make_big_run

from bridge import api
from bridge.engine.claims import FencedStore, RunClaims
from bridge.errors import LeaseLost
from bridge.state import RunState, StateStore
from bridge.state.claims import Fence

DEST = "mlflow:sqlite:///dest.db"
SID = "wandb:acme/demo/r1"


def _state(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    return str(tmp / "state.db") if kind == "sqlite" else request.getfixturevalue("pg_database")


def _expire(store: StateStore, source_id: str) -> None:
    """The holder of ``source_id`` stopped renewing long ago (its lease expired)."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE bridge_claims SET heartbeat = 0 WHERE source_id = :s"), {"s": source_id}
        )


def _snapshot(store: StateStore) -> dict[str, Any]:
    """Everything the state holds about the run (what a refused write must not change)."""
    run = store.get_run(DEST, SID)
    return {
        "run": None if run is None else run.model_dump(),
        "marks": store.get_watermarks(DEST, SID),
        "digests": store.get_stream_digests(DEST, SID),
        "files": store.get_files(DEST, SID),
        "conflicts": [
            (c["field"], c["source_value"], c["resolved"]) for c in store.open_conflicts(DEST)
        ],
        "resolutions": sorted(store.resolutions(DEST, SID)),
        "editable": store.get_editable(DEST, SID),
    }


def _writes(store: StateStore, tag: str) -> list[Any]:
    """One of each per-run state write, with values named by ``tag``."""
    return [
        lambda: store.put_run(DEST, SID, RunState(dest_id=f"run-{tag}", project_dest_id="1")),
        lambda: store.set_watermarks(DEST, SID, {"loss": 50}, {"loss": (50, f"d-{tag}")}),
        lambda: store.put_file(DEST, SID, "files/a.txt", f"md5:{tag}"),
        lambda: store.record_conflict(DEST, SID, "tag:t", tag, "dest", None),
        lambda: store.resolve_conflict(DEST, SID, "param:p", tag, "d", "source", "policy:x"),
        lambda: store.close_stale_conflicts(DEST, SID, set()),
        lambda: store.put_editable(DEST, SID, {"notes": tag}),
        lambda: store.reset_run(DEST, SID, RunState(dest_id=f"new-{tag}", project_dest_id="1")),
        lambda: store.forget_run(DEST, SID),
    ]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_holder_past_its_lease_cannot_write_over_its_successor(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = StateStore(_state(kind, tmp_path, request))
    a, b = RunClaims(store, DEST), RunClaims(store, DEST)
    a_view = FencedStore(store, lambda dest, sid: a.fence(sid))
    b_view = FencedStore(store, lambda dest, sid: b.fence(sid))
    assert a.take(SID) is None
    first = store.claim_token(DEST, SID)
    assert first is not None
    a_view.put_run(DEST, SID, RunState(dest_id="run-a", project_dest_id="1"))
    a_view.set_watermarks(DEST, SID, {"loss": 10}, {"loss": (10, "d-a")})
    a_view.put_file(DEST, SID, "files/a.txt", "md5:a")
    assert b.take(SID) == a.holder  # A's lease is alive: B waits

    _expire(store, SID)  # A stopped renewing (paused, cut off)
    assert b.take(SID) is None  # B takes the run over
    assert store.claim_token(DEST, SID) == first + 1
    before = _snapshot(store)
    assert before["run"]["dest_id"] == "run-a" and before["marks"] == {"loss": 10}
    for write in _writes(a_view, "a"):
        with pytest.raises(LeaseLost) as lost:
            write()
        assert f"lease lost to {socket.gethostname()}:{os.getpid()}" in str(lost.value)
        assert "\n" not in str(lost.value) and SID in str(lost.value)
        assert _snapshot(store) == before  # nothing written
    # A does not know yet (no renewal since); a renewal finds the claim gone
    a.check(SID)
    a.renew()
    with pytest.raises(LeaseLost):
        a.check(SID)
    with pytest.raises(LeaseLost):
        a.fence(SID)
    assert a.lost() == {SID: f"{socket.gethostname()}:{os.getpid()}"}

    for write in _writes(b_view, "b")[:7]:
        write()  # the successor's writes go through
    after = _snapshot(store)
    assert after["run"]["dest_id"] == "run-b" and after["marks"] == {"loss": 50}
    assert after["files"] == {"files/a.txt": "md5:b"} and after["editable"] == {"notes": "b"}
    a.release(SID)  # the lost claim is B's: A's release leaves it
    assert store.claims(DEST) == {(DEST, SID): b.holder}
    a.close()
    b.close()
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_take_bumps_the_token_and_old_fences_are_refused(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = StateStore(_state(kind, tmp_path, request))
    claims = RunClaims(store, DEST)
    assert store.claim_token(DEST, SID) is None
    assert claims.take(SID) is None
    old = claims.fence(SID)
    assert old is not None and old.token == 1
    claims.release(SID)
    assert store.claim_token(DEST, SID) == 1  # kept on release, never reset
    assert claims.fence(SID) is None  # not held: unfenced
    with pytest.raises(LeaseLost, match="claim given back"):
        store.put_run(DEST, SID, RunState(dest_id="x", project_dest_id="1"), fence=old)
    assert claims.take(SID) is None
    new = claims.fence(SID)
    assert new == Fence(claims.holder, 2)
    # the same holder, an older take: refused (a pass keeps the token of its latest take)
    with pytest.raises(LeaseLost):
        store.put_file(DEST, SID, "f", "md5:x", fence=old)
    store.put_file(DEST, SID, "f", "md5:y", fence=new)
    assert store.get_files(DEST, SID) == {"f": "md5:y"}
    # writes of runs the pass does not hold, and the CLI's own writes, go unfenced
    store.put_file(DEST, "other", "f", "md5:z")
    claims.close()
    store.close()


_COUNTER = """
import sys
from bridge.engine.claims import RunClaims
from bridge.errors import LeaseLost
from bridge.state import RunState, StateStore
store = StateStore(sys.argv[1])
dest, sid, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4])
claims = RunClaims(store, dest)
always = lambda holder, beat: True  # every take is a takeover: the worst case
done = refused = 0
for _ in range(rounds):
    taken = store.take_fenced_claim(dest, sid, claims.holder, always)
    for _ in range(3):
        st = store.get_run(dest, sid)
        n = int(st.dest_id) if st is not None else 0
        try:
            store.put_run(dest, sid, RunState(dest_id=str(n + 1), project_dest_id="1"), taken)
        except LeaseLost:
            refused += 1
            break
        done += 1
print(done, refused, flush=True)
"""


def _counter_rounds(url: str, rounds: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _COUNTER, url, DEST, SID, str(rounds)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    done, refused = out.stdout.split()
    return int(done), int(refused)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_takers_never_both_write(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Takers that steal the claim from each other all the time, each reading a counter
    and writing it + 1 with its fence: a write by a holder whose claim was taken between
    its read and its write is refused, so no increment is lost (without fencing, two
    holders writing at once lose updates). Threads on both stores; on PostgreSQL also
    two processes."""
    url = _state(kind, tmp_path, request)
    StateStore(url).close()  # the tables, before the takers race
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def taker() -> None:
        store = StateStore(url)  # its own engine: as a second process meets the first
        claims = RunClaims(store, DEST)
        done = refused = 0
        for _ in range(15):
            taken = store.take_fenced_claim(DEST, SID, claims.holder, lambda h, b: True)
            assert isinstance(taken, Fence)
            for _ in range(3):
                st = store.get_run(DEST, SID)
                n = int(st.dest_id) if st is not None else 0
                try:
                    st = RunState(dest_id=str(n + 1), project_dest_id="1")
                    store.put_run(DEST, SID, st, fence=taken)
                except LeaseLost:
                    refused += 1
                    break
                done += 1
        with lock:
            results.append((done, refused))
        claims.close()
        store.close()

    threads = [threading.Thread(target=taker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if kind == "postgres":
        with ThreadPool(2) as pool:
            results.extend(pool.map(lambda _: _counter_rounds(url, 40), range(2)))
    store = StateStore(url)
    final = store.get_run(DEST, SID)
    assert final is not None
    total = sum(done for done, _ in results)
    assert int(final.dest_id) == total, results  # no increment lost
    # takes: 45 by the threads (+ 80 by the processes): one token each, in order
    takes = 45 + (80 if kind == "postgres" else 0)
    assert store.claim_token(DEST, SID) == takes
    store.close()


class ThreadPool:
    """A tiny pool for two blocking calls (the processes run at the same time)."""

    def __init__(self, n: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(n)

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def map(self, fn: Any, items: Any) -> list[Any]:
        return list(self._pool.map(fn, items))


# -- end to end: a pass paused past its lease while another process finishes the run ------

_PAUSED = """
import gc, os, sys, time
marker, resume, point = sys.argv[1], sys.argv[2], sys.argv[3]
import bridge.faults as faults
original = faults.kill_point
def kill_point(name):
    original(name)
    if name == point and not os.path.exists(marker):
        # The pass stalls here with its state stores' locks held: no state transaction
        # of this process runs (the heartbeat cannot renew either) until the test says.
        from bridge.state.base import StoreBase
        locks = {id(o._lock): o._lock for o in gc.get_objects() if isinstance(o, StoreBase)}
        for lock in locks.values():
            lock.acquire()
        open(marker, "w").close()
        while not os.path.exists(resume):
            time.sleep(0.05)
        for lock in locks.values():
            lock.release()
faults.kill_point = kill_point
from bridge.cli import main
main.main(args=sys.argv[4:], prog_name="bridge")
"""

_CLI = "import sys; from bridge.cli import main; main.main(args=sys.argv[1:], prog_name='bridge')"
LEASE = 4.0
N_POINTS, N_METRICS = 3000, 3


def _dest_runs(db: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """dest run id -> metric key -> (points, distinct steps), runs of the identity tag."""
    con = sqlite3.connect(db)
    try:
        runs = [
            r
            for (r,) in con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'bridge.source_id' AND r.lifecycle_stage = 'active'"
            )
        ]
        out = {}
        for run_id in runs:
            rows = con.execute(
                "SELECT key, count(*), count(DISTINCT step) FROM metrics WHERE run_uuid = ? "
                "GROUP BY key",
                (run_id,),
            ).fetchall()
            out[run_id] = {key: (n, steps) for key, n, steps in rows}
        return out
    finally:
        con.close()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("kind", "point"),
    [
        ("sqlite", "apply.history.batch.after_flush"),
        ("postgres", "apply.metadata.after_state"),
        ("sqlite", "plan.run"),
    ],
)
def test_a_paused_pass_loses_its_run_to_a_successor_and_writes_nothing_more(
    kind: str, point: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Process A stalls mid-run (no state transaction, no renewal); its lease expires; process B takes the run over and finishes it; A goes on: its state writes
    are refused, it writes nothing more of the run, and its line says the lease was lost.
    The destination holds the run once, every point once."""
    make_big_run(tmp_path / "src", N_POINTS, N_METRICS, "r1", project="demo")
    source = f"wandb-offline:{tmp_path / 'src' / 'wandb'}"
    shutil.copytree(tmp_path / "src", tmp_path / "copy", symlinks=True)
    copy = f"wandb-offline:{tmp_path / 'copy' / 'wandb'}"
    db = tmp_path / "mlflow.db"
    dest = f"mlflow:sqlite:///{db}"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # an existing store
    state = _state(kind, tmp_path, request)
    # a watermark commit every 500 points: the history is written in several batches
    env = dict(os.environ, CI="1", BRIDGE_CLAIM_LEASE=str(LEASE), BRIDGE_HISTORY_COMMIT_EVERY="500")
    marker, resume = tmp_path / "paused", tmp_path / "resume"
    args = ["sync", source, dest, "--state", state, "--json"]
    first = subprocess.Popen(
        [sys.executable, "-c", _PAUSED, str(marker), str(resume), point, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first pass never reached " + point
            time.sleep(0.05)
        time.sleep(LEASE * 1.5)  # A's lease runs out while it stalls
        # B reads a copy of the folder (another pair: A, stalled, holds the pair lock of
        # its own; the run claims are what keep the runs apart)
        second = subprocess.run(
            [sys.executable, "-c", _CLI, "sync", copy, *args[2:]],
            capture_output=True,
            text=True,
            env=env,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        line_b = json.loads(second.stdout)["runs"][0]
        assert line_b["outcome"] == "done", line_b
    finally:
        resume.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 1, err[-3000:]
    line_a = json.loads(out)["runs"][0]
    assert line_a["outcome"] == "failed", line_a
    assert "lease lost to " in line_a["error"] and "the successor finishes it" in line_a["error"]

    written = _dest_runs(db)
    assert len(written) == 1, written  # one destination run
    (counts,) = written.values()
    per_key = N_POINTS // N_METRICS
    assert all(n == steps for n, steps in counts.values()), counts  # no point twice
    assert {k: v for k, v in counts.items() if not k.startswith("system/")} == {
        f"m{i}": (per_key, per_key) for i in range(N_METRICS)
    }  # every point
    store = StateStore(state)
    st = store.get_run(dest, "wandb:acme/demo/r1")
    assert st is not None and st.complete and st.dest_id in written
    marks = store.get_watermarks(dest, "wandb:acme/demo/r1")
    assert marks == {key: n for key, (n, _) in counts.items()}
    assert store.claims() == {}  # B gave it back; A's release left it alone
    store.close()
    again = api.sync(copy, dest, state=state)  # nothing left to write
    assert again.exit_code() == 0, again.runs
    assert sum(r.points_written + r.files_written for r in again.runs) == 0
