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
import json
import math
import os
import tempfile
from collections.abc import Callable
from functools import partial
from typing import IO

from bridge.adapters.base import MetricSink
from bridge.engine.artifacts import (
    VerifyingStream,
    artifact_folder,
    checksum_problem,
    content_entries,
    manifest_record,
    version_label,
)
from bridge.engine.model import ModelPlan, RunPlan
from bridge.engine.plan import Planned, SyncContext, file_digest, resolve_parent, slice_new
from bridge.engine.prefetch import prefetch
from bridge.faults import kill_point
from bridge.schema import (
    ArtifactVersion,
    ExtraValue,
    FileRef,
    ManifestEntry,
    MetricChunk,
    Run,
    Warning_,
)
from bridge.state import RunState

EXTRAS_PATH = "bridge/history-extras.jsonl"
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
        kill_point("apply.create.after_create_run")
        baseline = RunState(dest_id=dest_id, project_dest_id=project_dest_id)
        state.put_run(dest_uri, sid, baseline)
        kill_point("apply.create.after_state")
        plan.dest_id = dest_id
    else:
        assert baseline is not None and plan.dest_id is not None
        dest_id = plan.dest_id
        baseline.complete = False
        state.put_run(dest_uri, sid, baseline)
        kill_point("apply.update.after_state")
        writer.begin_update(dest_id)

    writer.write_metadata(dest_id, run, plan.params_to_write, plan.tags_to_write)
    kill_point("apply.metadata.after_write")
    baseline.written_params.update(plan.params_to_write)
    baseline.written_tags.update(plan.tags_to_write)
    state.put_run(dest_uri, sid, baseline)
    kill_point("apply.metadata.after_state")

    media = _write_history(ctx, planned, dest_id, progress)
    _write_files(ctx, planned, dest_id, run, media)

    kill_point("apply.finish.before")
    writer.finish_run(dest_id, run, planned.header.fingerprint)
    kill_point("apply.finish.after_complete")
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
                    kill_point("apply.history.batch.before_flush")
                    sink.flush()
                    kill_point("apply.history.batch.after_flush")
                    ctx.state.set_watermarks(ctx.dest_uri, plan.source_id, watermarks)
                    kill_point("apply.history.batch.after_watermark")
                    pending = 0
            kill_point("apply.history.final.before_flush")
            sink.flush()
            kill_point("apply.history.final.after_flush")
            ctx.state.set_watermarks(ctx.dest_uri, plan.source_id, watermarks)
            kill_point("apply.history.final.after_watermark")
            extras.flush()
            if extras.tell() > 0:
                extras.seek(0)
                with open(extras.name, "rb") as fh:
                    ctx.writer.put_file(dest_id, EXTRAS_PATH, fh)
                kill_point("apply.history.after_extras")
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
    todo: list[tuple[FileRef, Callable[[], IO[bytes]], ManifestEntry | None]] = []
    for ref in [*run.files, *media]:
        todo.append((ref, partial(ctx.reader.open_file, ref), None))
    copies: list[tuple[ArtifactVersion, str, str]] = []  # (version, folder, its location)
    for art in run.artifacts:
        if art.direction != "logged" or not art.manifest:
            # Nothing to copy (a used dataset, a model listed by reference): the record only.
            record = json.dumps(manifest_record(art), indent=2).encode()
            path = f"{RECORDS_DIR}/{art.direction}/{art.name}/{version_label(art)}.json"
            todo.append((FileRef(path=path, size=len(record)), partial(io.BytesIO, record), None))
            continue
        folder = artifact_folder(art)
        location = None
        if art.type == "model" and ctx.writer.capabilities.logged_models and art.source_id:
            location = _model_object(ctx, planned, dest_id, art)
        else:
            for content, opener in content_entries(
                art, ctx.reader.open_artifact_entry, ctx.download_references
            ):
                ref = FileRef(path=f"{folder}/files/{content.path}", size=content.size)
                todo.append((ref, opener, content))
            if art.source_id:
                location = ctx.writer.file_location(dest_id, f"{folder}/files")
                if location is not None:
                    copies.append((art, folder, location))
        record = json.dumps(manifest_record(art, location), indent=2).encode()
        manifest = FileRef(path=f"{folder}/manifest.json", size=len(record))
        todo.append((manifest, partial(io.BytesIO, record), None))
    seen: set[str] = set()
    for ref, opener, entry in todo:
        if ref.path in seen:
            continue
        seen.add(ref.path)
        digest = file_digest(ref) if entry is None else f"md5:{entry.digest}:{entry.size}"
        if done.get(ref.path) == digest:
            continue
        try:
            kill_point("apply.file.before_put")
            with VerifyingStream(opener()) as stream:
                ctx.writer.put_file(dest_id, ref.path, stream)  # type: ignore[arg-type]
        except FileNotFoundError as exc:
            plan.warnings.append(
                Warning_(
                    source_id=plan.source_id,
                    code="missing-file",
                    message=f"file {ref.path!r} could not be read: {exc}",
                )
            )
            continue
        if entry is not None:
            _check(plan, ref.path, entry, stream)
        kill_point("apply.file.after_put")
        ctx.state.put_file(ctx.dest_uri, plan.source_id, ref.path, digest)
        plan.files_written += 1
    # A version whose content is all in place is a copy later runs and registry versions reuse.
    for art, folder, location in copies:
        assert art.source_id is not None
        if ctx.state.get_object(ctx.dest_uri, art.source_id) is None and all(
            f"{folder}/files/{e.path}" in seen for e in art.manifest if e.ref is None
        ):
            ctx.state.put_object(ctx.dest_uri, art.source_id, location)
            kill_point("apply.object.after_state")


