"""A run's history into the destination: points past the watermarks, late points merged,
everything that is not a number kept aside in one file of the run.

Durability rule: a watermark (and its digest) is recorded only for points the destination
acknowledged, so a crash anywhere leaves points a re-sync re-sends, never points it skips.
Where re-sending would duplicate, the sink is flushed and the watermarks recorded after
every batch. Where the destination ignores re-sent points, every ``COMMIT_EVERY`` points:
a sink with :class:`AcknowledgedMarks` (requests in flight, the MLflow server's) is not
drained there — each commit takes a mark of the points added so far with the gate's
(points, digest) of the same moment, and records the previous commit's snapshot once its
mark is acknowledged (long since, as a rule), so the requests in flight never run dry;
other sinks are flushed and record the current snapshot. A snapshot's digests describe
exactly the points added before its mark, so the bookkeeping of ``engine.streams`` stays
exact; a crash re-sends at most two intervals, which the destination ignores.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from typing import IO

from bridge.adapters.base import MetricSink
from bridge.adapters.features import AcknowledgedMarks
from bridge.engine.context import Planned, SyncContext
from bridge.engine.prefetch import prefetch
from bridge.engine.streams import (
    StreamGate,
    can_merge,
    merge_streams,
    open_gate,
    to_hex,
    unmergeable_error,
)
from bridge.errors import RunError
from bridge.faults import kill_point
from bridge.schema import ExtraValue, FileRef, MetricChunk, Warning_

EXTRAS_PATH = "bridge/history-extras.jsonl"

ProgressFn = Callable[[int], None]
Recorded = dict[str, tuple[int, int]]
#: Points between watermark commits where the destination ignores re-sent points
#: (``BRIDGE_HISTORY_COMMIT_EVERY``: the kill campaign's pipelined cases commit often).
COMMIT_EVERY = 20_000


def write_history(
    ctx: SyncContext, planned: Planned, dest_id: str, progress: ProgressFn | None
) -> list[FileRef]:
    """Stream history past the watermarks into the sink; keep extras aside in a file.

    Each key's prefix up to its watermark is checked against the recorded digest on the
    way (see ``engine.streams``); keys where points arrived inside it are merged after the
    pass, writing exactly the points the destination lacks."""
    plan, run = planned.plan, planned.run
    assert run is not None
    caps = ctx.writer.capabilities
    # Durable watermark after every batch where re-sending would duplicate points.
    commit_every = caps.metrics_per_batch
    if caps.dedupes_metric_points:
        commit_every = int(os.environ.get("BRIDGE_HISTORY_COMMIT_EVERY", COMMIT_EVERY))
    gate = open_gate(
        ctx.state, ctx.dest_uri, plan.source_id, planned.watermarks, ctx.features.read_back
    )
    unmerged: list[str] = []
    non_finite: dict[str, int] = {}
    media: dict[str, FileRef] = {}
    sink: MetricSink = ctx.writer.metric_sink(dest_id)
    commits = Commits(
        sink,
        gate.take_recorded,
        lambda recorded: _commit_streams(ctx, plan.source_id, recorded),
        pipelined=caps.dedupes_metric_points,
    )
    pending = 0
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as extras:
        try:
            for item in prefetch(ctx.reader.iter_history(run)):
                if isinstance(item, ExtraValue):
                    extras.write(item.model_dump_json(exclude={"file"}) + "\n")
                    if item.file is not None:
                        media[item.file.path] = item.file
                    continue
                if not caps.stores_infinity:
                    _set_aside_infinities(item, extras, non_finite)
                new = gate.admit(item)
                if new is None:
                    continue
                ctx.check_lease(plan.source_id)  # a successor has the run: stop (claims.py)
                sink.add(new)
                pending += len(new)
                plan.points_written += len(new)
                if progress is not None:
                    progress(len(new))
                if pending >= commit_every:
                    commits.checkpoint()
                    pending = 0
            commits.final()
            unmerged = _merge_late_points(ctx, planned, dest_id, sink, gate, progress)
            extras.flush()
            if extras.tell() > 0:
                extras.seek(0)
                with open(extras.name, "rb") as fh:
                    ctx.writer.put_file(dest_id, EXTRAS_PATH, fh)
                kill_point("apply.history.after_extras")
        finally:
            os.unlink(extras.name)
    # What the sink had to bend (renamed keys...), from the writer's notices channel: on
    # the run's line here, before the points set aside (the order the report always had).
    plan.warnings.extend(ctx.writer.notices.drain(plan.source_id))
    for key, count in sorted(non_finite.items()):
        plan.warnings.append(
            Warning_(
                source_id=plan.source_id,
                code="non-finite",
                message=(
                    f"metric {key!r}: {count} ±inf point(s) cannot be stored faithfully "
                    f"by the destination; raw values kept in {EXTRAS_PATH}"
                ),
            )
        )
    if unmerged:
        raise RunError(unmergeable_error(ctx.writer, unmerged))
    return list(media.values())


class Commits:
    """When the gate's (points, digest) snapshots become watermarks (module docstring):
    ``take`` snapshots the keys appended to since the last call, ``record`` stores one."""

    def __init__(
        self,
        sink: MetricSink,
        take: Callable[[], Recorded],
        record: Callable[[Recorded], None],
        pipelined: bool,
    ) -> None:
        self._sink, self._take, self._record = sink, take, record
        self._marks = sink if pipelined and isinstance(sink, AcknowledgedMarks) else None
        self._held: tuple[object, Recorded] | None = None  # (mark, snapshot) not yet recorded

    def checkpoint(self) -> None:
        kill_point("apply.history.batch.before_flush")
        if self._marks is None:
            self._sink.flush()
            kill_point("apply.history.batch.after_flush")
            self._record(self._take())
        else:
            held, self._held = self._held, (self._marks.mark(), self._take())
            if held is not None:
                self._marks.wait_acknowledged(held[0])
            kill_point("apply.history.batch.after_flush")
            if held is not None:
                self._record(held[1])
        kill_point("apply.history.batch.after_watermark")

    def final(self) -> None:
        """Flush everything; record what is held and what came since (later counts win)."""
        kill_point("apply.history.final.before_flush")
        self._sink.flush()
        kill_point("apply.history.final.after_flush")
        recorded = self._held[1] if self._held is not None else {}
        self._held = None
        self._record({**recorded, **self._take()})
        kill_point("apply.history.final.after_watermark")


def _commit_streams(ctx: SyncContext, source_id: str, recorded: dict[str, tuple[int, int]]) -> None:
    """Record the watermarks and digests of the keys written to since the last commit
    (``recorded``: per key, points now held and their digest), in one transaction: a flush
    costs O(changed keys), not O(all keys of the run) (20k-key runs used to spend seconds
    per commit rewriting every watermark)."""
    ctx.state.set_watermarks(
        ctx.dest_uri,
        source_id,
        {key: points for key, (points, _) in recorded.items()},
        digests={key: (points, to_hex(digest)) for key, (points, digest) in recorded.items()},
    )


def _merge_late_points(
    ctx: SyncContext,
    planned: Planned,
    dest_id: str,
    sink: MetricSink,
    gate: StreamGate,
    progress: ProgressFn | None,
) -> list[str]:
    """Merge the keys the gate found points inside of; their watermarks and digests are
    recorded after the flush (a crash before leaves the old ones: the next sync merges
    again, against what the destination then holds). Returns the keys that cannot be
    merged into this destination (not written)."""
    keys = gate.to_merge()
    if not keys:
        return []
    if not can_merge(ctx.writer, ctx.features.read_back):
        return sorted(keys)
    plan, run = planned.plan, planned.run
    assert run is not None

    def write(chunk: MetricChunk) -> None:
        sink.add(chunk)
        plan.points_written += len(chunk)
        if progress is not None:
            progress(len(chunk))

    held = merge_streams(ctx.reader, run, ctx.features.read_back, dest_id, keys, write)
    sink.flush()
    _commit_streams(ctx, plan.source_id, held)
    return []


def _set_aside_infinities(chunk: MetricChunk, extras: IO[str], counts: dict[str, int]) -> None:
    for step, ts, value in zip(chunk.steps, chunk.timestamps, chunk.values, strict=True):
        if math.isinf(value):
            counts[chunk.key] = counts.get(chunk.key, 0) + 1
            raw = "Infinity" if value > 0 else "-Infinity"
            record = ExtraValue(
                key=chunk.key, step=step, timestamp=ts, value_json=raw, kind="non-finite"
            )
            extras.write(record.model_dump_json(exclude={"file"}) + "\n")
