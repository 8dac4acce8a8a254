"""The concurrent REST sink (sink_pool.ConcurrentMetricSink) against a plain sequential
``log_batch`` loop on a real ``mlflow server --workers 2`` with PostgreSQL behind it: the
same metric histories and the same latest values (NaN/±inf, out-of-order steps, one step
at several timestamps), never two requests in flight with a key in common, and a failed
request surfacing from ``flush`` with only acknowledged points counted."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import running_mlflow_server

from bridge.adapters.base import Notices
from bridge.adapters.mlflow.sink_pool import ConcurrentMetricSink, LogBatchPool, log_batch_body
from bridge.schema import MetricChunk


@pytest.fixture
def pg_server(tmp_path: Path, pg_database: str) -> Iterator[str]:
    """``mlflow server --workers 2`` on a fresh PostgreSQL database: requests really run
    at the same time in two server processes."""
    with running_mlflow_server(tmp_path, pg_database, workers=2, timeout=300) as url:
        yield url


def _chunks(seed: int, keys: int, points: int) -> list[MetricChunk]:
    """Chunks of many keys, interleaved the way a history reader yields them: NaN, ±inf,
    steps going back, one step logged at several timestamps, exact duplicates."""
    rng = random.Random(seed)
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e-308]
    streams: dict[str, list[tuple[int, int, float]]] = {}
    for k in range(keys):
        pts = []
        for i in range(points):
            step = i if rng.random() > 0.1 else rng.randrange(0, points)  # out of order
            ts = 1_700_000_000_000 + i * 7 + rng.randrange(3)
            value = rng.choice(specials) if rng.random() < 0.05 else rng.uniform(-1e6, 1e6)
            pts.append((step, ts, value))
            if rng.random() < 0.05:  # same step, another timestamp and value
                pts.append((step, ts + 1, rng.uniform(-1, 1)))
            if rng.random() < 0.02:  # an exact duplicate
                pts.append((step, ts, value))
        # keys whose latest point (largest step, then timestamp) is NaN or -inf
        if k % 7 in (0, 3):
            last = math.nan if k % 7 == 0 else -math.inf
            pts.insert(0, (10 * points, 1_700_000_000_009, last))
            pts.append((10 * points, 1_700_000_000_001, math.inf))
        streams[f"m/{k:03d}"] = pts
    out: list[MetricChunk] = []
    pos = dict.fromkeys(streams, 0)
    while any(pos[k] < len(v) for k, v in streams.items()):
        for key, pts in streams.items():
            size = rng.randrange(1, 120)
            part = pts[pos[key] : pos[key] + size]
            pos[key] += len(part)
            if part:
                steps, tss, vals = zip(*part, strict=True)
                out.append(MetricChunk(key=key, steps=steps, timestamps=tss, values=vals))
    return out


def _sequential(client: Any, run_id: str, chunks: list[MetricChunk]) -> None:
    """The reference: a plain loop of ``log_batch`` calls of 1000 metrics, one at a time."""
    from mlflow.entities import Metric

    metrics = [
        Metric(c.key, v, t, s)
        for c in chunks
        for s, t, v in zip(c.steps, c.timestamps, c.values, strict=True)
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000], synchronous=True)


def _stored(client: Any, run_id: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every key's history (sorted, values by repr so NaN compares) and latest values."""
    metrics = client.get_run(run_id).data.metrics
    history = {
        key: sorted(
            repr((m.step, m.timestamp, m.value)) for m in client.get_metric_history(run_id, key)
        )
        for key in metrics
    }
    return history, {k: repr(v) for k, v in metrics.items()}


class _Watch:
    """Wraps a real client's ``RestStore._call_endpoint``: records the keys of the
    ``LogBatch`` requests in flight and counts any two in flight that share a (run, key)
    (MLflow may share one store between clients of a URI: then every watch sees all)."""

    def __init__(self, client: Any) -> None:
        from mlflow.protos.service_pb2 import LogBatch

        store = client._tracking_client.store
        original = store._call_endpoint
        self._lock = threading.Lock()
        self._flying: list[set[tuple[str, str]]] = []
        self.overlaps = 0
        self.max_in_flight = 0

        def call(api: Any, json_body: Any = None, *args: Any, **kwargs: Any) -> Any:
            if api is not LogBatch:
                return original(api, json_body, *args, **kwargs)
            body = json.loads(json_body)
            keys = {(body["run_id"], m["key"]) for m in body["metrics"]}
            with self._lock:
                self.overlaps += sum(bool(keys & other) for other in self._flying)
                self._flying.append(keys)
                self.max_in_flight = max(self.max_in_flight, len(self._flying))
            try:
                return original(api, json_body, *args, **kwargs)
            finally:
                with self._lock:
                    self._flying.remove(keys)

        store._call_endpoint = call


