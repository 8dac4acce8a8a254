"""The SQL bulk metric sink (bulk.py, bulk_pg.py) against MLflow's own ``log_batch``.

The same flushes go through both paths into one fresh store (sqlite; PostgreSQL through
psycopg 3 and through psycopg2, a fresh database per test), each into its own run; the
``metrics`` rows and the ``latest_metrics`` rows must be identical, bit for bit: NaN/±inf
sanitizing, duplicates within and across flushes, a flush re-sent after a crash,
out-of-order steps, equal steps with other timestamps, keys MLflow needs sanitized.
On PostgreSQL both ways into ``metrics`` run (bulk_pg.py): direct ``COPY`` (a fresh run,
steps above the stored ones) and the checked path (a re-sent flush, a resumed run's
interleaved points, repeated steps, a unique violation forced by a racing writer); the
sinks' row counters prove which one each case took. An end-to-end case kills `bridge sync`
into PostgreSQL after a committed flush whose watermark was not recorded and re-runs it.
"""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from bridge.adapters.base import Notices
from bridge.adapters.mlflow import bulk
from bridge.adapters.mlflow.bulk import SqlBulkMetricSink, fast_path
from bridge.adapters.mlflow.history import quoted_key
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.schema import MetricChunk

T0 = 1_700_000_000_000
MAX = 1.7976931348623157e308
NAN, INF = float("nan"), float("inf")
KEYS = ["loss", "acc/top 1", "a@b", "val:x", "é-key"]

Point = tuple[int, int, float]  # step, timestamp offset, value
Flush = list[tuple[str, list[Point]]]


#: The drivers that take bulk_pg.py's COPY paths (direct and checked row counters).
PG = ("psycopg", "psycopg2")


@pytest.fixture(params=["sqlite", "psycopg", "psycopg2", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, Any]]:
    """(MlflowClient, SQLAlchemy engine) on one fresh store; the engine's driver is the
    parameter, so each fast path (sqlite, COPY via psycopg 3, COPY via psycopg2) runs, and
    the Core path on MySQL/MariaDB (pymysql, tests/mysql_db.py)."""
    from mlflow.tracking import MlflowClient

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    elif request.param == "mysql":
        from tests.mysql_db import fresh_mysql_database

        with fresh_mysql_database() as uri:
            client = MlflowClient(tracking_uri=uri)
            client.create_experiment("diff", artifact_location=str(tmp_path / "art"))
            engine = sa.create_engine(uri)
            assert fast_path(engine) is None
            yield client, engine
            engine.dispose()
        return
    else:
        base = request.getfixturevalue("pg_database")
        uri = base.replace("postgresql://", f"postgresql+{request.param}://", 1)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # MLflow creates the schema
    engine = sa.create_engine(uri)
    assert fast_path(engine) == request.param
    yield client, engine
    engine.dispose()


def write(
    client: Any,
    engine: Any,
    flushes: list[Flush],
    fast: bool,
    sinks: list[Any] | None = None,
    run_id: str | None = None,
) -> str:
    """A run (new, or ``run_id``) holding ``flushes``, each through a new sink (as after a
    restart); the fast sinks are appended to ``sinks``."""
    if run_id is None:
        exp = client.get_experiment_by_name("diff") or None
        exp_id = exp.experiment_id if exp else client.create_experiment("diff")
        run_id = client.create_run(exp_id).info.run_id
    lock, notices = threading.Lock(), Notices()
    for flush in flushes:
        if fast:
            sink: MlflowMetricSink = SqlBulkMetricSink(engine, run_id, "s", {}, lock, notices)
            if sinks is not None:
                sinks.append(sink)
        else:
            sink = MlflowMetricSink(client, run_id, "s", {}, lock, notices)
        send(sink, flush)
    return run_id


def send(sink: Any, flush: Flush) -> None:
    for key, points in flush:
        sink.add(
            MetricChunk(
                key=key,
                steps=[p[0] for p in points],
                timestamps=[T0 + p[1] for p in points],
                values=[p[2] for p in points],
            )
        )
    sink.flush()


def _bits(value: float) -> str:
    return struct.pack(">d", float(value)).hex()  # -0.0 and 0.0 differ


