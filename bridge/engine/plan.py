"""Compare source, state and destination; decide one action per run.

The planner touches backends only through the Reader/Writer interfaces and writes
nothing: what it decides to record travels on the planned run as intents
(engine/intents.py). The cheap path (state says complete with the same fingerprint)
reads neither the run body nor the destination, which is what makes a no-op re-sync cost
O(runs) state look-ups. Each run is rendered once, here; the applier writes that
rendering.
"""

from __future__ import annotations

from bridge.adapters.base import DestRun
from bridge.engine.claims import holder_name
from bridge.engine.compare import count_changes, file_digest
from bridge.engine.context import Planned, Relink, SyncContext
from bridge.engine.marks import MANIFEST_ONLY, OPEN_CONFLICTS, PARAM_OVERRIDE_PREFIX
from bridge.engine.model import RunPlan
from bridge.engine.settle import deleted_in_dest, diff_metadata, settle_choice
from bridge.faults import kill_point
from bridge.schema import Run, RunHeader, Warning_
from bridge.state import RunState

__all__ = [
    "MANIFEST_ONLY",
    "OPEN_CONFLICTS",
    "PARAM_OVERRIDE_PREFIX",
    "Planned",
    "SyncContext",
    "file_digest",
    "plan_run",
    "resolve_parent",
    "settle_choice",
]


def plan_run(ctx: SyncContext, header: RunHeader) -> Planned:
    """Decide what to do with one source run."""
    sid = header.source_id
    base = RunPlan(
        source_id=sid,
        native_id=header.native_id,
        name=header.name,
        project=header.project.name,
        action="create",
    )
    planned = Planned(plan=base, header=header)
    st = ctx.state.get_run(ctx.dest_uri, sid)
    if not _up_to_date(ctx, st, header):
        busy = ctx.claim_run(sid)  # one process per run and destination (engine/claims.py)
        if busy is not None:
            return _claimed_elsewhere(planned, busy)
        st = ctx.state.get_run(ctx.dest_uri, sid)  # another process may just have copied it
    if _up_to_date(ctx, st, header):
        assert st is not None
        base.action, base.outcome, base.dest_id = "unchanged", "unchanged", st.dest_id
        return planned

    dest: DestRun | None = None
    if st is not None:
        dest = ctx.writer.get_run(st.dest_id)
        if dest is None:
            gone = deleted_in_dest(ctx, planned, header, st)
            if gone is not None:
                return gone
            st = None  # the source wins: the run is written again from scratch
    if st is None:
        project_dest_id = ctx.project_id(header.project, create=False)
        if project_dest_id is not None:
            dest = ctx.dest_index(project_dest_id).get(sid)
        if dest is not None:
            kill_point("plan.adopt")
            # State was lost (or another machine wrote it): adopt the destination run,
            # taking its current content as the synced baseline.
            st = RunState(
                dest_id=dest.dest_id,
                project_dest_id=dest.project_dest_id,
                fingerprint=dest.fingerprint,
                complete=dest.complete,
                written_params=dict(dest.params),
                written_tags=dict(dest.tags),
            )
            if not ctx.full and dest.complete and dest.fingerprint == header.fingerprint:
                if not ctx.dry_run:  # recorded when settled (engine/intents.py)
                    planned.relink = Relink(st, ctx.writer.metric_counts(dest.dest_id))
                base.action, base.outcome, base.dest_id = "unchanged", "unchanged", dest.dest_id
                base.reason = "re-linked from the destination's identity tag"
                return planned

    run = None
    if dest is None and not (ctx.dry_run or ctx.full) and ctx.writer.capabilities.late_results:
        # A new copy compares nothing: the results may come with the history pass.
        run = ctx.reader.read_run_deferring_results(header)
        planned.results_late = run is not None
    if run is None:
        run = ctx.reader.read_run(header)
    planned.run = run
    resolve_parent(ctx, planned)
    rendered = ctx.writer.render(run, parent_dest_id=planned.parent_dest_id)
    base.warnings.extend(rendered.warnings)
    base.warnings.extend(_reader_warnings(run))
    planned.run, planned.rendered, planned.baseline = run, rendered, st

    if dest is None:
        base.params_to_write = dict(rendered.params)
        base.tags_to_write = dict(rendered.tags)
    else:
        assert st is not None
        base.dest_id = dest.dest_id
        base.action = "update" if dest.complete else "resume"
        if not dest.complete:
            base.reason = "a previous sync stopped part-way; finishing it"
        diff_metadata(ctx, planned, dest, st)
        trust_state = ctx.state.get_run(ctx.dest_uri, sid) is not None and (
            dest.complete or ctx.writer.capabilities.durable_flush
        )
        planned.watermarks = (
            ctx.state.get_watermarks(ctx.dest_uri, sid)
            if trust_state
            else ctx.writer.metric_counts(dest.dest_id)
        )
        planned.files_done = ctx.state.get_files(ctx.dest_uri, sid)
        if base.conflicts:
            # A conflict concerns its field only: the rest of the run is still written.
            base.action = "conflict"
            base.reason = "conflicting fields left untouched; the rest of the run is synced"
    if ctx.dry_run or ctx.full:
        count_changes(ctx, planned)
    if (
        ctx.full
        and base.action == "update"
        and not (base.params_to_write or base.tags_to_write or base.points_new or base.files_new)
    ):
        # A full comparison found nothing to write: remember the new fingerprint only.
        assert st is not None
        base.action, base.outcome = "unchanged", "unchanged"
        if not ctx.dry_run:
            st.fingerprint, st.complete = header.fingerprint, True
            planned.refingerprint = st
    kill_point("plan.run")
    return planned


def _up_to_date(ctx: SyncContext, st: RunState | None, header: RunHeader) -> bool:
    """State says the run was copied complete from this very source version."""
    return not ctx.full and st is not None and st.complete and st.fingerprint == header.fingerprint


def _claimed_elsewhere(planned: Planned, holder: str) -> Planned:
    """Another live process is copying this run into this destination: skipped this pass,
    not lost (the holder copies it; the next sync compares again)."""
    planned.plan.action, planned.plan.outcome = "skip", "skipped"
    planned.plan.reason = f"being copied by {holder_name(holder)}"
    return planned


def resolve_parent(ctx: SyncContext, planned: Planned) -> bool:
    """Fill ``planned.parent_dest_id`` from state once the parent run has been written:
    the writer gets it beside the run (``Writer.render``), the record stays the source's."""
    run = planned.run
    if run is None or run.parent_source_id is None or planned.parent_dest_id is not None:
        return False
    parent = ctx.state.get_run(ctx.dest_uri, run.parent_source_id)
    if parent is None:
        return False
    planned.parent_dest_id = parent.dest_id
    return True


def _reader_warnings(run: Run) -> list[Warning_]:
    sid = run.header.source_id
    out = [Warning_(source_id=sid, code="source", message=w) for w in run.warnings]
    if run.incomplete_reason:
        out.append(
            Warning_(
                source_id=sid,
                code="incomplete",
                message=f"source is damaged; imported up to the damage: {run.incomplete_reason}",
            )
        )
    return out
