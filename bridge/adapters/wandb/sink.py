"""Metric points into W&B history rows (the writers' :class:`MetricSink`).

W&B drops a row whose step is lower than the last one, and source steps repeat, go back
and differ per key. So ``_step`` is a plain row counter, every row carries the source step
under the mapping's step key and its ``_timestamp``; points of different keys sharing
(step, timestamp) share a row. Nothing is dropped or merged: a key's points keep their order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from bridge.adapters.base import MetricSink, Notices
from bridge.adapters.wandb.bridged import INTERNAL_HISTORY_KEYS, RENAMED_METRIC_PREFIX
from bridge.adapters.wandb.sdk import LiveRun
from bridge.schema import MetricChunk

#: Points buffered per sink before rows are sent even without a flush (memory bound).
SINK_MAX_POINTS = 50_000


def stored_metric_key(key: str, step_key: str) -> str:
    """The history key a source metric is stored under: one W&B (or the layout's step
    column) owns gets the ``metric:`` prefix."""
    if key in INTERNAL_HISTORY_KEYS or key == step_key:
        return RENAMED_METRIC_PREFIX + key
    return key


def source_metric_key(stored: str, step_key: str) -> str:
    """The source metric a stored history key stands for (undoes :func:`stored_metric_key`)."""
    if stored.startswith(RENAMED_METRIC_PREFIX):
        rest = stored[len(RENAMED_METRIC_PREFIX) :]
        if rest in INTERNAL_HISTORY_KEYS or rest == step_key:
            return rest
    return stored


class WandbMetricSink(MetricSink):
    """Buffers points of any keys; on flush merges them into rows and logs each row.

    Keys are merged by (timestamp, step) so rows come out roughly in time order and
    points of different keys that share (step, timestamp) share a row; each key's points
    keep their source order (a key never appears twice in a row).
    """

    def __init__(
        self, live: LiveRun, step_key: str, key_of: Callable[[str], str], notices: Notices
    ) -> None:
        self._live = live
        self._step_key = step_key
        self._key_of = key_of
        self._buf: dict[str, list[tuple[int, int, float]]] = {}
        self._n = 0
        self.rows_sent = 0
        self.points_sent = 0
        self._notices = notices  # the writer's channel: one sanitized-key notice per key
        self._renamed: set[str] = set()

    def add(self, chunk: MetricChunk) -> None:
        stored = self._key_of(chunk.key)
        if stored != chunk.key and chunk.key not in self._renamed:
            self._renamed.add(chunk.key)
            self._notices.add(
                self._live.source_id,
                "sanitized-key",
                f"metric key {chunk.key!r} is reserved in W&B history; stored as {stored!r}",
            )
        buf = self._buf.setdefault(stored, [])
        buf.extend(zip(chunk.steps, chunk.timestamps, chunk.values, strict=True))
        self._n += len(chunk)
        if self._n >= SINK_MAX_POINTS:
            self.flush()

    def _rows(self) -> Iterator[dict[str, Any]]:
        streams = [
            [(ts, step, i, key, value) for i, (step, ts, value) in enumerate(points)]
            for key, points in self._buf.items()
        ]
        row: dict[str, Any] | None = None
        row_at: tuple[int, int] | None = None
        for ts, step, _, key, value in heapq.merge(*streams, key=lambda p: (p[0], p[1])):
            if row is None or row_at != (step, ts) or key in row:
                if row is not None:
                    yield row
                row = {self._step_key: step, "_timestamp": ts / 1000.0}
                row_at = (step, ts)
            row[key] = value
        if row is not None:
            yield row

    def flush(self) -> None:
        if not self._n:
            return
        for row in self._rows():
            self._live.log_row(row)
            self.rows_sent += 1
        self._live.check_kept()
        self.points_sent += self._n
        self._buf.clear()
        self._n = 0