def stored(engine: Any, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The run's ``metrics`` rows (sorted) and ``latest_metrics`` rows, values as bits."""
    out = []
    key = quoted_key(engine)
    with engine.connect() as conn:
        for table in ("metrics", "latest_metrics"):
            rows = conn.execute(
                sa.text(
                    f"SELECT {key}, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :r"
                ),
                {"r": run_id},
            )
            out.append(sorted((k, _bits(v), t, s, bool(n)) for k, v, t, s, n in rows))
    return out[0], out[1]


def assert_same(client: Any, engine: Any, flushes: list[Flush]) -> list[Any]:
    """Both paths give the same rows; returns the fast sinks (one per flush)."""
    sinks: list[Any] = []
    slow = stored(engine, write(client, engine, flushes, fast=False))
    fast = stored(engine, write(client, engine, flushes, fast=True, sinks=sinks))
    assert fast == slow
    return sinks


def ways(sinks: list[Any]) -> list[tuple[int, int]]:
    """(direct, checked) rows of each sink."""
    return [(s.direct_rows, s.checked_rows) for s in sinks]


EDGES: list[Flush] = [
    [
        ("loss", [(0, 0, 1.0), (1, 1, NAN), (1, 2, 0.5), (0, 3, 2.0), (2, 4, INF)]),
        ("loss", [(2, 5, -INF), (5, 6, 0.25), (5, 6, 0.25), (3, 7, 9.0)]),
        ("acc/top 1", [(1, 0, 0.0), (1, 0, NAN), (1, 0, -0.0), (0, 9, MAX), (0, 9, INF)]),
        ("a@b", [(4, 1, 1.0), (4, 2, 1.0), (4, 2, 0.5), (2, 9, 7.0)]),
    ],
    [("loss", [(5, 6, 0.1), (5, 7, -1.0), (1, 0, 3.0)]), ("a@b", [(4, 2, 2.0)])],
    [("acc/top 1", [(1, 0, -INF), (1, 0, -MAX), (1, 1, NAN)]), ("val:x", [(0, 0, NAN)])],
    [("val:x", [(3, 3, -0.0), (2, 3, 5e-324), (2, 4, -2.3548315826429372e16)])],
    # ties on (step, timestamp, sanitized value): the first one stays latest, in a flush
    # across chunks and across flushes (NaN is value 0, so it ties with 0.0 and -0.0)
    [("loss", [(7, 0, 0.0)]), ("loss", [(7, 0, NAN)]), ("a@b", [(9, 0, NAN)])],
    [("a@b", [(9, 0, 0.0), (9, 0, -0.0)]), ("val:x", [(3, 3, 0.0)])],
]


def test_edge_cases_and_resent_flushes(store: tuple[Any, Any]) -> None:
    """The named cases; the first flush sent again at the end (a crash after it committed,
    before the state knew) and the whole sequence twice."""
    client, engine = store
    assert_same(client, engine, EDGES + EDGES[:1])
    assert_same(client, engine, EDGES + EDGES)


def test_flushes_of_many_rows(store: tuple[Any, Any]) -> None:
    """Chunks large enough that the sink sends within ``add`` (BULK_ROWS), keys interleaved."""
    client, engine = store
    n = bulk.BULK_ROWS // 2 + 7
    flush: Flush = [
        (key, [(s, s % 97, math.sin(s) if s % 101 else NAN) for s in range(n)])
        for key in ("m0", "m1", "m 2")
    ]
    assert_same(client, engine, [flush, flush[1:]])


values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 0.5, NAN, INF, -INF, MAX, -MAX, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
)
points = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), values), min_size=1, max_size=12)
flushes = st.lists(
    st.lists(st.tuples(st.sampled_from(KEYS), points), min_size=1, max_size=3),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time on a failure
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flushes=flushes, resend=st.lists(st.booleans(), max_size=3))
@example(flushes=[[("loss", [(1, 0, NAN), (1, 0, 0.0)])]], resend=[True])
def test_random_point_sets(
    store: tuple[Any, Any], flushes: list[Flush], resend: list[bool]
) -> None:
    """Small step/timestamp ranges, so equal steps, equal points and ties abound; a flush
    flagged in ``resend`` is sent a second time right after itself."""
    client, engine = store
    sent: list[Flush] = []
    for i, flush in enumerate(flushes):
        sent += [flush, flush] if i < len(resend) and resend[i] else [flush]
    assert_same(client, engine, sent)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("flush", ["edges", "rising"])
