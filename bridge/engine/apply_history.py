"""A run's history into the destination: points past the watermarks, late points merged,
everything that is not a number kept aside in one file of the run."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from typing import IO

from bridge.adapters.base import MetricSink
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
    commit_every = caps.metrics_per_batch if not caps.dedupes_metric_points else 20_000
    gate = open_gate(
        ctx.state, ctx.dest_uri, plan.source_id, planned.watermarks, ctx.features.read_back
    )
    unmerged: list[str] = []
    non_finite: dict[str, int] = {}
    media: dict[str, FileRef] = {}
    sink: MetricSink = ctx.writer.metric_sink(dest_id)
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
                sink.add(new)
                pending += len(new)
                plan.points_written += len(new)
                if progress is not None:
                    progress(len(new))
                if pending >= commit_every:
                    kill_point("apply.history.batch.before_flush")
                    sink.flush()
                    kill_point("apply.history.batch.after_flush")
                    _commit_streams(ctx, plan.source_id, gate.take_recorded())
                    kill_point("apply.history.batch.after_watermark")
                    pending = 0
            kill_point("apply.history.final.before_flush")
            sink.flush()
            kill_point("apply.history.final.after_flush")
            _commit_streams(ctx, plan.source_id, gate.take_recorded())
            kill_point("apply.history.final.after_watermark")
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
