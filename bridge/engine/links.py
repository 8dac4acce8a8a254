"""Deferred parent links: a nested run written before its parent's copy existed.

A child whose parent lives in another shard of the pass (or failed, or was planned before
its parent's copy was made) is written without the link to its parent's copy and recorded
as pending (``bridge_parent_links``). :func:`link_parents` runs at the end of every pass,
shard and final step: each pending child whose parent's copy now exists is linked through
the writer's ``ParentLinks`` feature, the tags it wrote are added to the run's written tags
in state (so the next pass sees them as the bridge's own, not as a conflict), and the
pending row goes. The fingerprint path never has to re-read the child for it.
"""

from __future__ import annotations

import logging

from bridge.adapters.features import ParentLinks
from bridge.engine.context import Planned, SyncContext
from bridge.engine.model import Plan
from bridge.engine.text import one_line
from bridge.schema import Warning_

log = logging.getLogger(__name__)


def defer_parent(ctx: SyncContext, planned: Planned) -> None:
    """Record a pending link for a run being written without its parent's copy (only for
    writers that link by the parent's destination id, ``ParentLinks``)."""
    run = planned.run
    if ctx.dry_run or run is None or planned.parent_dest_id is not None:
        return
    parent = run.parent_source_id
    if parent is None or parent == planned.plan.source_id:
        return
    if isinstance(ctx.writer, ParentLinks):
        ctx.state.add_parent_link(ctx.dest_uri, planned.plan.source_id, parent)


def link_parents(ctx: SyncContext, report: Plan) -> int:
    """Link every pending child whose parent's copy exists now; returns how many."""
    if ctx.dry_run or not isinstance(ctx.writer, ParentLinks):
        return 0
    linked = 0
    for child_id, parent_id in ctx.state.parent_links(ctx.dest_uri):
        child = ctx.state.get_run(ctx.dest_uri, child_id)
        parent = ctx.state.get_run(ctx.dest_uri, parent_id)
        if child is None:  # the child's copy was forgotten: nothing to link
            ctx.state.drop_parent_link(ctx.dest_uri, child_id)
            continue
        if parent is None or not child.complete:
            # not copied yet (a later pass links it), or the child is being written (its
            # writer links it at the end of its pass; no two writers of its state row)
            continue
        try:
            tags = ctx.writer.link_parent(child.dest_id, parent.dest_id)
        except Exception as exc:
            log.debug("linking %s to %s failed", child_id, parent_id, exc_info=True)
            report.notices.append(
                Warning_(
                    source_id=child_id,
                    code="parent-link",
                    message=f"not linked to its parent's copy yet: {one_line(exc)}",
                )
            )
            continue
        child.written_tags.update(tags)
        ctx.state.put_run(ctx.dest_uri, child_id, child)
        ctx.state.drop_parent_link(ctx.dest_uri, child_id)
        linked += 1
    return linked
