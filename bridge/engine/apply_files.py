"""A run's files into the destination: run files, media named by history, and logged
artifacts' content and manifests, each checked against what the source says."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from functools import partial
from typing import IO, cast

from bridge.engine.artifacts import (
    VerifyingStream,
    artifact_folder,
    content_entries,
    entry_digest,
    manifest_record,
    version_label,
)
from bridge.engine.compare import file_digest
from bridge.engine.context import Planned, SyncContext
from bridge.engine.marks import MANIFEST_ONLY
from bridge.engine.models import model_object
from bridge.errors import ContentError
from bridge.faults import kill_point
from bridge.paths import PathRefused, check_relpath
from bridge.schema import ArtifactVersion, FileRef, ManifestEntry, Run, Warning_

RECORDS_DIR = "bridge/artifacts"  # records of artifacts with no content to copy


def write_files(
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
        if art.direction != "logged" or not (art.manifest or _model_object(ctx, art)):
            # Nothing to copy (a used dataset, a model listed by reference): the record only.
            record = json.dumps(manifest_record(art), indent=2).encode()
            path = f"{RECORDS_DIR}/{art.direction}/{art.name}/{version_label(art)}.json"
            todo.append((FileRef(path=path, size=len(record)), partial(io.BytesIO, record), None))
            continue
        folder = artifact_folder(art)
        location = None
        if art.type == "model" and ctx.features.logged_models is not None and art.source_id:
            try:
                location = model_object(ctx, planned, dest_id, art)
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
            links = ctx.features.file_links
            if art.source_id and links is not None:
                location = links.file_location(dest_id, f"{folder}/files")
                if location is not None:
                    copies.append((art, folder, location))
        # Source facts only: the copy's own ids (its model, its run) differ in every
        # destination, and two faithful copies of one run must hold the same files.
        record = json.dumps(manifest_record(art), indent=2).encode()
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


def _model_object(ctx: SyncContext, art: ArtifactVersion) -> bool:
    """A model the destination keeps as a model object of its own: copied even when it
    holds no file (a model object that failed, or holds only params and metrics)."""
    return (
        art.type == "model" and art.source_id is not None and ctx.features.logged_models is not None
    )


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
        hashed: dict[str, str] = {}
        digest = file_digest(ctx, ref, prior, opener, hashed)
        for stat_key, md5 in hashed.items():  # a --full pass hashed it to compare
            ctx.state.put_digest(stat_key, md5)
    if digest is not None and prior in (digest, MANIFEST_ONLY + digest):
        return
    kill_point("apply.file.before_put")
    ctx.check_lease(plan.source_id)  # a successor has the run: stop (engine/claims.py)
    with VerifyingStream(opener(), expect=entry, what=ref.path) as stream:
        ctx.writer.put_file(dest_id, ref.path, cast(IO[bytes], stream))
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
