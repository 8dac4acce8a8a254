"""Conflicts while planning: metadata diffs, earlier resolutions and the pair's policy.

Planning only decides here: a settlement a policy makes in this pass is put on the
planned run (``new_resolutions``, ``forget``) and recorded when the run is settled.
"""

from __future__ import annotations

from bridge.adapters.base import DestRun
from bridge.engine.context import Planned, SyncContext
from bridge.engine.marks import PARAM_OVERRIDE_PREFIX
from bridge.engine.model import Conflict
from bridge.schema import RunHeader
from bridge.state import Resolution, RunState


def deleted_in_dest(
    ctx: SyncContext, planned: Planned, header: RunHeader, st: RunState
) -> Planned | None:
    """The destination run was deleted. Open conflict (skip/fail); dest-wins or an earlier
    ``resolve --take dest`` keeps it deleted; source-wins writes it again (returns None,
    with the intent to forget the old copy's rows set on ``planned``)."""
    base = planned.plan
    conflict = Conflict(
        source_id=base.source_id,
        field="run",
        reason=f"destination run {st.dest_id} was deleted after the bridge wrote it",
    )
    base.dest_id = st.dest_id
    earlier = planned.settled(ctx.state, ctx.dest_uri).get("run")
    if earlier is not None and earlier.choice == "dest" and honoured(ctx, earlier):
        base.action, base.outcome = "skip", "skipped"
        base.reason = f"deleted in the destination; kept deleted ({earlier.resolved_by})"
        return planned
    if ctx.on_conflict == "dest-wins":
        conflict.resolution = "dest-wins: the deletion is kept; the run is not written again"
        base.resolved.append(conflict)
        planned.new_resolutions.append((conflict, "dest"))
        base.action, base.outcome, base.reason = "skip", "skipped", conflict.resolution
        return planned
    if ctx.on_conflict == "source-wins":
        conflict.resolution = "source-wins: the run is written again as a new destination run"
        base.resolved.append(conflict)
        base.dest_id = None
        planned.forget = True
        return None
    base.action = "conflict"
    base.conflicts.append(conflict)
    return planned


def diff_metadata(ctx: SyncContext, planned: Planned, dest: DestRun, st: RunState) -> None:
    """New params are written; a changed param is a conflict (immutable); a changed tag is
    updated unless the destination edited it since the bridge wrote it (a conflict).
    Conflicts go through :func:`_settle` (earlier resolutions, then the policy)."""
    plan, rendered = planned.plan, planned.rendered
    assert rendered is not None
    immutable = ctx.writer.capabilities.immutable_params
    for key, value in rendered.params.items():
        have = dest.params.get(key)
        if have is None:
            plan.params_to_write[key] = value
            continue
        if have == value:
            continue
        synced = st.written_params.get(key)
        if not immutable and (synced is None or have == synced):
            if not _kept_dest(ctx, planned, f"param:{key}", value, have):
                plan.params_to_write[key] = value
            continue
        if synced is not None and have != synced:
            reason = "changed in the destination since the last sync"
        else:
            reason = "changed at the source; the destination's params are immutable"
        conflict = Conflict(
            source_id=plan.source_id,
            field=f"param:{key}",
            source_value=value,
            dest_value=have,
            synced_value=synced,
            reason=reason,
        )
        _settle(ctx, planned, dest, st, conflict)
    edits = ctx.features.edits if ctx.two_way else None
    for key, value in rendered.tags.items():
        have = dest.tags.get(key)
        if have == value or (edits is not None and edits.is_editable_tag(key)):
            continue
        synced = st.written_tags.get(key)
        if have is not None and synced is not None and have != synced:
            conflict = Conflict(
                source_id=plan.source_id,
                field=f"tag:{key}",
                source_value=value,
                dest_value=have,
                synced_value=synced,
                reason="changed in the destination since the last sync",
            )
            _settle(ctx, planned, dest, st, conflict)
        elif not _kept_dest(ctx, planned, f"tag:{key}", value, have):
            plan.tags_to_write[key] = value


