"""Carry out planned actions, crash-safely.

Order of writes for one run, so a crash at any point leaves something a re-run finishes:
1. create the destination run with its identity tag (the tag is how it is found again),
2. record it in state as incomplete,
3. params/tags, then history in batches, recording a per-stream watermark after each flush,
4. files (skipped when state says the same digest is already there),
5. final status and end time, then the completion marker, then state "complete".
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable
from functools import partial
from typing import IO

from bridge.adapters.base import MetricSink
from bridge.engine.plan import Planned, SyncContext, file_digest, resolve_parent, slice_new
from bridge.engine.prefetch import prefetch
from bridge.schema import ExtraValue, FileRef, MetricChunk, Run, Warning_
from bridge.state import RunState

EXTRAS_PATH = "bridge/history-extras.jsonl"
ARTIFACTS_DIR = "artifacts"  # logged artifacts' content: <name>/<digest>/files/...
RECORDS_DIR = "bridge/artifacts"  # records of artifacts with no content to copy

ProgressFn = Callable[[int], None]


def apply_run(ctx: SyncContext, planned: Planned, progress: ProgressFn | None = None) -> None:
    """Write one planned run; raises on failure (the caller records it)."""
    plan, run, rendered = planned.plan, planned.run, planned.rendered
    assert run is not None and rendered is not None
    writer, state, sid = ctx.writer, ctx.state, plan.source_id
    dest_uri = ctx.dest_uri
    baseline = planned.baseline

    if resolve_parent(ctx, run):
        # The parent was written earlier in this pass: its link is one more tag to write.
        for key, value in ctx.writer.render(run).tags.items():
            if rendered.tags.get(key) != value:
                plan.tags_to_write[key] = value
    if plan.action == "create":
        project_dest_id = ctx.project_id(planned.header.project, create=True)
        assert project_dest_id is not None
        dest_id = writer.create_run(project_dest_id, run, rendered)
        baseline = RunState(dest_id=dest_id, project_dest_id=project_dest_id)
        state.put_run(dest_uri, sid, baseline)
        plan.dest_id = dest_id
    else:
        assert baseline is not None and plan.dest_id is not None
        dest_id = plan.dest_id
        baseline.complete = False
        state.put_run(dest_uri, sid, baseline)
        writer.begin_update(dest_id)

    writer.write_metadata(dest_id, run, plan.params_to_write, plan.tags_to_write)
    baseline.written_params.update(plan.params_to_write)
    baseline.written_tags.update(plan.tags_to_write)
    state.put_run(dest_uri, sid, baseline)

    media = _write_history(ctx, planned, dest_id, progress)
    _write_files(ctx, planned, dest_id, run, media)

    writer.finish_run(dest_id, run, planned.header.fingerprint)
    baseline.complete = True
    baseline.fingerprint = planned.header.fingerprint
    state.put_run(dest_uri, sid, baseline)
    plan.outcome = "done"


def _write_history(
    ctx: SyncContext, planned: Planned, dest_id: str, progress: ProgressFn | None
) -> list[FileRef]:
    """Stream history past the watermarks into the sink; keep extras aside in a file."""
    plan, run = planned.plan, planned.run
    assert run is not None
    caps = ctx.writer.capabilities
    # Durable watermark after every batch where re-sending would duplicate points.
    commit_every = caps.metrics_per_batch if not caps.dedupes_metric_points else 20_000
    watermarks = dict(planned.watermarks)
    seen: dict[str, int] = {}
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
                before = seen.get(item.key, 0)
                seen[item.key] = before + len(item)
                if not caps.stores_infinity:
                    _set_aside_infinities(item, extras, non_finite)
                new = slice_new(item, before, watermarks.get(item.key, 0))
                if new is None:
                    continue
                sink.add(new)
                watermarks[item.key] = seen[item.key]
                pending += len(new)
                plan.points_written += len(new)
                if progress is not None:
                    progress(len(new))
                if pending >= commit_every:
                    sink.flush()
                    ctx.state.set_watermarks(ctx.dest_uri, plan.source_id, watermarks)
                    pending = 0
            sink.flush()
            ctx.state.set_watermarks(ctx.dest_uri, plan.source_id, watermarks)
            extras.flush()
            if extras.tell() > 0:
                extras.seek(0)
                with open(extras.name, "rb") as fh:
                    ctx.writer.put_file(dest_id, EXTRAS_PATH, fh)
        finally:
            os.unlink(extras.name)
    plan.warnings.extend(getattr(sink, "warnings", []))
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
    return list(media.values())


def _set_aside_infinities(chunk: MetricChunk, extras: IO[str], counts: dict[str, int]) -> None:
    for step, ts, value in zip(chunk.steps, chunk.timestamps, chunk.values, strict=True):
        if math.isinf(value):
            counts[chunk.key] = counts.get(chunk.key, 0) + 1
            raw = "Infinity" if value > 0 else "-Infinity"
            record = ExtraValue(
                key=chunk.key, step=step, timestamp=ts, value_json=raw, kind="non-finite"
            )
            extras.write(record.model_dump_json(exclude={"file"}) + "\n")


def _write_files(
    ctx: SyncContext, planned: Planned, dest_id: str, run: Run, media: list[FileRef]
) -> None:
    """Run files, media named by history, and logged artifacts' content + manifests."""
    plan = planned.plan
    done = planned.files_done
    todo: list[tuple[FileRef, Callable[[], IO[bytes]]]] = []
    for ref in [*run.files, *media]:
        todo.append((ref, partial(ctx.reader.open_file, ref)))
    for art in run.artifacts:
        # Named by content digest: an offline log never knows the version number the
        # server assigns later, and the same artifact must land in the same place either way.
        version = art.digest or art.version or "unversioned"
        record = art.model_dump_json(indent=2).encode()
        if art.direction != "logged" or not art.manifest:
            # Nothing to copy (a used dataset, a model listed by reference): the record only.
            path = f"{RECORDS_DIR}/{art.direction}/{art.name}/{version}.json"
            todo.append((FileRef(path=path, size=len(record)), partial(io.BytesIO, record)))
            continue
        folder = f"{ARTIFACTS_DIR}/{art.name}/{version}"
        todo.append(
            (
                FileRef(path=f"{folder}/manifest.json", size=len(record)),
                partial(io.BytesIO, record),
            )
        )
        for entry in art.manifest:
            if entry.ref is not None:
                continue  # reference entries stay references (recorded in the manifest)
            ref = FileRef(
                path=f"{folder}/files/{entry.path}",
                size=entry.size,
                locator={"artifact": art.name, "entry": entry.path, "local_path": entry.local_path},
            )
            if entry.local_path and os.path.exists(entry.local_path):
                todo.append((ref, partial(_open_local, entry.local_path)))
            else:
                plan.warnings.append(
                    Warning_(
                        source_id=plan.source_id,
                        code="missing-file",
                        message=(
                            f"artifact {art.name}:{art.version or ''} file {entry.path!r} "
                            f"is not available (looked for {entry.local_path}); "
                            "its manifest entry is kept; pass --staging-dir if it was moved"
                        ),
                    )
                )
    seen: set[str] = set()
    for ref, opener in todo:
        if ref.path in seen:
            continue
        seen.add(ref.path)
        digest = file_digest(ref)
        if done.get(ref.path) == digest:
            continue
        try:
            with opener() as stream:
                ctx.writer.put_file(dest_id, ref.path, stream)
        except FileNotFoundError as exc:
            plan.warnings.append(
                Warning_(
                    source_id=plan.source_id,
                    code="missing-file",
                    message=f"file {ref.path!r} could not be read: {exc}",
                )
            )
            continue
        ctx.state.put_file(ctx.dest_uri, plan.source_id, ref.path, digest)
        plan.files_written += 1


def _open_local(path: str) -> IO[bytes]:
    return open(path, "rb")