def test_log_batch_body_is_what_mlflow_client_sends() -> None:
    """The sink's hand-written JSON equals ``message_to_json`` of MLflow's own message."""
    from mlflow.entities import Metric
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json

    values = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -5e-324, 0.1, 2.0**53 + 1]
    points = [
        (f"k{i % 3}", v, ts, step)
        for i, (v, ts, step) in enumerate(
            (v, ts, step)
            for v in values
            for ts in (0, 1_700_000_000_123)
            for step in (0, -3, 2**62)
        )
    ]
    proto = LogBatch(run_id="r1", metrics=[Metric(*p).to_proto() for p in points])
    assert json.loads(log_batch_body("r1", points)) == json.loads(message_to_json(proto))


@pytest.mark.e2e
def test_concurrent_sink_matches_sequential_loop(pg_server: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pg_server)
    exp = client.create_experiment("p2")
    chunks = _chunks(seed=14, keys=32, points=200)
    total = sum(len(c) for c in chunks)
    pool = LogBatchPool(4)
    try:
        runs = []
        for _ in range(2):  # two runs at once, sharing the pool and the key names
            run_id = client.create_run(exp).info.run_id
            own = MlflowClient(tracking_uri=pg_server)
            watch = _Watch(own)
            sink = ConcurrentMetricSink(own, run_id, "src", {}, threading.Lock(), Notices(), pool)
            runs.append((run_id, sink, watch))
        for n, chunk in enumerate(chunks):
            for _, sink, _ in runs:
                sink.add(chunk)
            if n % 97 == 96:
                for _, sink, _ in runs:
                    sink.flush()
        for _, sink, _ in runs:
            sink.flush()
    finally:
        pool.close()
    reference = client.create_run(exp).info.run_id
    _sequential(client, reference, chunks)
    want = _stored(client, reference)
    latest = set(want[1].values())
    assert len(want[0]) == 32 and "nan" in latest and "-1.7976931348623157e+308" in latest
    for run_id, sink, watch in runs:
        assert sink.points_sent == total
        assert watch.overlaps == 0
        assert watch.max_in_flight > 1  # requests really overlapped
        assert _stored(client, run_id) == want


@pytest.mark.e2e
def test_failed_request_surfaces_from_flush(pg_server: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pg_server)
    exp = client.create_experiment("p2-errors")
    chunks = [  # distinct points: what the server holds is what was acknowledged
        MetricChunk(key=f"m/{k}", steps=list(r), timestamps=list(r), values=[0.5] * 100)
        for start in range(0, 3000, 100)
        for k in range(8)
        for r in [range(start, start + 100)]
    ]
    pool = LogBatchPool(4)
    try:
        # a deleted run: every request is refused, none counted
        gone = client.create_run(exp).info.run_id
        client.delete_run(gone)
        sink = ConcurrentMetricSink(client, gone, "src", {}, threading.Lock(), Notices(), pool)
        with pytest.raises(Exception, match="(?i)active|deleted"):
            for chunk in chunks:
                sink.add(chunk)
            sink.flush()
        assert sink.points_sent == 0
        with pytest.raises(Exception, match="(?i)active|deleted"):
            sink.flush()  # the failure stays: nothing is recorded as written later

        # one bad point (a step no int64 holds) in one lane: flush raises, the points
        # counted are exactly those the server acknowledged
        run_id = client.create_run(exp).info.run_id
        sink = ConcurrentMetricSink(client, run_id, "src", {}, threading.Lock(), Notices(), pool)
        bad = MetricChunk(key="m/bad", steps=[2**64], timestamps=[1], values=[1.0])
        with pytest.raises(ValueError, match="int64"):
            for n, chunk in enumerate(chunks):
                sink.add(chunk)
                if n == len(chunks) // 2:
                    sink.add(bad)
            sink.flush()
    finally:
        pool.close()
    keys = client.get_run(run_id).data.metrics
    stored = sum(len(client.get_metric_history(run_id, k)) for k in keys)
    assert stored == sink.points_sent < sum(len(c) for c in chunks)
    assert "m/bad" not in client.get_run(run_id).data.metrics
