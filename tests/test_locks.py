"""One cycle per pair at a time across processes: file lock (SQLite state) and PostgreSQL
advisory lock (PostgreSQL state); a second process skips (and says so) or waits; a lock
left by a killed process is recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_conflicts import Pair

from bridge import api
from bridge.locks import LockHeld, pair_lock


def _state(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    return str(tmp / "state.db") if kind == "sqlite" else request.getfixturevalue("pg_database")


def _mirror(pair: Pair, state: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "mirror", pair.src, pair.dst, "--state", state,
         "--cycles", "1", "--log-format", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, CI="1"),
    )  # fmt: skip


def _lines(proc: subprocess.Popen[str]) -> tuple[int, list[dict]]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode is not None
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert lines, err
    return proc.returncode, lines


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_busy_pair_skips_or_waits(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pair = Pair(tmp_path)
    state = _state(kind, tmp_path, request)
    with pair_lock(state, pair.src, pair.dst):
        code, (line,) = _lines(_mirror(pair, state))
        assert code == 0
        assert "another cycle" in line["skipped"] and line["result"] == 0
        assert str(os.getpid()) in line["skipped"]  # says who holds it
        # the same through `sync --json`
        sync = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "sync", pair.src, pair.dst, "--state", state,
             "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sync.returncode == 0 and json.loads(sync.stdout)["skipped"]
        waiter = _mirror(pair, state, "--wait")
        time.sleep(4)
        assert waiter.poll() is None, "a --wait process must wait for the lock"
    code, (line,) = _lines(waiter)
    assert code == 0 and line["actions"] == {"create": 1} and "skipped" not in line
    assert pair.dest_run().data.params["lr"] == "0.1"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_lock_of_a_killed_process_is_recovered(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    state = _state(kind, tmp_path, request)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom bridge.locks import pair_lock\n"
         "with pair_lock(sys.argv[1], 'a:src', 'b:dst'):\n"
         "    print('held', flush=True)\n    time.sleep(120)\n", state],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld):
        with pair_lock(state, "a:src", "b:dst"):
            pass
    holder.kill()
    holder.wait()
    with pair_lock(state, "a:src", "b:dst", wait=True, timeout=15):
        pass  # recovered: flock dies with the process, an advisory lock with its session


def test_two_mirrors_started_together(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    state = str(tmp_path / "state.db")
    procs = [_mirror(pair, state), _mirror(pair, state)]
    results = [_lines(p) for p in procs]
    assert [code for code, _ in results] == [0, 0]
    lines = [lines[0] for _, lines in results]
    ran = [x for x in lines if "skipped" not in x]
    # one process ran the cycle; the other skipped and said so, or ran after it and
    # found nothing to do (the lock serialized them)
    assert any(x.get("actions") == {"create": 1} for x in ran)
    assert len(ran) == 1 or {tuple(x["actions"]) for x in ran} == {("create",), ("unchanged",)}
    pair.dest_run()  # exactly one destination run
    cycles = api.status(state)[0]
    assert cycles["last_cycle"]["result"] == 0
