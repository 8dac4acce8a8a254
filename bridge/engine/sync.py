"""One sync pass: list, then plan and apply in parallel across runs (engine/pipeline.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from bridge.adapters.base import Reader, Writer
from bridge.engine.apply import apply_run
from bridge.engine.context import Planned, SyncContext
from bridge.engine.deletions import check_on_delete, source_deletions
from bridge.engine.intents import record_intents
from bridge.engine.items import ItemPass, sync_items
from bridge.engine.links import link_parents
from bridge.engine.listing import Listing
from bridge.engine.marks import SOURCE_DELETED_TAG
from bridge.engine.model import ModelPlan, OnConflict, OnDelete, Plan, RunPlan
from bridge.engine.pipeline import Pipeline
from bridge.engine.plan import plan_run
from bridge.engine.progress import Bars
from bridge.engine.registry import sync_models
from bridge.engine.shards import ShardSpec
from bridge.engine.text import one_line
from bridge.engine.two_way import EditResult, TwoWayPass, two_way_pass
from bridge.errors import BridgeError, LeaseLost, NothingToImport
from bridge.faults import kill_point
from bridge.schema import RunHeader, Warning_
from bridge.state import StateStore, conflict_key

log = logging.getLogger(__name__)

__all__ = ["OnConflict", "OnDelete", "SOURCE_DELETED_TAG", "Stage", "check_on_delete", "run_sync"]

#: What a pass does: everything (a plain sync); the runs only (a shard of a sharded pass:
#: ``shard`` picks its part); the once-per-pass rest after every shard (engine/shards.py).
Stage = Literal["all", "runs", "final"]


def _failed_plan(header: RunHeader, exc: BaseException) -> Planned:
    """A run that could not be planned: failed (exit 1), whatever the backend error was —
    a network error or a 5xx after retries leaves the run uncopied. Only a reader's
    NothingToImport (e.g. a log the process never flushed) is skipped and reported."""
    nothing = isinstance(exc, NothingToImport)
    plan = RunPlan(
        source_id=header.source_id,
        native_id=header.native_id,
        name=header.name,
        project=header.project.name,
        action="skip",
        reason=str(exc) if nothing else "could not be read or planned",
        outcome="skipped" if nothing else "failed",
        error=None if nothing else one_line(exc),
    )
    if nothing:
        plan.warnings.append(Warning_(source_id=header.source_id, code="skipped", message=str(exc)))
    return Planned(plan=plan, header=header)


def _partly_applicable(p: Planned) -> bool:
    """A run with field conflicts whose destination copy exists: everything but the
    conflicting fields is written (new history, files, other fields)."""
    return p.plan.action == "conflict" and p.compared and p.plan.dest_id is not None


def _record_conflicts(state: StateStore, dest_uri: str, p: Planned, policy: str) -> None:
    """Open conflicts, what a policy settled, and closing those no longer found."""
    for c in p.plan.conflicts:
        state.record_conflict(
            dest_uri, c.source_id, c.field, c.source_value, c.dest_value, c.synced_value
        )
    for c, choice in p.new_resolutions:
        state.resolve_conflict(
            dest_uri,
            c.source_id,
            c.field,
            c.source_value,
            c.dest_value,
            choice,
            f"policy:{policy}",
            note=c.resolution,
        )
    if p.compared:  # compared in full: open conflicts not found again are stale
        current = {conflict_key(c.field, c.source_value, c.dest_value) for c in p.plan.conflicts}
        state.close_stale_conflicts(
            dest_uri, p.plan.source_id, current, fields=("param:", "tag:", "run")
        )


def run_sync(
    reader: Reader,
    writer: Writer,
    state: StateStore,
    *,
    dry_run: bool = False,
    full: bool = False,
    workers: int = 4,
    on_conflict: OnConflict = "skip",
    on_delete: OnDelete = "keep",
    listing_complete: bool = False,
    two_way: bool = False,
    accept_missing_content: bool = False,
    show_progress: bool = False,
    on_run_done: Callable[[RunPlan], None] | None = None,
    source_writer: Writer | None = None,
    shard: ShardSpec | None = None,
    stage: Stage = "all",
) -> Plan:
    """Plan each source run against state and destination and apply it (unless dry run),
    as soon as it is planned: the pass holds O(workers) run bodies (engine/pipeline.py).

    One bad run never stops the others: its error is recorded on its plan line.
    With ``on_conflict="fail"`` nothing is written if any run has a conflict. ``full``
    compares every run's body, history length and files even when its fingerprint matches
    (what a periodic full pass runs, for edits that do not change a source's fingerprint).
    ``source-wins``/``dest-wins`` settle conflicts (see ``plan._settle``) and record how.
    Runs this pair wrote whose source is gone are handled by ``on_delete`` — only when
    ``listing_complete`` (no filters), since a filtered listing cannot tell "deleted"
    from "filtered out". ``two_way`` also carries editable fields back (engine.two_way)
    through ``source_writer``, a writer the caller opened on the source URI (readers never
    write); like ``on_delete``, the caller checks first that both sides can
    (``check_two_way``). What the adapters report on their ``notices`` channel lands on
    the line of the run or model it names, the rest in ``Plan.notices``.

    ``stage="runs"`` with ``shard``: only the runs ``shard`` owns, and none of the
    once-per-pass work (registry, items, deletions); ``stage="final"``: that work only, over
    the whole listing, after every shard's runs (bridge/passes.py). Children written before
    their parent's copy existed are linked at the end of each (engine/links.py).
    """
    ctx = SyncContext(
        reader=reader,
        writer=writer,
        state=state,
        dry_run=dry_run,
        full=full,
        on_conflict=on_conflict,
        download_references=reader.options.download_references,
        accept_missing_content=accept_missing_content,
        two_way=two_way,
        source_writer=source_writer,
    )
    report = Plan(source=reader.display_uri, dest=writer.display_uri, dry_run=dry_run)
    try:
        listed = reader.list_runs()
        if shard is not None and stage != "final":
            listed = (h for h in listed if shard.owns(h.source_id))
        headers = Listing(listed)  # on disk: the pass keeps source ids only
    except BridgeError:
        raise
    except Exception as exc:
        raise BridgeError(f"cannot list runs of {reader.display_uri}: {one_line(exc)}") from exc
    try:
        if stage == "final":
            return _final(ctx, report, headers, on_delete, listing_complete, workers)
        complete = listing_complete and stage == "all"  # a shard decides no deletion
        args = (on_delete, complete, workers, show_progress, on_run_done, stage)
        return _pass(ctx, report, headers, *args)
    finally:
        headers.close()


def _pass(
    ctx: SyncContext,
    report: Plan,
    headers: Listing,
    on_delete: OnDelete,
    listing_complete: bool,
    workers: int,
    show_progress: bool,
    on_run_done: Callable[[RunPlan], None] | None,
    stage: Stage = "all",
) -> Plan:
    """The pass over a listing (see :func:`run_sync`)."""
    runs_only = stage == "runs"
    reader, writer, state = ctx.reader, ctx.writer, ctx.state
    dry_run, on_conflict, two_way = ctx.dry_run, ctx.on_conflict, ctx.two_way
    ctx.listed = set(headers.ids)
    kill_point("plan.listed")
    two_way_edits = TwoWayPass(ctx)
    edits = two_way_edits.plan(list(headers)) if two_way else {}
    apply_now = not dry_run and on_conflict != "fail"
    if apply_now:  # else after the conflict check
        edits.update(two_way_edits.apply())
    if not dry_run:  # listed by this pair: a later complete listing without one = deleted
        state.add_pair_members(reader.display_uri, ctx.dest_uri, headers.ids)
    bars = Bars(len(headers), workers, dry_run, show_progress)

    def plan_one(header: RunHeader) -> Planned:
        try:
            return plan_run(ctx, header)
        except Exception as exc:
            log.debug("planning %s failed", header.source_id, exc_info=True)
            return _failed_plan(header, exc)

    def settle(p: Planned) -> bool:
        """A run just planned: its conflicts recorded, its two-way edits put on its line;
        True when it is to be written, else its claim goes back now."""
        if not dry_run:
            try:
                record_intents(ctx, p)  # what planning decided to record (engine/intents.py)
                _record_conflicts(state, ctx.dest_uri, p, on_conflict)
            except LeaseLost as exc:  # a successor took the run (engine/claims.py)
                p.plan.outcome, p.plan.error = "failed", str(exc)
        if p.plan.conflicts and not _partly_applicable(p) and p.plan.outcome != "failed":
            p.plan.outcome = "skipped"
            p.plan.reason = p.plan.reason or "conflict: left untouched"
        edit = edits.get(p.plan.source_id)
        if edit is not None:  # reported on the run's line; recorded by the two-way pass
            p.plan.edits_to_dest, p.plan.edits_to_source = edit.to_dest, edit.to_source
            p.plan.conflicts.extend(edit.conflicts)
            p.plan.resolved.extend(edit.resolved)
        if _to_apply(p):
            if not dry_run:
                return True
            # A dry run writes nothing: the line is final now (not set aside, holding its
            # header and plan to the end); its notices go to the plan's, as before.
            p.plan.outcome = "skipped"
            bars.run_done()
            return False
        _drain_notices(ctx, p.plan)
        ctx.release_run(p.plan.source_id)
        bars.run_done()
        return False

    def apply_one(p: Planned) -> None:
        with bars.points(p.plan.name or p.plan.source_id) as update:
            try:
                p.read_body(reader, writer)  # dropped while the run waited
                apply_run(ctx, p, progress=update)
            except Exception as exc:
                log.debug("applying %s failed", p.plan.source_id, exc_info=True)
                p.plan.outcome = "failed"
                p.plan.error = one_line(exc)
            finally:
                p.drop_body()  # free the body as soon as the run is written
                _drain_notices(ctx, p.plan)
                ctx.release_run(p.plan.source_id)
                bars.run_done()
                if on_run_done is not None:
                    on_run_done(p.plan)

    # Runs are applied as soon as they are planned (parents first), holding O(workers)
    # bodies; "fail" plans every run first (nothing is written if any has a conflict) and
    # reads the bodies of the runs to write again (engine/pipeline.py).
    pipeline = Pipeline(workers, plan_one, settle, apply_one)
    report.runs, aside = pipeline.run(
        headers, headers.ids, apply_now=apply_now, all_planned=lambda: kill_point("plan.done")
    )
    if listing_complete:
        deleted = source_deletions(ctx, reader.display_uri, ctx.listed, on_delete)
        report.runs.extend(deleted, final=True)  # applied: to disk (engine/lines.py)
    # --on-conflict fail: item copies edited in the destination are conflicts too, found
    # before anything is written (engine/items.py, engine/item_conflicts.py).
    items = ItemPass(ctx, report, workers) if on_conflict == "fail" and not dry_run else None
    if items is not None and not report.conflicts:
        items.check()
    if dry_run or (on_conflict == "fail" and report.conflicts):
        for p in aside:
            p.plan.outcome = "skipped"
            if not dry_run:
                p.plan.reason = "not applied: --on-conflict fail and conflicts were found"
            bars.run_done()
        report.runs.seal_all()  # final now: to disk (engine/lines.py)
        bars.close()
        ctx.release_runs()
        _edit_errors(report, headers.ids, edits)
        if runs_only:
            return report
        _add_models(ctx, report)
        if items is not None:  # --on-conflict fail with conflicts writes no item either
            items.hold("--on-conflict fail and conflicts were found")
        else:
            sync_items(ctx, report, workers)  # engine/items.py
        return report
    if not apply_now:
        edits.update(two_way_edits.apply())
    pipeline.run([], later=aside)
    bars.close()
    _edit_errors(report, headers.ids, edits)
    if two_way and not ctx.dry_run:
        done = {r.source_id for r in report.runs if r.outcome == "done"}
        written = [h for h in headers if h.source_id in done]
        for sid, edit in two_way_pass(ctx, written, fresh=True).items():
            if edit.error:
                report.errors.append(f"{sid}: {edit.error}")
    ctx.release_runs()  # the pass's runs are written: every claim goes back
    link_parents(ctx, report)  # children written before their parent's copy existed
    if runs_only:  # a shard: the rest is the pass's final step
        return report
    _add_models(ctx, report)
    # engine/items.py: traces link to the runs above
    (items or ItemPass(ctx, report, workers)).run()
    return report


def _final(
    ctx: SyncContext,
    report: Plan,
    headers: Listing,
    on_delete: OnDelete,
    listing_complete: bool,
    workers: int,
) -> Plan:
    """A sharded pass's final step, once after every shard: deletions decided on the whole
    source's listing, pending parent links, registered models, workspace items."""
    ctx.listed = set(headers.ids)
    if not ctx.dry_run:
        ctx.state.add_pair_members(ctx.reader.display_uri, ctx.dest_uri, headers.ids)
        if listing_complete:
            deleted = source_deletions(ctx, ctx.reader.display_uri, ctx.listed, on_delete)
            report.runs.extend(deleted)
    link_parents(ctx, report)
    _add_models(ctx, report)
    if ctx.dry_run:
        sync_items(ctx, report, workers)
    else:
        ItemPass(ctx, report, workers).run()
    return report


def _edit_errors(report: Plan, ids: list[str], edits: dict[str, EditResult]) -> None:
    """Runs whose edits failed: the one-way part still ran; the pass exits non-zero."""
    for sid in ids:
        edit = edits.get(sid)
        if edit is not None and edit.error:
            report.errors.append(f"{sid}: {edit.error}")


def _to_apply(p: Planned) -> bool:
    """The plan writes something and nothing (a conflict, a failure) stopped it."""
    writes = p.plan.action in ("create", "resume", "update") or _partly_applicable(p)
    return writes and p.plan.outcome == "pending"


def _add_models(ctx: SyncContext, report: Plan) -> None:
    """Registered models into the report; a registry that cannot be listed is an error of
    this pass (exit 1), not a reason to lose the report of the runs already synced. Then
    the adapters' notices: on the model they name, the rest on the plan."""
    try:
        report.models = _models(ctx)
    except BridgeError as exc:
        report.errors.append(str(exc))
    for m in report.models:
        m.warnings.extend(_notices(ctx, m.source_id))
    report.notices.extend(_notices(ctx, None))


def _notices(ctx: SyncContext, source_id: str | None) -> list[Warning_]:
    """Take what the pass's adapters reported about one source object (or everything)."""
    sides = (ctx.reader, ctx.writer, ctx.source_writer)
    return [w for side in sides if side is not None for w in side.notices.drain(source_id)]


def _drain_notices(ctx: SyncContext, line: RunPlan) -> None:
    """The adapters' notices about a run onto its line: one channel into every report."""
    line.warnings.extend(_notices(ctx, line.source_id))


def _models(ctx: SyncContext) -> list[ModelPlan]:
    """Registered models, after the runs (so versions can link to their runs' copies)."""
    source = ctx.features.registry_source
    if not ctx.reader.options.registry or source is None:
        return []
    try:
        models = list(source.list_registered_models())
    except BridgeError:
        raise
    except Exception as exc:
        raise BridgeError(
            f"cannot list registered models of {ctx.reader.display_uri}: {one_line(exc)}"
        ) from exc
    if not models:
        return []
    if ctx.features.registry is None:
        return [
            ModelPlan(
                source_id=m.source_id,
                name=m.name,
                dest_name="-",
                action="skip",
                outcome="skipped",
                warnings=[
                    Warning_(
                        source_id=m.source_id,
                        code="no-registry",
                        message=(
                            f"{ctx.writer.display_uri} has no model registry: registered model "
                            f"{m.name!r} ({len(m.versions)} versions) not copied"
                        ),
                    )
                ],
            )
            for m in models
        ]
    return sync_models(ctx, iter(models))
