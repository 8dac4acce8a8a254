"""The history apply loop's watermark commit rule (engine/apply_history.py ``Commits``) and
the REST sink's acknowledged marks (sink_pool.ConcurrentMetricSink): a watermark and its
digest are recorded only for points the destination acknowledged, even when it
acknowledges them out of order, and a sink with marks is not drained at the commits."""

from __future__ import annotations

import random
import threading
from typing import Any

from bridge.adapters.base import MetricSink, Notices
from bridge.adapters.features import AcknowledgedMarks
from bridge.adapters.mlflow.sink_pool import ConcurrentMetricSink, LogBatchPool
from bridge.engine.apply_history import Commits
from bridge.engine.streams import StreamGate, combine, digest_of
from bridge.schema import MetricChunk


class OutOfOrderSink(MetricSink, AcknowledgedMarks):
    """Acknowledges random points at random moments, later ones often before earlier
    ones; ``wait_acknowledged`` acknowledges the mark's points in a shuffled order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.points: list[tuple[str, int]] = []  # (key, step) in the order added
        self.acked: set[int] = set()  # indexes into points
        self.flushes = 0

    def _ack_some(self, upto: int) -> None:
        todo = [i for i in range(upto) if i not in self.acked]
        self.rng.shuffle(todo)
        self.acked.update(todo[: self.rng.randint(0, len(todo))])

    def add(self, chunk: MetricChunk) -> None:
        self.points.extend((chunk.key, step) for step in chunk.steps)
        self._ack_some(len(self.points))

    def flush(self) -> None:
        self.flushes += 1
        self.acked.update(range(len(self.points)))

    def mark(self) -> object:
        return len(self.points)

    def wait_acknowledged(self, mark: object) -> None:
        assert isinstance(mark, int)
        todo = [i for i in range(mark) if i not in self.acked]
        self.rng.shuffle(todo)
        self.acked.update(todo)
        self._ack_some(len(self.points))  # and some later ones, out of order


def _history(seed: int, keys: int, steps: int) -> list[MetricChunk]:
    rng = random.Random(seed)
    out = []
    for start in range(0, steps, 100):
        for k in range(keys):
            n = rng.randint(1, 100)
            out.append(
                MetricChunk(
                    key=f"m{k}",
                    steps=list(range(start, start + n)),
                    timestamps=[1000 + s for s in range(start, start + n)],
                    values=[rng.random() for _ in range(n)],
                )
            )
    return out


def _source(chunks: list[MetricChunk]) -> dict[str, MetricChunk]:
    """Each key's whole history as one chunk, in source order."""
    out: dict[str, MetricChunk] = {}
    for c in chunks:
        have = out.setdefault(c.key, MetricChunk(key=c.key, steps=[], timestamps=[], values=[]))
        have.steps.extend(c.steps)
        have.timestamps.extend(c.timestamps)
        have.values.extend(c.values)
    return out


def _run(sink: MetricSink, chunks: list[MetricChunk], gate: StreamGate, pipelined: bool) -> Any:
    """The loop of ``write_history``; every recording is checked against the sink."""
    source = _source(chunks)
    written = dict(gate.watermarks)
    records: list[dict[str, tuple[int, int]]] = []

    def record(recorded: dict[str, tuple[int, int]]) -> None:
        assert isinstance(sink, OutOfOrderSink)
        for key, (points, digest) in recorded.items():
            assert points >= written.get(key, 0)  # watermarks never go back
            # the points of the key past its old watermark, in the order added
            added = [i for i, (k, _) in enumerate(sink.points) if k == key]
            new = points - gate.watermarks.get(key, 0)
            assert all(i in sink.acked for i in added[:new]), (key, points)
            assert digest == digest_of(source[key], 0, points)
            written[key] = points
        records.append(recorded)

    commits = Commits(sink, gate.take_recorded, record, pipelined=pipelined)
    pending = 0
    for chunk in chunks:
        new = gate.admit(chunk)
        if new is None:
            continue
        sink.add(new)
        pending += len(new)
        if pending >= 1000:
            commits.checkpoint()
            pending = 0
    flushes = sink.flushes if isinstance(sink, OutOfOrderSink) else 0
    commits.final()
    assert written == {key: len(c) for key, c in source.items()}
    return records, flushes


