"""Metric points into an MLflow *server* with several ``log_batch`` requests in flight.

One request at a time leaves the client idle while the server works and the server idle
while the client builds the next body; a few requests in flight keep both (and the
server's workers) busy. What makes it safe:

* MLflow's ``SqlAlchemyStore._update_latest_metrics_if_necessary`` (3.17) reads the run's
  ``latest_metrics`` rows of the batch's keys, then inserts the missing ones and updates
  the older ones in the request's transaction. Two concurrent requests carrying the SAME
  (run, key) can both find no row and both insert (IntegrityError: the request fails), or,
  on a backend without ``SELECT … FOR UPDATE`` (sqlite), both read the old row and the
  last commit wins with a value that is not the maximum. So every stored key of a run
  belongs to one *lane* (assigned round-robin on first sight, which balances the usual
  W&B run whose keys are all logged every step) and a lane has at most one request in
  flight: no two requests in flight ever share a (run, key).
* Points of one key go out in the order they were added (a lane is FIFO), exactly as the
  sequential sink sends them; the result does not depend on it anyway: MLflow stores a
  point by its primary key and ``latest_metrics`` keeps the maximum of
  (step, timestamp, value) per key.
* ``points_sent`` counts acknowledged points only; ``flush`` waits for every request of
  this run and re-raises the first failure, so the engine never records a watermark past
  a point the server refused. After a failure nothing more is sent for the run.
* The pipeline stays full across the engine's watermark commits (:class:`AcknowledgedMarks`):
  a lane counts the points added to it and those acknowledged, which are a prefix of them
  (FIFO, one request in flight); ``mark()`` is the lanes' added counts, and
  ``wait_acknowledged(mark)`` waits until every lane acknowledged that many, shipping a
  lane's partial buffer only if it still holds points of the mark. The engine records the
  watermarks of the points added before a mark one commit interval later, when they are
  long acknowledged, while the requests added since stay in flight: a ``flush`` (a drain)
  emptied the pipeline at every commit, and one run reached 1.41× the plain loop only.
* Memory is bounded: per run, at most ``lanes`` (2 × pool size) partial buffers plus
  ``2 × lanes`` whole batches queued or in flight; the producer waits when it is ahead.

The requests go through the writer's ``RestStore._call_endpoint``, which takes MLflow's one
cached ``requests.Session`` per process (``mlflow.utils.request_utils``), so the threads
share keep-alive connections (urllib3 pool of ``MLFLOW_HTTP_POOL_MAXSIZE`` = 10). The body
is written with ``json.dumps`` (:func:`log_batch_body`), not through ``Metric`` entities,
protobuf messages and ``message_to_json`` as ``MlflowClient.log_batch`` does: the same JSON
(NaN and ±inf as protobuf's ``"NaN"``/``"Infinity"``/``"-Infinity"`` strings, int64 as
numbers), at ~1/10 of the client CPU — which on a 2-core machine shared with the server
and its database is CPU the server gets back. A client without a ``RestStore`` (a test's
stand-in) gets ``log_batch`` calls.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.adapters.base import Notices
from bridge.adapters.features import AcknowledgedMarks
from bridge.adapters.mlflow.names import BATCH_BYTES, METRICS_PER_BATCH
from bridge.adapters.mlflow.sink import MlflowMetricSink
from bridge.faults import kill_point
from bridge.schema import MetricChunk

#: Requests in flight per writer (shared by its runs) and lanes per run.
DEFAULT_IN_FLIGHT = 4


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def log_batch_body(run_id: str, points: list[tuple[str, float, int, int]]) -> str:
    """The JSON MLflow's client sends for ``LogBatch`` of these (key, value, timestamp, step)
    points (``message_to_json`` of the message; tests/test_rest_sink_concurrency.py).
    A step or timestamp no int64 holds raises, as building MLflow's message does (the
    server would not refuse it)."""
    for key, _, timestamp, step in points:
        if not (_INT64_MIN <= step <= _INT64_MAX and _INT64_MIN <= timestamp <= _INT64_MAX):
            raise ValueError(f"metric {key!r}: step {step} / timestamp {timestamp} exceed int64")
    metrics = [
        {"key": key, "value": _number(value), "timestamp": timestamp, "step": step}
        for key, value, timestamp, step in points
    ]
    return json.dumps({"run_id": run_id, "metrics": metrics})


class LogBatchPool:
    """The writer's threads for ``log_batch`` requests, shared by the sinks of its runs."""

    def __init__(self, size: int = DEFAULT_IN_FLIGHT) -> None:
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="log_batch")

    def submit(self, fn: Any, *args: Any) -> None:
        self._executor.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class _Lane:
    __slots__ = ("buf", "bytes", "queue", "busy", "added", "acked")

    def __init__(self) -> None:
        self.buf: list[Any] = []
        self.bytes = 0
        self.queue: deque[list[Any]] = deque()
        self.busy = False
        self.added = 0  # points added to the lane (engine thread)
        self.acked = 0  # of those, acknowledged by the server: a prefix (under the sink's _cv)