def test_flush_interrupted_mid_transaction_leaves_nothing(
    store: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, flush: str
) -> None:
    """A flush that dies after the ``metrics`` insert, before ``latest_metrics`` and the
    commit, leaves no row; sending it again stores what one clean flush stores. On
    PostgreSQL "edges" dies after the checked path, "rising" after a direct ``COPY``."""
    client, engine = store
    flushes = EDGES[:1] if flush == "edges" else [RISING]

    def fail(name: str) -> None:
        if name == "mlflow.bulk.mid_transaction":
            raise Interrupted(name)

    monkeypatch.setattr(bulk, "kill_point", fail)
    sinks: list[Any] = []
    with pytest.raises(Interrupted):
        write(client, engine, flushes, fast=True, sinks=sinks)
    if fast_path(engine) in PG:
        rows = sum(len(points) for _, points in flushes[0])
        assert ways(sinks) == [(rows, 0) if flush == "rising" else (0, rows)]
    (run,) = client.search_runs([client.get_experiment_by_name("diff").experiment_id])
    assert stored(engine, run.info.run_id) == ([], [])
    monkeypatch.undo()
    assert_same(client, engine, flushes)


# ------------------------------------------------- PostgreSQL: direct COPY and its fallbacks

#: Steps rising in every key from 0: a fresh run takes it by direct COPY (NaN/±inf inside).
RISING: Flush = [
    ("loss", [(s, s, s * 0.5) for s in range(30)]),
    ("acc/top 1", [(s, 2 * s, NAN if s % 7 == 0 else s) for s in range(20)]),
    ("acc/top 1", [(s, 0, INF if s % 2 else -INF) for s in range(20, 30)]),
    ("val:x", [(-5, 0, -0.0), (3, 0, MAX), (4, 0, 0.0)]),
]


def test_direct_copy_then_resent_then_resumed(store: tuple[Any, Any]) -> None:
    """A fresh run's flush goes direct; the same flush re-sent (a crash after its commit,
    before the watermark) goes checked; a resumed run's next flush goes direct for the
    key whose steps lie above the stored ones, checked for the key whose points interleave."""
    client, engine = store
    resumed: Flush = [
        ("loss", [(s, s, 1.0) for s in range(30, 45)]),
        ("acc/top 1", [(10, 500, 3.0), (60, 600, 4.0)]),
    ]
    sinks = assert_same(client, engine, [RISING, RISING, resumed])
    if fast_path(engine) not in PG:
        assert ways(sinks) == [(0, 0)] * 3
    else:
        assert ways(sinks) == [(63, 0), (0, 63), (15, 2)]
        assert [s.redone_flushes for s in sinks] == [0, 0, 0]


def test_repeated_steps_in_a_fresh_run_go_checked(store: tuple[Any, Any]) -> None:
    """Steps that do not strictly rise across a key's chunks (an equal row twice among
    them, which a direct COPY would refuse) are checked; a key rising across chunks is not."""
    client, engine = store
    flush: Flush = [
        ("a@b", [(0, 0, 1.0), (1, 0, 1.0)]),
        ("val:x", [(0, 0, 1.0), (2, 0, 1.0)]),
        ("a@b", [(2, 0, 1.0)]),
        ("val:x", [(2, 0, 1.0), (3, 0, 1.0)]),
        ("loss", [(1, 0, 1.0), (1, 1, 2.0)]),
    ]
    sinks = assert_same(client, engine, [flush])
    if fast_path(engine) in PG:
        assert ways(sinks) == [(3, 6)]


def one_sink(
    client: Any, engine: Any, flushes: list[Flush], fast: bool, between: Any = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], Any]:
    """A new run, all ``flushes`` through one sink, ``between(run_id)`` after the first;
    returns the stored rows and the sink."""
    exp = client.get_experiment_by_name("diff") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("diff")
    run_id = client.create_run(exp_id).info.run_id
    lock, notices = threading.Lock(), Notices()
    if fast:
        sink: Any = SqlBulkMetricSink(engine, run_id, "s", {}, lock, notices)
    else:
        sink = MlflowMetricSink(client, run_id, "s", {}, lock, notices)
    for i, flush in enumerate(flushes):
        send(sink, flush)
        if i == 0 and between is not None:
            between(run_id)
    metrics, latest = stored(engine, run_id)
    return metrics, latest, sink


