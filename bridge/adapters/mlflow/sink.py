"""Metric points into an MLflow run with ``log_batch``: ≤1000 metrics and < 1 MB a call.

Servers and file stores use this sink; SQL stores the bulk sink built on it (bulk.py).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from bridge.adapters.base import MetricSink, Notices
from bridge.adapters.mlflow.names import (
    BATCH_BYTES,
    KEY_MAP_ARTIFACT,
    METRIC_OVERHEAD_BYTES,
    METRICS_PER_BATCH,
)
from bridge.faults import kill_point
from bridge.mapping import sanitize_key
from bridge.schema import MetricChunk


class MlflowMetricSink(MetricSink):
    """Buffers points across keys; sends ``log_batch`` calls of ≤1000 metrics and < 1 MB."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        source_id: str,
        renames: dict[str, str],
        lock: threading.Lock,
        notices: Notices,
    ) -> None:
        from mlflow.entities import Metric

        self._metric = Metric
        self._client = client
        self.run_id = run_id
        self.source_id = source_id
        self._renames = renames  # shared with the writer (original → stored), under lock
        self._lock = lock
        self._keys: dict[str, tuple[str, int]] = {}
        self._owners: dict[str, str] = {}
        self._buf: list[Any] = []
        self._bytes = 0
        self.points_sent = 0
        #: The writer's channel: sanitized-key / key-collision notices, one per key.
        self._notices = notices

    def _key(self, key: str) -> tuple[str, int]:
        stored = sanitize_key(key)
        if stored != key:
            with self._lock:
                self._renames[key] = stored
            self._notices.add(
                self.source_id,
                "sanitized-key",
                f"metric key {key!r} is not allowed by MLflow; stored as {stored!r} "
                f"(see {KEY_MAP_ARTIFACT})",
            )
        owner = self._owners.setdefault(stored, key)
        if owner != key:
            self._notices.add(
                self.source_id,
                "key-collision",
                f"metric keys {owner!r} and {key!r} both map to {stored!r}",
            )
        info = (stored, len(json.dumps(stored)) + METRIC_OVERHEAD_BYTES)
        self._keys[key] = info
        return info

    def add(self, chunk: MetricChunk) -> None:
        stored, cost = self._keys.get(chunk.key) or self._key(chunk.key)
        metric = self._metric
        points = [
            metric(stored, value, timestamp, step)
            for step, timestamp, value in zip(
                chunk.steps, chunk.timestamps, chunk.values, strict=True
            )
        ]
        i, n = 0, len(points)
        while i < n:
            room = min(METRICS_PER_BATCH - len(self._buf), (BATCH_BYTES - self._bytes) // cost)
            if room <= 0:
                self._send()
                continue
            take = points[i : i + room]
            self._buf.extend(take)
            self._bytes += cost * len(take)
            i += len(take)
            if len(self._buf) >= METRICS_PER_BATCH:
                self._send()

    def _send(self) -> None:
        if not self._buf:
            return
        buf, self._buf, self._bytes = self._buf, [], 0
        kill_point("mlflow.log_batch.before")
        self._client.log_batch(self.run_id, metrics=buf, synchronous=True)
        kill_point("mlflow.log_batch.after")
        self.points_sent += len(buf)

    def flush(self) -> None:
        self._send()
