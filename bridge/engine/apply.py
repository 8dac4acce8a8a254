"""Carry out planned actions, crash-safely.

Order of writes for one run, so a crash at any point leaves something a re-run finishes:
1. create the destination run with its identity tag (the tag is how it is found again),
2. record it in state as incomplete,
3. params/tags, then history in batches, recording a per-stream watermark after each flush,
4. files (skipped when state says the same digest is already there),
5. final status and end time, then the completion marker, then state "complete".
"""

from __future__ import annotations

from bridge.engine.apply_files import RECORDS_DIR, write_files
from bridge.engine.apply_history import EXTRAS_PATH, ProgressFn, write_history
from bridge.engine.context import Planned, SyncContext
from bridge.engine.links import defer_parent
from bridge.engine.marks import OPEN_CONFLICTS
from bridge.engine.model import RunPlan
from bridge.engine.models import place_model
from bridge.engine.plan import resolve_parent
from bridge.errors import ContentError
from bridge.faults import kill_point
from bridge.schema import Run, Warning_
from bridge.state import RunState

__all__ = ["EXTRAS_PATH", "RECORDS_DIR", "apply_run", "place_model"]


def apply_run(ctx: SyncContext, planned: Planned, progress: ProgressFn | None = None) -> None:
    """Write one planned run; raises on failure (the caller records it)."""
    plan, run, rendered = planned.plan, planned.run, planned.rendered
    assert run is not None and rendered is not None
    writer, state, sid = ctx.writer, ctx.state, plan.source_id
    dest_uri = ctx.dest_uri
    baseline = planned.baseline

    if resolve_parent(ctx, planned):
        # The parent's copy was made after this run was planned: the rendering's input
        # changed, so it is rendered again for the link (one more tag to write).
        again = ctx.writer.render(run, parent_dest_id=planned.parent_dest_id)
        for key, value in again.tags.items():
            if rendered.tags.get(key) != value:
                plan.tags_to_write[key] = value
    if plan.action == "create":
        project_dest_id = ctx.project_id(planned.header.project, create=True)
        assert project_dest_id is not None
        ctx.check_lease(sid)  # never a second copy of a run a successor took (claims.py)
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

    # No parent copy yet: linked once it exists (engine/links.py); recorded after the run's
    # state row, so a link pass in another process never finds it without its child.
    defer_parent(ctx, planned)
    writer.write_metadata(dest_id, run, plan.params_to_write, plan.tags_to_write)
    kill_point("apply.metadata.after_write")
    baseline.written_params.update(plan.params_to_write)
    baseline.written_tags.update(plan.tags_to_write)
    state.put_run(dest_uri, sid, baseline)
    kill_point("apply.metadata.after_state")

    media = write_history(ctx, planned, dest_id, progress)
    if planned.results_late:
        _write_late_results(ctx, planned, dest_id, baseline)
    problems = write_files(ctx, planned, dest_id, run, media) + _refused(plan, run)
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
    ctx.check_lease(sid)
    writer.finish_run(dest_id, run, fingerprint)
    kill_point("apply.finish.after_complete")
    baseline.complete = True
    baseline.fingerprint = fingerprint
    state.put_run(dest_uri, sid, baseline)
    plan.outcome = "done"


def _write_late_results(
    ctx: SyncContext, planned: Planned, dest_id: str, baseline: RunState
) -> None:
    """What the run's results render to, once the history pass brought them (planned
    without: engine/plan.py): the tags (and any new params) the first rendering lacked,
    its warnings, and the writer's side files again. Before the files and the completion
    marker, so a crash leaves an incomplete run whose re-sync compares and writes them."""
    plan, run = planned.plan, planned.run
    assert run is not None
    if run.results_pending:  # the history pass ended early: read the results the slow way
        run.results = ctx.reader.read_run(planned.header).results
        run.results_pending = False
    # Against what was written (not the first rendering: a body read again for the apply,
    # engine/pipeline.py, is rendered again with its results, but was planned without).
    written_params, written_tags = baseline.written_params, baseline.written_tags
    again = ctx.writer.render(run, parent_dest_id=planned.parent_dest_id)
    changed = sorted(k for k, v in again.params.items() if written_params.get(k, v) != v)
    if changed:
        raise ContentError(f"the run's results changed param(s) already written: {changed}")
    params = {k: v for k, v in again.params.items() if k not in written_params}
    tags = {k: v for k, v in again.tags.items() if written_tags.get(k) != v}
    plan.warnings.extend(w for w in again.warnings if w not in plan.warnings)
    plan.params_to_write.update(params)
    plan.tags_to_write.update(tags)
    ctx.writer.write_metadata(dest_id, run, params, tags)
    kill_point("apply.results.after_write")
    baseline.written_params.update(params)
    baseline.written_tags.update(tags)
    ctx.state.put_run(ctx.dest_uri, plan.source_id, baseline)
    planned.rendered, planned.results_late = again, False


def _refused(plan: RunPlan, run: Run) -> list[str]:
    """What the reader refused to read: reported, and a loss that fails the run."""
    for line in run.refused:
        plan.warnings.append(Warning_(source_id=plan.source_id, code="refused", message=line))
    return list(run.refused)
