"""One source run against its destination copy: mapped, present, complete; params and
tags as the writer renders them; metric streams; files."""

from __future__ import annotations

from bridge.engine.verify.context import VerifyContext, mapped_dest
from bridge.engine.verify.files import (
    accepted_manifest_only,
    compare_files,
    compare_models,
    expected_files,
)
from bridge.engine.verify.report import Mismatch, RunVerify
from bridge.engine.verify.streams import compare_history, history_stats
from bridge.errors import NothingToImport
from bridge.schema import RunHeader


def _compare_values(
    rv: RunVerify,
    kind: str,
    want: dict[str, str],
    have: dict[str, str],
    bookkeeping: frozenset[str],
) -> int:
    """Compare rendered values with the destination's; the writer's bookkeeping keys
    (:attr:`Writer.bookkeeping_keys`: they change by design) are never compared."""
    checked = 0
    for key, value in sorted(want.items()):
        if key in bookkeeping:
            continue
        checked += 1
        got = have.get(key)
        if got != value:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=f"{kind}:{key}",
                    source_value=value,
                    dest_value=got,
                    detail="missing at the destination" if got is None else None,
                )
            )
    return checked


def _left_out(ctx: VerifyContext, header: RunHeader) -> str | None:
    """Why the bridge left a source run without a copy on purpose, or None (a finding).

    Deleted at the source (a complete listing of an earlier sync lost it; ``--on-delete``
    decided about its copy), or nothing importable (the reader's NothingToImport, the
    same rule by which a sync skips a run rather than failing it)."""
    if ctx.deleted_at_source.get(header.source_id) is not None:
        return (
            "deleted at the source (an earlier sync's complete listing no longer showed it); "
            "its copy was handled by --on-delete"
        )
    try:
        ctx.reader.read_run(header)
    except NothingToImport as exc:
        return f"nothing importable: {exc}"
    return None


def _unsynced(ctx: VerifyContext, rv: RunVerify, header: RunHeader) -> RunVerify:
    """A source run in scope with no copy: ``unsynced`` unless left out on purpose."""
    reason = _left_out(ctx, header)
    if reason is not None:
        rv.status, rv.reason = "not-copied", reason
        return rv
    rv.status = "unsynced"
    rv.notes.append(
        "no copy: not mapped in state and no destination run carries its identity; "
        "run `bridge sync`"
    )
    return rv


def _kept_deleted(ctx: VerifyContext, source_id: str) -> str | None:
    """Why a missing destination copy is meant to be missing: its deletion was settled
    by taking the destination's side (``dest-wins`` or ``conflicts resolve --take dest``)."""
    settled = ctx.state.resolutions(ctx.dest_uri, source_id).get("run")
    if settled is None or settled.choice != "dest":
        return None
    return f"deleted in the destination; kept deleted (settled by {settled.resolved_by})"


def verify_run(ctx: VerifyContext, header: RunHeader) -> RunVerify:
    """Verify one source run against its destination copy (see the module doc)."""
    rv = RunVerify(source_id=header.source_id, name=header.name, project=header.project.name)
    dest_id, synced_fp = mapped_dest(ctx, header)
    if dest_id is None:
        return _unsynced(ctx, rv, header)
    rv.dest_id = dest_id
    rv.stale = synced_fp is not None and synced_fp != header.fingerprint
    dest = ctx.writer.get_run(dest_id)
    if dest is None:
        kept = _kept_deleted(ctx, header.source_id)
        if kept is not None:
            rv.status, rv.reason = "not-copied", kept
            return rv
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field="run",
                source_value=header.source_id,
                dest_value=None,
                detail=f"destination run {dest_id} is missing or deleted",
            )
        )
        rv.status = "mismatch"
        return rv
    if not dest.complete:
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field="run",
                source_value="complete",
                dest_value="incomplete",
                detail="a sync stopped part-way; run `bridge sync` to finish it",
            )
        )
    run = ctx.reader.read_run(header)
    parent = ctx.state.get_run(ctx.dest_uri, run.parent_source_id) if run.parent_source_id else None
    rendered = ctx.writer.render(run, parent_dest_id=parent.dest_id if parent else None)
    bookkeeping = ctx.writer.bookkeeping_keys
    rv.params_checked = _compare_values(rv, "param", rendered.params, dest.params, bookkeeping)
    rv.tags_checked = _compare_values(rv, "tag", rendered.tags, dest.tags, bookkeeping)

    src = history_stats(ctx.reader.iter_history(run), ctx.writer.capabilities.stores_infinity)
    dest_header = ctx.dest_header(dest_id)
    if dest_header is None:
        rv.status = "error"
        rv.error = f"destination run {dest_id} cannot be read back through {ctx.dest_uri}"
        return rv
    dest_run = ctx.dest_reader.read_run(dest_header)
    compare_history(ctx, rv, run, dest_run, src)
    models = ctx.logged_models
    accepted = accepted_manifest_only(ctx, rv)
    compare_files(
        ctx, rv, expected_files(run, src.media, models is not None, accepted), dest_run.files
    )
    if models is not None:
        compare_models(ctx, models, rv, run)
    if rv.mismatches:
        rv.status = "mismatch"
        if rv.stale:
            rv.notes.append("the source changed since the last sync; run `bridge sync` first")
    return rv
