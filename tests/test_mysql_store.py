"""End to end: an MLflow store on MySQL/MariaDB (``mysql+pymysql://``) as destination and as
source, a fresh database per test (tests/mysql_db.py; skipped only when no server answers).

* W&B offline → MySQL: every point the SDK logged is stored, the same rows as a sqlite
  destination synced from the same run; NaN/±inf stored as MLflow's own ``log_batch`` stores
  those values on MySQL (``metrics`` and ``latest_metrics`` rows, bit for bit); a re-sync
  writes nothing; ``bridge verify`` exits 0.
* MySQL → sqlite: runs logged with ``MlflowClient`` on MySQL are copied point for point,
  param for param; verify is clean and a re-sync writes nothing.
* A sync into MySQL SIGKILLed right after a committed flush (before its watermark), then
  run again: every point stored exactly once.

The SQL bulk sink takes its SQLAlchemy Core path on MySQL (bulk.py; tests/test_bulk_differential.py
compares its rows with ``log_batch``'s on MySQL too).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.mysql_db import SKIP_REASON, fresh_mysql_database, mysql_answers
from tests.sdk_runs import _start, make_big_run, run_folders

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not mysql_answers(), reason=SKIP_REASON)]

STEPS = 1500
KEYS = ("loss", "acc", "zero", "edge")
CLI = [sys.executable, "-m", "bridge.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "BRIDGE_KILL_AT"}


def logged(key: str, step: int) -> float:
    """What the SDK run logs for ``key`` at ``step``: NaN, ±inf, ±0.0, extremes among them."""
    if key == "loss":
        return math.nan if step % 97 == 5 else 1.0 / (step + 1)
    if key == "acc":
        return math.inf if step % 50 == 7 else -math.inf if step % 50 == 8 else step / 1000
    if key == "zero":
        return -0.0 if step % 2 else 0.0
    return (1.7976931348623157e308, -5e-324, 5e-324, -1e300, 123.456)[step % 5]


_ODD = (
    inspect.getsource(logged)
    + """
run = wandb.init(entity=ENTITY, project=PROJECT, id="odd", config={"lr": 0.01, "opt": "adam"})
for step in range(int(sys.argv[3])):
    run.log({k: logged(k, step) for k in json.loads(sys.argv[4])})
