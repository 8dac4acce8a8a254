"""The SQL bulk metric sink (bulk.py, bulk_pg.py) against MLflow's own ``log_batch``.

The same flushes go through both paths into one fresh store (sqlite; PostgreSQL through
psycopg 3 and through psycopg2, a fresh database per test), each into its own run; the
``metrics`` rows and the ``latest_metrics`` rows must be identical, bit for bit: NaN/±inf
sanitizing, duplicates within and across flushes, a flush re-sent after a crash,
out-of-order steps, equal steps with other timestamps, keys MLflow needs sanitized.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from bridge.adapters.base import Notices
from bridge.adapters.mlflow import bulk
from bridge.adapters.mlflow.bulk import SqlBulkMetricSink, fast_path
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.schema import MetricChunk

T0 = 1_700_000_000_000
MAX = 1.7976931348623157e308
NAN, INF = float("nan"), float("inf")
KEYS = ["loss", "acc/top 1", "a@b", "val:x", "é-key"]

Point = tuple[int, int, float]  # step, timestamp offset, value
Flush = list[tuple[str, list[Point]]]


@pytest.fixture(params=["sqlite", "psycopg", "psycopg2"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, Any]]:
    """(MlflowClient, SQLAlchemy engine) on one fresh store; the engine's driver is the
    parameter, so each fast path (sqlite, COPY via psycopg 3, COPY via psycopg2) runs."""
    from mlflow.tracking import MlflowClient

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        base = request.getfixturevalue("pg_database")
        uri = base.replace("postgresql://", f"postgresql+{request.param}://", 1)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # MLflow creates the schema
    engine = sa.create_engine(uri)
    assert fast_path(engine) == request.param
    yield client, engine
    engine.dispose()


def write(client: Any, engine: Any, flushes: list[Flush], fast: bool) -> str:
    """A new run holding ``flushes``, each through a new sink (as after a restart)."""
    exp = client.get_experiment_by_name("diff") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("diff")
    run_id = client.create_run(exp_id).info.run_id
    lock, notices = threading.Lock(), Notices()
    for flush in flushes:
        if fast:
            sink: MlflowMetricSink = SqlBulkMetricSink(engine, run_id, "s", {}, lock, notices)
        else:
            sink = MlflowMetricSink(client, run_id, "s", {}, lock, notices)
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
    return run_id


def _bits(value: float) -> str:
    return struct.pack(">d", float(value)).hex()  # -0.0 and 0.0 differ


def stored(engine: Any, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The run's ``metrics`` rows (sorted) and ``latest_metrics`` rows, values as bits."""
    out = []
    with engine.connect() as conn:
        for table in ("metrics", "latest_metrics"):
            rows = conn.execute(
                sa.text(
                    f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :r"
                ),
                {"r": run_id},
            )
            out.append(sorted((k, _bits(v), t, s, bool(n)) for k, v, t, s, n in rows))
    return out[0], out[1]


def assert_same(client: Any, engine: Any, flushes: list[Flush]) -> None:
    slow = stored(engine, write(client, engine, flushes, fast=False))
    fast = stored(engine, write(client, engine, flushes, fast=True))
    assert fast == slow


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


def test_flush_interrupted_mid_transaction_leaves_nothing(
    store: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that dies after the ``metrics`` insert, before ``latest_metrics`` and the
    commit, leaves no row; sending it again stores what one clean flush stores."""
    client, engine = store

    def fail(name: str) -> None:
        if name == "mlflow.bulk.mid_transaction":
            raise Interrupted(name)

    monkeypatch.setattr(bulk, "kill_point", fail)
    with pytest.raises(Interrupted):
        write(client, engine, EDGES[:1], fast=True)
    (run,) = client.search_runs([client.get_experiment_by_name("diff").experiment_id])
    assert stored(engine, run.info.run_id) == ([], [])
    monkeypatch.undo()
    assert_same(client, engine, EDGES[:1])