def test_one_sink_raises_its_high_step_with_its_own_flushes(store: tuple[Any, Any]) -> None:
    """A sink reads the stored steps once per key, then counts its own commits: a later
    flush below what it committed goes checked without asking the database again."""
    client, engine = store
    flushes: list[Flush] = [
        [("loss", [(s, s, 1.0) for s in range(10)])],
        [("loss", [(s, s, 2.0) for s in range(10, 20)])],
        [("loss", [(s, s, 1.0) for s in range(5, 25)])],
    ]
    slow = one_sink(client, engine, flushes, fast=False)
    fast = one_sink(client, engine, flushes, fast=True)
    assert fast[:2] == slow[:2]
    if fast_path(engine) in PG:
        assert ways([fast[2]]) == [(20, 20)]


def test_unique_violation_from_a_racing_writer_is_redone_checked(store: tuple[Any, Any]) -> None:
    """Another writer logs a row of the sink's next flush after the sink read the stored
    steps: the direct COPY fails on the primary key, the flush is rolled back and sent
    again checked, and the sink stays checked; rows as with ``log_batch`` alone."""
    from mlflow.entities import Metric

    client, engine = store
    flushes: list[Flush] = [
        [("loss", [(s, s, s * 0.5) for s in range(10)])],
        [("loss", [(s, s, s * 0.5) for s in range(10, 20)]), ("a@b", [(0, 0, 1.0)])],
        [("loss", [(s, s, s * 0.5) for s in range(20, 30)])],
    ]

    def race(run_id: str) -> None:  # exactly the row (loss, step 12) of the next flush
        client.log_batch(run_id, metrics=[Metric("loss", 6.0, T0 + 12, 12)])

    slow = one_sink(client, engine, flushes, fast=False, between=race)
    fast = one_sink(client, engine, flushes, fast=True, between=race)
    assert fast[:2] == slow[:2]
    assert sum(1 for row in fast[0] if row[0] == "loss") == 30  # the raced row once
    if fast_path(engine) in PG:
        sink = fast[2]
        assert (sink.direct_rows, sink.checked_rows, sink.redone_flushes) == (10, 21, 1)


@pytest.mark.e2e
def test_sync_into_postgresql_killed_after_a_committed_flush(
    pg_database: str, tmp_path: Path
) -> None:
    """`bridge sync` W&B offline → PostgreSQL SIGKILLed right after its second flush
    committed (before that watermark was recorded), then run again: its first flushes
    re-send stored rows (checked), the rest go direct; every point of the run is stored
    exactly once and `bridge verify` exits 0."""
    from tests.sdk_runs import make_big_run

    steps, metrics = 5_000, 5
    folder = make_big_run(tmp_path / "src", steps * metrics, n_metrics=metrics)
    state = tmp_path / "state.db"
    src, dest = f"wandb-offline:{folder}", f"mlflow:{pg_database}"
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_KILL_AT"}
    cli = [sys.executable, "-m", "bridge.cli"]

    def bridge(*args: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
        run_env = {**env, "BRIDGE_KILL_AT": kill} if kill else env
        return subprocess.run(
            [*cli, *args], env=run_env, capture_output=True, text=True, timeout=600
        )

    killed = bridge("sync", src, dest, "--state", str(state), kill="mlflow.bulk.after_send#2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        (before,) = conn.execute(sa.text("SELECT count(*) FROM metrics")).one()
    assert 0 < before < steps * metrics
    done = bridge("sync", src, dest, "--state", str(state), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT key, step, value FROM metrics WHERE key LIKE 'm_' ORDER BY key, step")
        ).all()
        (dupes,) = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT run_uuid, key, step, timestamp FROM metrics "
                "GROUP BY run_uuid, key, step, timestamp HAVING count(*) > 1) AS d"
            )
        ).one()
    engine.dispose()
    expected = sorted(
        (f"m{m}", step, step * (m + 1) * 0.5) for m in range(metrics) for step in range(steps)
    )
    assert [tuple(row) for row in rows] == expected
    assert dupes == 0
    verify = bridge("verify", src, dest, "--state", str(state))
    assert verify.returncode == 0, verify.stdout[-3000:]