run.finish()
"""
)


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A W&B offline run (the real SDK) logging ``KEYS`` for ``STEPS`` steps by :func:`logged`."""
    root = tmp_path_factory.mktemp("odd-run")
    proc = _start(root, _ODD, ["acme", "mysql", str(STEPS), json.dumps(KEYS)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return run_folders(root / "wandb", "odd")[-1]


@pytest.fixture
def mysql_uri() -> Iterator[str]:
    with fresh_mysql_database() as uri:
        yield uri


def bridge(cwd: Path, *args: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in ``cwd`` (MLflow's default artifact root ``./mlruns`` lands there)."""
    env = {**ENV, "BRIDGE_KILL_AT": kill} if kill else ENV
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def bits(value: float) -> str:
    return struct.pack(">d", float(value)).hex()  # -0.0 and 0.0 differ


def rows(uri: str, table: str, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """A table's metric rows (of one run, or all), values as bits, run id left out, sorted."""
    engine = sa.create_engine(uri)
    key = engine.dialect.identifier_preparer.quote("key")
    sql = f"SELECT {key}, timestamp, step, value, is_nan FROM {table}"
    try:
        with engine.connect() as conn:
            if run_id is None:
                got = conn.execute(sa.text(sql))
            else:
                got = conn.execute(sa.text(sql + " WHERE run_uuid = :r"), {"r": run_id})
            return sorted((k, t, s, bits(v), bool(n)) for k, t, s, v, n in got)
    finally:
        engine.dispose()


def only_run(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = [
        run
        for exp in client.search_experiments()
        for run in client.search_runs([exp.experiment_id], max_results=100)
    ]
    assert len(found) == 1, [r.info.run_id for r in found]
    return found[0]


def test_wandb_offline_into_mysql(odd_run: Path, mysql_uri: str, tmp_path: Path) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    src = f"wandb-offline:{odd_run}"
    lite = f"sqlite:///{tmp_path / 'lite.db'}"
    assert bridge(tmp_path, "sync", src, f"mlflow:{lite}", "--state", "lite.db").returncode == 0
    started = time.monotonic()
    first = bridge(tmp_path, "sync", src, f"mlflow:{mysql_uri}", "--state", "s.db", "--json")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    run = only_run(mysql_uri)
    run_id = run.info.run_id
    assert run.data.params["lr"] == "0.01" and run.data.params["opt"] == "adam"

    stored = rows(mysql_uri, "metrics", run_id)
    assert stored == rows(lite, "metrics", only_run(lite).info.run_id)
    assert rows(mysql_uri, "latest_metrics", run_id) == rows(
        lite, "latest_metrics", only_run(lite).info.run_id
    )
    ours = [row for row in stored if row[0] in KEYS]
    assert len(ours) == STEPS * len(KEYS)
    assert sorted((k, s) for k, _, s, _, _ in ours) == sorted(
        (k, s) for k in KEYS for s in range(STEPS)
    )
    assert summary["points_written"] >= len(ours)

    # The same points (their stored timestamps) through MLflow's own log_batch, into a run
    # of the same MySQL store: the same rows, NaN/±inf/±0.0/subnormals and latest_metrics.
    client = MlflowClient(tracking_uri=mysql_uri)
    theirs = client.create_run(run.info.experiment_id).info.run_id
    points = [Metric(k, logged(k, s), t, s) for k, t, s, _, _ in ours]
    for i in range(0, len(points), 1000):
        client.log_batch(theirs, metrics=points[i : i + 1000])
    assert rows(mysql_uri, "metrics", theirs) == ours
    assert rows(mysql_uri, "latest_metrics", theirs) == [
        row for row in rows(mysql_uri, "latest_metrics", run_id) if row[0] in KEYS
    ]
    assert any(n for *_, n in ours) and any(v == bits(1.7976931348623157e308) for *_, v, _ in ours)
    client.delete_run(theirs)  # verify compares the bridge's run only

    again = bridge(tmp_path, "sync", src, f"mlflow:{mysql_uri}", "--state", "s.db", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["points_written"] == 0
    assert set(json.loads(again.stdout)["counts"]) <= {"unchanged", "skip"}
    assert rows(mysql_uri, "metrics", run_id) == stored
    verify = bridge(tmp_path, "verify", src, f"mlflow:{mysql_uri}", "--state", "s.db")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    print(f"\nW&B -> MySQL: {len(stored)} points in one run ({len(ours)} logged), {took:.1f} s")


def test_mysql_as_source(mysql_uri: str, tmp_path: Path) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mysql_uri)
    exp = client.create_experiment("on-mysql", artifact_location=str(tmp_path / "src-art"))
    t0 = 1_700_000_000_000
    made = {}
    for name, n in (("first", 2500), ("second", 700)):
        run_id = client.create_run(exp, start_time=t0, run_name=name).info.run_id
        params = [Param("lr", "0.01"), Param("name", name), Param("Batch Size", "32")]
        points = [Metric(k, logged(k, s), t0 + s, s) for k in KEYS for s in range(n)]
        points += [Metric("loss", 0.25, t0 + 5, 5), Metric("loss", 9.0, t0, 0)]  # same steps
        client.log_batch(run_id, params=params)
        for i in range(0, len(points), 1000):
            client.log_batch(run_id, metrics=points[i : i + 1000])
        client.set_terminated(run_id, "FINISHED", end_time=t0 + 10_000)
        made[name] = (run_id, len(points), {p.key: p.value for p in params})

    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    src = f"mlflow:{mysql_uri}"
    started = time.monotonic()
    first = bridge(tmp_path, "sync", src, f"mlflow:{dest}", "--state", "s.db", "--json")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-3000:]
    copies = {}
    out = MlflowClient(tracking_uri=dest)
    for e in out.search_experiments():
        for run in out.search_runs([e.experiment_id], max_results=100):
            copies[run.info.run_name] = run
    assert set(copies) == set(made)
    for name, (run_id, n, params) in made.items():
        copy = copies[name]
        assert rows(dest, "metrics", copy.info.run_id) == rows(mysql_uri, "metrics", run_id)
        assert len(rows(dest, "metrics", copy.info.run_id)) == n
        assert rows(dest, "latest_metrics", copy.info.run_id) == rows(
            mysql_uri, "latest_metrics", run_id
        )
        assert {k: copy.data.params.get(k) for k in params} == params
    verify = bridge(tmp_path, "verify", src, f"mlflow:{dest}", "--state", "s.db")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    again = bridge(tmp_path, "sync", src, f"mlflow:{dest}", "--state", "s.db", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["points_written"] == 0
    total = sum(n for _, n, _ in made.values())
    print(f"\nMySQL -> sqlite: 2 runs, {total} points, {took:.1f} s")


def test_sync_into_mysql_killed_after_a_committed_flush(mysql_uri: str, tmp_path: Path) -> None:
    """SIGKILLed right after the second flush committed (its watermark not recorded), then
    run again: every point of the run stored exactly once, verify exits 0."""
    steps, metrics = 5_000, 5
    folder = make_big_run(tmp_path / "src", steps * metrics, n_metrics=metrics)
    src, dest = f"wandb-offline:{folder}", f"mlflow:{mysql_uri}"
    killed = bridge(tmp_path, "sync", src, dest, "--state", "s.db", kill="mlflow.bulk.after_send#2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = [row for row in rows(mysql_uri, "metrics") if row[0].startswith("m")]
    assert 0 < len(before) < steps * metrics
    started = time.monotonic()
    done = bridge(tmp_path, "sync", src, dest, "--state", "s.db", "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    engine = sa.create_engine(mysql_uri)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                sa.text("SELECT `key`, step, value FROM metrics WHERE `key` LIKE 'm_'")
            ).all()
            (dupes,) = conn.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT run_uuid, `key`, step FROM metrics "
                    "GROUP BY run_uuid, `key`, step HAVING count(*) > 1) AS d"
                )
            ).one()
    finally:
        engine.dispose()
    expected = sorted(
        (f"m{m}", step, step * (m + 1) * 0.5) for m in range(metrics) for step in range(steps)
    )
    assert sorted(tuple(row) for row in got) == expected
    assert dupes == 0
    verify = bridge(tmp_path, "verify", src, dest, "--state", "s.db")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    print(
        f"\nkilled + resumed into MySQL: {len(before)} points before, {len(got)} after, {took:.1f} s"
    )


_CASES = """
run = wandb.init(entity=ENTITY, project=PROJECT, id="cases")
for step in range(int(sys.argv[3])):
    run.log({"loss": 1.0 / (step + 1), "Loss": 2.0 * step})
run.finish()
"""


@pytest.mark.parametrize("collate", ["", "utf8mb4_bin"])
def test_keys_differing_in_case_only(tmp_path: Path, collate: str) -> None:
    """W&B keeps ``loss`` and ``Loss`` apart. A database with the server's default collation
    (case-insensitive) cannot: MLflow's own ``log_batch`` fails on them, and the sync fails
    naming the collation instead of storing one key's points under the other's latest row;
    a database created with ``COLLATE utf8mb4_bin`` takes both, verify clean."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    steps = 300
    proc = _start(tmp_path / "src", _CASES, ["acme", "mysql", str(steps)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    src = f"wandb-offline:{run_folders(tmp_path / 'src' / 'wandb', 'cases')[-1]}"
    with fresh_mysql_database(collate=collate) as uri:
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("probe", artifact_location=str(tmp_path / "art"))
        probe = client.create_run(exp).info.run_id
        pair = [Metric("loss", 1.0, 1, 0), Metric("Loss", 2.0, 1, 0)]
        done = bridge(tmp_path, "sync", src, f"mlflow:{uri}", "--state", "s.db", "--json")
        if not collate:
            with pytest.raises(Exception, match="Duplicate entry"):
                client.log_batch(probe, metrics=pair)
            assert done.returncode != 0
            assert "COLLATE utf8mb4_bin" in done.stdout + done.stderr
            assert not [r for r in rows(uri, "latest_metrics") if r[0] in ("loss", "Loss")]
            return
        client.log_batch(probe, metrics=pair)
        client.delete_run(probe)
        assert done.returncode == 0, done.stderr[-3000:]
        run_id = only_run(uri).info.run_id  # the probe is deleted
        got = [r for r in rows(uri, "metrics", run_id) if r[0] in ("loss", "Loss")]
        assert sorted((k, s) for k, _, s, _, _ in got) == sorted(
            (k, s) for k in ("loss", "Loss") for s in range(steps)
        )
        verify = bridge(tmp_path, "verify", src, f"mlflow:{uri}", "--state", "s.db")
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
