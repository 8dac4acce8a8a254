"""Runs deleted at the source: ``--on-delete keep|tag|delete`` for their copies."""

from __future__ import annotations

from bridge.adapters.base import Writer
from bridge.adapters.features import RunDeletion
from bridge.engine.context import SyncContext
from bridge.engine.marks import SOURCE_DELETED_TAG
from bridge.engine.model import OnDelete, RunPlan
from bridge.engine.text import one_line
from bridge.errors import BridgeError
from bridge.schema import Warning_


def check_on_delete(writer: Writer, on_delete: OnDelete) -> None:
    """Fail before any work if the destination cannot do what ``on_delete`` asks."""
    need = {"tag": "set_tags", "delete": "delete_run"}.get(on_delete)
    if need and not isinstance(writer, RunDeletion):
        raise BridgeError(
            f"--on-delete {on_delete} needs a destination that can {on_delete} a run "
            f"({need}); {writer.scheme}: cannot — use --on-delete keep"
        )


def source_deletions(
    ctx: SyncContext, source_uri: str, listed: set[str], on_delete: OnDelete
) -> list[RunPlan]:
    """Runs this pair listed before and a complete listing no longer shows."""
    state, writer, deletion = ctx.state, ctx.writer, ctx.features.deletion
    lines: list[RunPlan] = []
    for sid, deleted_at in sorted(state.pair_members(source_uri, ctx.dest_uri).items()):
        if sid in listed or deleted_at is not None:
            continue
        st = state.get_run(ctx.dest_uri, sid)
        line = RunPlan(
            source_id=sid,
            project="(deleted at source)",
            action="source-deleted",
            dest_id=st.dest_id if st else None,
            outcome="skipped",
        )
        if st is None:
            if not ctx.dry_run:
                state.mark_deleted(source_uri, ctx.dest_uri, sid)
            continue
        still = _still_there(ctx, sid) if on_delete != "keep" else None
        if still is not None:  # not listed, yet the source does not say it was deleted
            line.reason = still
            line.warnings.append(Warning_(source_id=sid, code="source-unlisted", message=still))
            lines.append(line)  # not marked deleted: the next pass asks again
            continue
        try:
            if on_delete == "keep":
                line.reason = "the source run no longer exists; destination run kept (keep)"
            elif ctx.dry_run:
                line.outcome = "pending"
                line.reason = f"the source run no longer exists; would {on_delete} the copy"
            elif writer.get_run(st.dest_id) is None:
                line.reason = "the source run no longer exists; its copy is gone too"
            elif deletion is None:  # check_on_delete refuses this before any work
                raise BridgeError(f"{writer.scheme}: cannot {on_delete} a run")
            elif on_delete == "tag":
                deletion.set_tags(st.dest_id, {SOURCE_DELETED_TAG: "true"})
                line.outcome = "done"
                line.reason = f"the source run no longer exists; tagged {SOURCE_DELETED_TAG}=true"
            else:
                deletion.delete_run(st.dest_id)
                state.forget_run(ctx.dest_uri, sid)
                line.outcome = "done"
                line.reason = "the source run no longer exists; destination run deleted"
        except Exception as exc:
            line.outcome, line.error = "failed", one_line(exc)
        line.warnings.append(
            Warning_(source_id=sid, code="source-deleted", message=line.reason or "")
        )
        if not ctx.dry_run and line.outcome != "failed":
            state.mark_deleted(source_uri, ctx.dest_uri, sid)
        lines.append(line)
    return lines


def _still_there(ctx: SyncContext, source_id: str) -> str | None:
    """Why a run missing from a complete listing must not count as deleted yet (the source
    still has it, or would not say), or None when it is gone (or the reader cannot be
    asked: the listing is trusted)."""
    presence = ctx.features.presence
    if presence is None:
        return None
    try:
        answer = presence.run_presence(source_id)
    except Exception as exc:  # noqa: BLE001 - asking failed: no deletion on a guess
        return f"not listed, and the source could not be asked ({one_line(exc)}); copy kept"
    if answer == "present":
        return (
            "not listed, but the source still has this run (hidden from these credentials? "
            "filtered?); copy kept"
        )
    if answer == "unknown":
        return "not listed, and the source would not say whether it was deleted; copy kept"
    return None