def _kept_dest(
    ctx: SyncContext, planned: Planned, field: str, value: str, have: str | None
) -> bool:
    """True while an earlier "take dest" still covers this field: the source has not moved
    past the value that was turned down and the destination still holds the kept value."""
    if have is None:
        return False
    earlier = planned.settled(ctx.state, ctx.dest_uri).get(field)
    return (
        earlier is not None
        and earlier.choice == "dest"
        and earlier.source_value == value
        and earlier.dest_value == have
    )


def honoured(ctx: SyncContext, earlier: Resolution) -> bool:
    """A person's settlement always holds; a policy's holds unless another policy now runs
    (a pair switched from dest-wins to source-wins means it)."""
    if not earlier.resolved_by.startswith("policy:"):
        return True
    return ctx.on_conflict not in ("source-wins", "dest-wins") or (
        earlier.resolved_by == f"policy:{ctx.on_conflict}"
    )


def settle_choice(
    ctx: SyncContext,
    settled: dict[str, Resolution],
    conflict: Conflict,
    decided: list[tuple[Conflict, str]],
) -> tuple[str, str] | None:
    """(side, by whom) for a conflict outside run params/tags (aliases, two-way edits): an
    earlier resolution of exactly these values, else the pair's policy, else None (the
    conflict stays open). Pure: a policy's settlement is put in ``decided`` for the caller
    to record when it applies it (real passes only), never written here."""
    earlier = settled.get(conflict.field)
    if (
        earlier is not None
        and earlier.source_value == conflict.source_value
        and earlier.dest_value == conflict.dest_value
        and honoured(ctx, earlier)
    ):
        return earlier.choice, f"resolution #{earlier.id} by {earlier.resolved_by}"
    if ctx.on_conflict not in ("source-wins", "dest-wins"):
        return None
    choice = ctx.on_conflict.split("-")[0]
    decided.append((conflict, choice))
    return choice, ctx.on_conflict


def _settle(
    ctx: SyncContext, planned: Planned, dest: DestRun, st: RunState, conflict: Conflict
) -> None:
    """Apply an earlier resolution of exactly this conflict, else the policy, else leave it
    open. ``source``: write the source value (a tag; an immutable param's new value goes to
    tag ``bridge.param_override.<key>``). ``dest``: keep the destination's value and make
    it the synced baseline, so the same conflict is not reported again."""
    plan = planned.plan
    earlier = planned.settled(ctx.state, ctx.dest_uri).get(conflict.field)
    choice: str | None = None
    by = ""
    if (
        earlier is not None
        and earlier.source_value == conflict.source_value
        and earlier.dest_value == conflict.dest_value
        and honoured(ctx, earlier)
    ):
        choice, by = earlier.choice, f"resolution #{earlier.id} by {earlier.resolved_by}"
    elif ctx.on_conflict in ("source-wins", "dest-wins"):
        choice, by = ctx.on_conflict.split("-")[0], ctx.on_conflict
        planned.new_resolutions.append((conflict, choice))
    if choice is None:
        plan.conflicts.append(conflict)
        return
    kind, _, key = conflict.field.partition(":")
    value, have = conflict.source_value or "", conflict.dest_value
    wrote = False
    if choice == "dest":
        if kind == "param":
            st.written_params[key] = have or ""
        else:
            st.written_tags[key] = have or ""
        conflict.resolution = f"{by}: destination value kept as the new baseline"
    elif kind == "tag":
        plan.tags_to_write[key] = value
        wrote = True
        conflict.resolution = f"{by}: source value written to the tag"
    elif not ctx.writer.capabilities.immutable_params:
        plan.params_to_write[key] = value
        wrote = True
        conflict.resolution = f"{by}: source value written to the param"
    else:
        override = PARAM_OVERRIDE_PREFIX + key
        if dest.tags.get(override) != value:
            plan.tags_to_write[override] = value
            wrote = True
        conflict.resolution = (
            f"{by}: the param is immutable in the destination and keeps {have!r}; "
            f"the source value is in tag {override}"
        )
    if planned.new_resolutions and planned.new_resolutions[-1][0] is conflict or wrote:
        plan.resolved.append(conflict)
