"""Model-typed artifacts as the destination's own model objects (where it has them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, cast

from bridge.engine.artifacts import VerifyingStream, content_entries
from bridge.engine.context import Planned, SyncContext
from bridge.engine.model import ModelPlan, RunPlan
from bridge.engine.object_claims import claimed_object
from bridge.errors import ContentError, RunError
from bridge.faults import kill_point
from bridge.paths import PathRefused, path_problem
from bridge.schema import ArtifactVersion, ManifestEntry, Warning_


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
    with claimed_object(ctx, art.source_id):  # one process places it (engine/object_claims.py)
        return _place_model(ctx, plan, project_dest_id, run_dest_id, art)


def _place_model(
    ctx: SyncContext,
    plan: RunPlan | ModelPlan,
    project_dest_id: str,
    run_dest_id: str | None,
    art: ArtifactVersion,
) -> str:
    assert art.source_id is not None
    known = ctx.state.get_object(ctx.dest_uri, art.source_id)
    if known is not None:  # placed by the process that held the claim
        return known
    logged = ctx.features.logged_models
    if logged is None:
        raise RunError(f"model {art.name}: {ctx.writer.display_uri} keeps no model objects")
    found = logged.find_model(art.source_id)
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
        found = logged.put_model(
            project_dest_id, run_dest_id, art, [(e, o) for e, o in files if e.path not in skip]
        )
    kill_point("apply.model.after_put")
    ctx.state.put_object(ctx.dest_uri, art.source_id, found)
    return found


def _verified(entry: ManifestEntry, opener: Callable[[], IO[bytes]], what: str) -> IO[bytes]:
    return cast(IO[bytes], VerifyingStream(opener(), expect=entry, what=what))


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


def model_object(ctx: SyncContext, planned: Planned, dest_id: str, art: ArtifactVersion) -> str:
    baseline = planned.baseline
    project_dest_id = (
        baseline.project_dest_id
        if baseline is not None
        else ctx.project_id(planned.header.project, create=True)
    )
    assert project_dest_id is not None
    return place_model(ctx, planned.plan, project_dest_id, dest_id, art)