def _check(
    plan: RunPlan | ModelPlan, what: str, entry: ManifestEntry, stream: VerifyingStream
) -> None:
    problem = checksum_problem(entry, stream)
    if problem is not None:
        plan.warnings.append(
            Warning_(
                source_id=plan.source_id,
                code="checksum-mismatch",
                message=f"{what}: copied content does not match its manifest: {problem}",
            )
        )


def place_model(
    ctx: SyncContext,
    plan: RunPlan | ModelPlan,
    project_dest_id: str,
    run_dest_id: str | None,
    art: ArtifactVersion,
) -> str:
    """The destination location of a model artifact's content: recorded in state, found
    by its identity tag (state lost), or written now as a model object (verified)."""
    assert art.source_id is not None
    known = ctx.state.get_object(ctx.dest_uri, art.source_id)
    if known is not None:
        return known
    found = ctx.writer.find_model(art.source_id)
    if found is None:
        streams: dict[str, tuple[ManifestEntry, VerifyingStream]] = {}

        def verified(entry: ManifestEntry, opener: Callable[[], IO[bytes]]) -> IO[bytes]:
            stream = VerifyingStream(opener())
            streams[entry.path] = (entry, stream)
            return stream  # type: ignore[return-value]

        files = [
            (entry, partial(verified, entry, opener))
            for entry, opener in content_entries(
                art, ctx.reader.open_artifact_entry, ctx.download_references
            )
        ]
        kill_point("apply.model.before_put")
        try:
            found = ctx.writer.put_model(project_dest_id, run_dest_id, art, files)
        except FileNotFoundError as exc:
            if not any(e.ref for e, _ in files):
                raise
            # A reference target could not be fetched: store the model without reference
            # targets (they stay references in its manifest) and say which one failed.
            plan.warnings.append(
                Warning_(source_id=plan.source_id, code="missing-file", message=str(exc))
            )
            streams.clear()
            files = [(e, o) for e, o in files if e.ref is None]
            found = ctx.writer.put_model(project_dest_id, run_dest_id, art, files)
        for path, (entry, stream) in sorted(streams.items()):
            _check(
                plan, f"model {art.name}:{art.version or art.digest} file {path!r}", entry, stream
            )
    kill_point("apply.model.after_put")
    ctx.state.put_object(ctx.dest_uri, art.source_id, found)
    return found


def _model_object(ctx: SyncContext, planned: Planned, dest_id: str, art: ArtifactVersion) -> str:
    baseline = planned.baseline
    project_dest_id = (
        baseline.project_dest_id
        if baseline is not None
        else ctx.project_id(planned.header.project, create=True)
    )
    assert project_dest_id is not None
    return place_model(ctx, planned.plan, project_dest_id, dest_id, art)