def test_pipelined_commits_record_only_acknowledged_prefixes() -> None:
    for seed in range(20):
        chunks = _history(seed, keys=4, steps=3000)
        source = _source(chunks)
        # a previous sync wrote a prefix of some keys (with their digests)
        marks = {"m0": 250, "m2": 7}
        gate = StreamGate(
            watermarks=dict(marks),
            recorded={k: (n, digest_of(source[k], 0, n)) for k, n in marks.items()},
        )
        sink = OutOfOrderSink(seed)
        records, flushes = _run(sink, chunks, gate, pipelined=True)
        assert flushes == 0  # never drained before the end
        assert len(records) > 2  # watermarks recorded along the way, not only at the end
        assert len(sink.points) == sum(len(c) for c in source.values()) - sum(marks.values())


def test_combined_digest_of_held_and_later_snapshots() -> None:
    # the final commit merges the held snapshot with later ones: the later count wins
    chunks = _history(7, keys=3, steps=2000)
    gate = StreamGate(watermarks={})
    records, _ = _run(OutOfOrderSink(7), chunks, gate, pipelined=True)
    last: dict[str, tuple[int, int]] = {}
    for r in records:
        last.update(r)
    src = _source(chunks)
    assert last == {k: (len(c), combine(0, digest_of(c))) for k, c in src.items()}


def test_sinks_that_do_not_dedupe_flush_at_every_commit() -> None:
    chunks = _history(3, keys=2, steps=6000)
    sink = OutOfOrderSink(3)
    records, flushes = _run(sink, chunks, StreamGate(watermarks={}), pipelined=False)
    assert flushes == len(records) - 1 > 1  # a flush before each commit but the final one


class _BlockingClient:
    """A client stand-in (no RestStore: the sink calls ``log_batch``): a request holding a
    step ≥ ``block_from`` waits until ``release`` is set."""

    def __init__(self, block_from: int) -> None:
        self.block_from = block_from
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.done: list[list[Any]] = []
        self.lock = threading.Lock()

    def log_batch(self, run_id: str, metrics: list[Any], synchronous: bool) -> None:
        if any(m.step >= self.block_from for m in metrics):
            self.blocked.set()
            assert self.release.wait(timeout=600)
        with self.lock:
            self.done.append(metrics)


def _chunk(key: str, start: int, n: int) -> MetricChunk:
    r = range(start, start + n)
    return MetricChunk(key=key, steps=list(r), timestamps=list(r), values=[0.5] * n)


def test_wait_acknowledged_leaves_later_requests_in_flight() -> None:
    client = _BlockingClient(block_from=1000)
    pool = LogBatchPool(4)
    sink = ConcurrentMetricSink(client, "run", "src", {}, threading.Lock(), Notices(), pool)
    try:
        sink.add(_chunk("a", 0, 1000))  # a full batch: sent at once
        sink.add(_chunk("b", 0, 300))  # a partial buffer in b's lane
        mark = sink.mark()
        sink.add(_chunk("a", 1000, 1000))  # sent, and held by the server stand-in
        assert client.blocked.wait(timeout=600)
        waiter = threading.Thread(target=sink.wait_acknowledged, args=(mark,))
        waiter.start()
        waiter.join(timeout=600)  # a hang guard: the wait must not need the held request
        assert not waiter.is_alive()
        steps = sorted(m.step for batch in client.done for m in batch if m.key == "b")
        assert steps == list(range(300))  # the mark's partial buffer was sent
        assert sink.points_sent == 1300  # the request after the mark is still in flight
    finally:
        client.release.set()
    sink.flush()
    pool.close()
    assert sink.points_sent == 2300
