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
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO

from bridge.adapters.base import MetricSink
from bridge.engine.artifacts import (
    VerifyingStream,
    artifact_folder,
    content_entries,
    entry_digest,
    manifest_record,
    version_label,
)
from bridge.engine.model import ModelPlan, RunPlan
from bridge.engine.plan import (
    MANIFEST_ONLY,
    OPEN_CONFLICTS,
    Planned,
    SyncContext,
    file_digest,
    resolve_parent,
)
from bridge.engine.prefetch import prefetch
from bridge.engine.streams import (
    StreamGate,
    can_merge,
    merge_streams,
    open_gate,
    to_hex,
    unmergeable_error,
)
from bridge.errors import ContentError, RunError
from bridge.faults import kill_point
from bridge.paths import PathRefused, check_relpath, path_problem
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
        state.reset_run(dest_uri, sid, baseline)  # a new run: watermarks start from zero
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
    problems = _write_files(ctx, planned, dest_id, run, media) + _refused(plan, run)
    if problems:
        # Everything else is written; without the completion marker the run stays
        # incomplete, so every later sync reads it again and retries what is missing.
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise ContentError(f"incomplete: {len(problems)} file(s) not copied: {shown}")

    # Open conflicts: the rest of the run is written, but the fingerprint recorded must
    # not make it look unchanged, so each later sync re-reads it and reports them again.
    fingerprint = planned.header.fingerprint
    if plan.conflicts:
        fingerprint = f"{fingerprint}{OPEN_CONFLICTS}"
    kill_point("apply.finish.before")
    writer.finish_run(dest_id, run, fingerprint)
    kill_point("apply.finish.after_complete")
    baseline.complete = True
    baseline.fingerprint = fingerprint
    state.put_run(dest_uri, sid, baseline)
    plan.outcome = "done"


def _refused(plan: RunPlan, run: Run) -> list[str]:
    """What the reader refused to read: reported, and a loss that fails the run."""
    for line in run.refused:
        plan.warnings.append(Warning_(source_id=plan.source_id, code="refused", message=line))
    return list(run.refused)