class ConcurrentMetricSink(MlflowMetricSink, AcknowledgedMarks):
    """A :class:`MlflowMetricSink` whose ``log_batch`` calls run on a :class:`LogBatchPool`,
    one in flight per lane of keys (see the module docstring for why that is safe)."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        source_id: str,
        renames: dict[str, str],
        lock: threading.Lock,
        notices: Notices,
        pool: LogBatchPool,
        lanes: int | None = None,
    ) -> None:
        super().__init__(client, run_id, source_id, renames, lock, notices)
        self._pool = pool
        # More lanes than requests in flight: a run of few keys still spreads over them.
        self._lanes = [_Lane() for _ in range(max(1, lanes or 2 * pool.size))]
        self._lane_of: dict[str, _Lane] = {}
        self._limit = 2 * len(self._lanes)
        self._outstanding = 0  # batches queued or in flight
        self._error: BaseException | None = None
        self._cv = threading.Condition()
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        self._store = store if hasattr(store, "_METHOD_TO_INFO") else None

    def add(self, chunk: MetricChunk) -> None:
        self._raise_if_failed()
        stored, cost = self._keys.get(chunk.key) or self._key(chunk.key)
        lane = self._lane_of.get(stored)
        if lane is None:
            lane = self._lane_of[stored] = self._lanes[len(self._lane_of) % len(self._lanes)]
        points = [
            (stored, float(value), timestamp, step)
            for step, timestamp, value in zip(
                chunk.steps, chunk.timestamps, chunk.values, strict=True
            )
        ]
        i, n = 0, len(points)
        while i < n:
            room = min(METRICS_PER_BATCH - len(lane.buf), (BATCH_BYTES - lane.bytes) // cost)
            if room <= 0:
                self._ship(lane)
                continue
            take = points[i : i + room]
            lane.buf.extend(take)
            lane.bytes += cost * len(take)
            lane.added += len(take)
            i += len(take)
            if len(lane.buf) >= METRICS_PER_BATCH:
                self._ship(lane)

    def _ship(self, lane: _Lane) -> None:
        """Queue the lane's buffer as one request; start it if the lane is idle."""
        if not lane.buf:
            return
        batch, lane.buf, lane.bytes = lane.buf, [], 0
        with self._cv:
            while self._outstanding >= self._limit and self._error is None:
                self._cv.wait()
            if self._error is not None:
                raise self._error
            lane.queue.append(batch)
            self._outstanding += 1
            if not lane.busy:
                lane.busy = True
                self._pool.submit(self._request, lane, lane.queue.popleft())

    def _request(self, lane: _Lane, batch: list[Any]) -> None:
        """On a pool thread: one ``log_batch``; then the lane's next batch, if any."""
        failure: BaseException | None = None
        try:
            kill_point("mlflow.log_batch.before")
            self._post(batch)
            kill_point("mlflow.log_batch.after")
        except BaseException as exc:  # re-raised by flush, on the engine's thread
            failure = exc
        with self._cv:
            self._outstanding -= 1
            if failure is None:
                self.points_sent += len(batch)
                lane.acked += len(batch)
            elif self._error is None:
                self._error = failure
            if self._error is not None:
                self._outstanding -= len(lane.queue)
                lane.queue.clear()
            if lane.queue:
                self._pool.submit(self._request, lane, lane.queue.popleft())
            else:
                lane.busy = False
            self._cv.notify_all()

    def _post(self, batch: list[tuple[str, float, int, int]]) -> None:
        if self._store is not None:
            from mlflow.protos.service_pb2 import LogBatch

            self._store._call_endpoint(LogBatch, log_batch_body(self.run_id, batch))
        else:
            metrics = [self._metric(*point) for point in batch]
            self._client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def _send(self) -> None:
        for lane in self._lanes:
            self._ship(lane)

    def flush(self) -> None:
        """Send every buffer, wait for all requests of this run; the first failure raises."""
        self._raise_if_failed()
        self._send()
        with self._cv:
            while self._outstanding > 0:
                self._cv.wait()
        self._raise_if_failed()

    def mark(self) -> tuple[int, ...]:
        """Per lane, the points added so far (see the module docstring)."""
        return tuple(lane.added for lane in self._lanes)

    def wait_acknowledged(self, mark: object) -> None:
        """Wait until every point added before ``mark`` is acknowledged; the first failure
        raises. Requests added since stay queued and in flight."""
        assert isinstance(mark, tuple) and len(mark) == len(self._lanes)
        self._raise_if_failed()
        for lane, target in zip(self._lanes, mark, strict=True):
            if lane.added - len(lane.buf) < target:  # points of the mark still buffered
                self._ship(lane)
        with self._cv:
            while self._error is None and any(
                lane.acked < target for lane, target in zip(self._lanes, mark, strict=True)
            ):
                self._cv.wait()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        with self._cv:
            if self._error is not None:
                raise self._error