def _write_history(
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
    gate = open_gate(ctx.state, ctx.dest_uri, plan.source_id, planned.watermarks, ctx.writer)
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
    if not can_merge(ctx.writer):
        return sorted(keys)
    plan, run = planned.plan, planned.run
    assert run is not None

    def write(chunk: MetricChunk) -> None:
        sink.add(chunk)
        plan.points_written += len(chunk)
        if progress is not None:
            progress(len(chunk))

    held = merge_streams(ctx.reader, run, ctx.writer, dest_id, keys, write)
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


def _write_files(
    ctx: SyncContext, planned: Planned, dest_id: str, run: Run, media: list[FileRef]
) -> list[str]:
    """Run files, media named by history, and logged artifacts' content + manifests.

    Returns the content that could not be copied as the source says (missing, or bytes
    that do not match the manifest), one line per file: such a file is never recorded as
    copied, so the run stays incomplete and every later sync tries it again. Reference
    targets fetched on request are the exception: a failure is reported, the reference
    stays in the manifest."""
    plan = planned.plan
    todo: list[tuple[FileRef, Callable[[], IO[bytes]], ManifestEntry | None]] = []
    for ref in [*run.files, *media]:
        todo.append((ref, partial(ctx.reader.open_file, ref), None))
    copies: list[tuple[ArtifactVersion, str, str]] = []  # (version, folder, its location)
    problems: list[str] = []
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
            try:
                location = _model_object(ctx, planned, dest_id, art)
            except ContentError as exc:
                problems.append(str(exc))
                plan.warnings.append(
                    Warning_(source_id=plan.source_id, code=exc.code, message=str(exc))
                )
        else:
            for content, opener in content_entries(
                art,
                ctx.reader.open_artifact_entry,
                ctx.download_references,
                ctx.reader.file_reference_roots(),
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
    failed: set[str] = set()
    for ref, opener, entry in todo:
        if ref.path in seen:
            continue
        seen.add(ref.path)
        try:
            _copy_one(ctx, planned, dest_id, ref, opener, entry)
        except (FileNotFoundError, ContentError) as exc:
            problem = _content_problem(ctx, planned, ref, entry, exc)
            if problem is not None:
                failed.add(ref.path)
                problems.append(problem)
    # A version whose content is all in place is a copy later runs and registry versions reuse.
    for art, folder, location in copies:
        assert art.source_id is not None
        paths = [f"{folder}/files/{e.path}" for e in art.manifest if e.ref is None]
        if ctx.state.get_object(ctx.dest_uri, art.source_id) is None and all(
            p in seen and p not in failed for p in paths
        ):
            ctx.state.put_object(ctx.dest_uri, art.source_id, location)
            kill_point("apply.object.after_state")
    return problems


def _copy_one(
    ctx: SyncContext,
    planned: Planned,
    dest_id: str,
    ref: FileRef,
    opener: Callable[[], IO[bytes]],
    entry: ManifestEntry | None,
) -> None:
    """Copy one file unless state says this content is there already; record it after.

    Every name in ``ref.path`` came from the source (file names, artifact name, digest,
    entry path): one that is absolute or climbs out is refused here, never written."""
    if entry is not None:
        check_relpath(entry.path, "artifact entry path")
    check_relpath(ref.path, "destination path")
    plan = planned.plan
    prior = planned.files_done.get(ref.path)
    if entry is not None:
        digest: str | None = entry_digest(entry)
    else:
        digest = file_digest(ctx, ref, prior, opener)
    if digest is not None and prior in (digest, MANIFEST_ONLY + digest):
        return
    kill_point("apply.file.before_put")
    with VerifyingStream(opener(), expect=entry, what=ref.path) as stream:
        ctx.writer.put_file(dest_id, ref.path, stream)  # type: ignore[arg-type]
        stream.verify()  # a writer that stopped reading early: still checked
    if digest is None:  # first copy of a file without a digest: hashed on the way
        digest = f"md5:{stream.md5_b64()}:{stream.size}"
        if ref.stat_key and not ctx.dry_run:
            ctx.state.put_digest(ref.stat_key, stream.md5_b64())
    kill_point("apply.file.after_put")
    ctx.state.put_file(ctx.dest_uri, plan.source_id, ref.path, digest)
    plan.files_written += 1


def _content_problem(
    ctx: SyncContext,
    planned: Planned,
    ref: FileRef,
    entry: ManifestEntry | None,
    exc: Exception,
) -> str | None:
    """Report content that could not be copied; the line that fails the run, or None.

    A reference target (fetched on request) that cannot be fetched is reported and stays
    a reference; one the bridge refuses to read (:class:`PathRefused`) is a loss like a
    refused path. With ``accept_missing_content`` a person has decided the content is
    gone for good: the file is recorded as manifest-only (reported this once, not
    retried, not a failure)."""
    plan = planned.plan
    mismatch = isinstance(exc, ContentError)
    code = exc.code if isinstance(exc, ContentError) else "missing-file"
    what = f"{ref.path}: {exc}" if not mismatch else str(exc)
    if entry is not None and entry.ref is not None and not isinstance(exc, PathRefused):
        plan.warnings.append(Warning_(source_id=plan.source_id, code=code, message=what))
        return None
    if ctx.accept_missing_content:
        digest = entry_digest(entry) if entry is not None else f"size:{ref.size}"
        if not ctx.dry_run:
            ctx.state.put_file(ctx.dest_uri, plan.source_id, ref.path, MANIFEST_ONLY + digest)
        plan.warnings.append(
            Warning_(
                source_id=plan.source_id,
                code="manifest-only",
                message=f"{what} — accepted as manifest-only (--accept-missing-content)",
            )
        )
        return None
    plan.warnings.append(
        Warning_(
            source_id=plan.source_id,
            code=code,
            message=f"{what}; not recorded as copied: the run stays incomplete and the next "
            "sync tries again (content gone for good: --accept-missing-content)",
        )
    )
    return what


def place_model(
    ctx: SyncContext,
    plan: RunPlan | ModelPlan,
    project_dest_id: str,
    run_dest_id: str | None,
    art: ArtifactVersion,
) -> str:
    """The destination location of a model artifact's content: recorded in state, found
    by its identity tag (state lost), or written now as a model object, every file checked
    against its manifest while it streams. Content missing or not matching raises
    ContentError before the object is finalized (the next call finishes it)."""
    assert art.source_id is not None
    known = ctx.state.get_object(ctx.dest_uri, art.source_id)
    if known is not None:
        return known
    found = ctx.writer.find_model(art.source_id)
    if found is None:
        refused = [e.path for e in art.manifest if path_problem(e.path) is not None]
        if refused:  # refused before the object exists: never half an object behind
            raise PathRefused(
                f"model {art.name}:{art.version or art.digest}: refusing entry path(s) "
                f"{', '.join(repr(p) for p in refused)}: absolute, '..' or not normalized"
            )
        files = [
            (entry, partial(_verified, entry, opener, f"model {art.name} file {entry.path!r}"))
            for entry, opener in content_entries(
                art,
                ctx.reader.open_artifact_entry,
                ctx.download_references,
                ctx.reader.file_reference_roots(),
            )
        ]
        unreadable = _unreadable(files)
        for entry, reason in unreadable:
            code = "missing-file"
            line = f"model {art.name} file {entry.path!r}: {reason}"
            if entry.ref is None and not ctx.accept_missing_content:
                continue
            if entry.ref is None:
                code, line = "manifest-only", f"{line} — accepted as manifest-only"
            plan.warnings.append(Warning_(source_id=plan.source_id, code=code, message=line))
        lost = [e.path for e, _ in unreadable if e.ref is None]
        if lost and not ctx.accept_missing_content:
            raise ContentError(
                f"model {art.name}:{art.version or art.digest}: content missing for "
                f"{', '.join(lost)} (content gone for good: --accept-missing-content)",
                code="missing-file",
            )
        skip = {e.path for e, _ in unreadable}
        kill_point("apply.model.before_put")
        found = ctx.writer.put_model(
            project_dest_id, run_dest_id, art, [(e, o) for e, o in files if e.path not in skip]
        )
    kill_point("apply.model.after_put")
    ctx.state.put_object(ctx.dest_uri, art.source_id, found)
    return found


def _verified(entry: ManifestEntry, opener: Callable[[], IO[bytes]], what: str) -> IO[bytes]:
    return VerifyingStream(opener(), expect=entry, what=what)  # type: ignore[return-value]


def _unreadable(
    files: Sequence[tuple[ManifestEntry, Callable[[], IO[bytes]]]],
) -> list[tuple[ManifestEntry, str]]:
    """Entries whose content cannot be opened now (checked before a model object is
    created, so a missing file never leaves half an object behind)."""
    out: list[tuple[ManifestEntry, str]] = []
    for entry, opener in files:
        try:
            opener().close()
        except FileNotFoundError as exc:
            out.append((entry, str(exc)))
    return out


def _model_object(ctx: SyncContext, planned: Planned, dest_id: str, art: ArtifactVersion) -> str:
    baseline = planned.baseline
    project_dest_id = (
        baseline.project_dest_id
        if baseline is not None
        else ctx.project_id(planned.header.project, create=True)
    )
    assert project_dest_id is not None
    return place_model(ctx, planned.plan, project_dest_id, dest_id, art)
