"""``--two-way``: editable metadata (notes, tags, labels) carried both ways.

Metric history and params stay one-way; this pass is planned before the one-way plan,
over runs already synced, and applied after the pass's conflict check (at once unless
``--on-conflict fail``, which writes nothing when any conflict is found). Per field it compares the source, the destination and the value both
sides last agreed on (``StateStore.get_editable``):

* only the source changed → written to the destination;
* only the destination changed → written back to the source;
* both changed (to different values) → a conflict, settled by an earlier
  ``bridge conflicts resolve`` or the pair's policy, else left open;
* never compared before and the sides differ → a conflict too: nobody can tell which
  side was edited.

Only kinds of field both sides hold are compared (``Editable.holds``: a backend may have
notes and a tag list, or notes and free labels; a copy may hold the source's tag list in
its mapping). The one-way planner leaves tags that hold editable fields to this pass.

The source reader only reads (:class:`~bridge.adapters.features.EditableSource`); edits
carried back go through a writer opened on the source URI
(:class:`~bridge.adapters.features.RunEdits`, naming the run with ``run_id_of``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from pydantic import BaseModel, Field

from bridge.adapters.base import Reader, Writer
from bridge.adapters.features import EditableSource, RunEdits
from bridge.engine.context import SyncContext
from bridge.engine.model import Conflict
from bridge.engine.settle import settle_choice
from bridge.errors import BridgeError
from bridge.schema import RunHeader
from bridge.state import Resolution, conflict_key

log = logging.getLogger(__name__)


class EditResult(BaseModel):
    """What the two-way pass decided (and, once applied, did) for one run."""

    to_dest: dict[str, str | None] = Field(default_factory=dict)
    to_source: dict[str, str | None] = Field(default_factory=dict)
    conflicts: list[Conflict] = Field(default_factory=list)
    resolved: list[Conflict] = Field(default_factory=list)
    error: str | None = None


@dataclass
class _Edit:
    """One run's planned edits plus what applying them records."""

    header: RunHeader
    dest_id: str
    result: EditResult
    agreed: dict[str, str | None]  # the values both sides agree on after the edits
    record_agreed: bool  # False: never compared and still open, nothing agreed yet
    new_resolutions: list[tuple[Conflict, str]] = dataclass_field(default_factory=list)


def check_two_way(reader: Reader, writer: Writer, source_writer: Writer | None) -> None:
    """Fail before any work when either side cannot take edits: the source must list its
    editable fields and a writer on the source URI must write them; the destination must
    read and write its own."""
    sides: tuple[tuple[str, Reader | Writer | None, type, str], ...] = (
        ("source", reader, EditableSource, "editable"),
        ("source", source_writer, RunEdits, "set_editable"),
        ("destination", writer, RunEdits, "editable_from_tags, set_editable, is_editable_tag"),
    )
    for side, obj, feature, needs in sides:
        if obj is not None and isinstance(obj, feature):
            continue
        shown = obj or reader
        raise BridgeError(
            f"--two-way needs the {side} {shown.display_uri} to take edits "
            f"({needs}); {shown.scheme}: cannot — drop --two-way"
        )


def _plan_one(
    ctx: SyncContext, header: RunHeader, dest_id: str, project_dest_id: str, fresh: bool = False
) -> _Edit | None:
    """Compare one run's editable fields on both sides and decide; reads only."""
    sid = header.source_id
    f = ctx.features
    if f.editable_source is None or f.edits is None or f.source_edits is None:
        raise BridgeError("--two-way: a side cannot take edits (check_two_way)")
    dest = ctx.dest_index(project_dest_id).get(sid) if not fresh else None
    if dest is None:
        dest = ctx.writer.get_run(dest_id)
    if dest is None:
        return None  # deleted in the destination: the one-way planner reports it
    there = f.edits.editable_from_tags(dest.tags)
    here = f.editable_source.editable(header)
    kinds = here.holds & there.holds
    src, dst = here.fields(kinds), there.fields(kinds)
    agreed = ctx.state.get_editable(ctx.dest_uri, sid)
    result = EditResult()
    new_agreed: dict[str, str | None] = {}
    settled: dict[str, Resolution] | None = None  # read on the first conflict only
    decided: list[tuple[Conflict, str]] = []
    for field in sorted(set(src) | set(dst) | set(agreed or {})):
        if field.startswith("label:") and "labels" not in kinds:
            continue
        s, d = src.get(field), dst.get(field)
        if s == d:
            new_agreed[field] = s
            continue
        b = agreed.get(field) if agreed is not None else None
        if agreed is not None and d == b:
            result.to_dest[field] = s
            new_agreed[field] = s
        elif agreed is not None and s == b:
            result.to_source[field] = d
            new_agreed[field] = d
        else:
            conflict = Conflict(
                source_id=sid,
                field=f"edit:{field}",
                source_value=s,
                dest_value=d,
                synced_value=b,
                reason=(
                    "edited on both sides since the last cycle"
                    if agreed is not None
                    else "the sides differ and were never compared before (--two-way)"
                ),
            )
            if settled is None:
                settled = ctx.state.resolutions(ctx.dest_uri, sid)
            choice = settle_choice(ctx, settled, conflict, decided)
            if choice is None:
                result.conflicts.append(conflict)
                if b is not None or agreed is not None:
                    new_agreed[field] = b
                continue
            side, by = choice
            if side == "source":
                result.to_dest[field] = s
                new_agreed[field] = s
                conflict.resolution = f"{by}: the source's value is written to the destination"
            else:
                result.to_source[field] = d
                new_agreed[field] = d
                conflict.resolution = f"{by}: the destination's value is written to the source"
            result.resolved.append(conflict)
    record = not result.conflicts or agreed is not None
    return _Edit(header, dest_id, result, new_agreed, record, decided)


def _apply_one(ctx: SyncContext, edit: _Edit) -> None:
    """Write one run's edits to both sides, then what both sides now agree on, the
    settlements a policy made and the conflicts still open."""
    f, sid, result = ctx.features, edit.header.source_id, edit.result
    assert f.edits is not None and f.source_edits is not None  # check_two_way
    if result.to_dest:
        f.edits.set_editable(edit.dest_id, result.to_dest)
    if result.to_source:
        f.source_edits.set_editable(f.source_edits.run_id_of(edit.header), result.to_source)
    for c, choice in edit.new_resolutions:
        ctx.state.resolve_conflict(
            ctx.dest_uri,
            c.source_id,
            c.field,
            c.source_value,
            c.dest_value,
            choice,
            f"policy:{ctx.on_conflict}",
        )
    if edit.record_agreed:
        ctx.state.put_editable(ctx.dest_uri, sid, edit.agreed)
    for c in result.conflicts:
        ctx.state.record_conflict(
            ctx.dest_uri, sid, c.field, c.source_value, c.dest_value, c.synced_value
        )
    current = {conflict_key(c.field, c.source_value, c.dest_value) for c in result.conflicts}
    ctx.state.close_stale_conflicts(ctx.dest_uri, sid, current, fields=("edit:",))


class TwoWayPass:
    """The edits of one pass: planned first (:meth:`plan`, reads only), applied after the
    pass's conflict check (:meth:`apply`; never in a dry run)."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self._edits: list[_Edit] = []

    def plan(self, headers: list[RunHeader], fresh: bool = False) -> dict[str, EditResult]:
        """Decide the edits of every run already synced; one bad run never stops the rest.

        Also run (``fresh``) over the runs the one-way pass just wrote: both sides then
        agree, and recording that agreement is what lets the first later edit count as
        one-sided."""
        ctx = self.ctx
        out: dict[str, EditResult] = {}
        for header in headers:
            st = ctx.state.get_run(ctx.dest_uri, header.source_id)
            if st is None or not st.complete:
                continue
            try:
                edit = _plan_one(ctx, header, st.dest_id, st.project_dest_id, fresh)
            except Exception as exc:
                log.debug("two-way pass of %s failed", header.source_id, exc_info=True)
                out[header.source_id] = _failed(exc)
                continue
            if edit is None:
                continue
            self._edits.append(edit)
            if _worth_reporting(edit.result):
                out[header.source_id] = edit.result
        return out

    def apply(self) -> dict[str, EditResult]:
        """Carry out the planned edits; returns the runs whose edits failed (the error on
        their result; the others are still written)."""
        edits, self._edits = self._edits, []
        failed: dict[str, EditResult] = {}
        if self.ctx.dry_run:
            return failed
        for edit in edits:
            try:
                _apply_one(self.ctx, edit)
            except Exception as exc:
                log.debug("two-way edits of %s failed", edit.header.source_id, exc_info=True)
                r = edit.result  # reported as the error alone, as a run that failed to plan
                r.to_dest, r.to_source, r.conflicts, r.resolved = {}, {}, [], []
                r.error = _failed(exc).error
                failed[edit.header.source_id] = r
        return failed


def _failed(exc: Exception) -> EditResult:
    return EditResult(error=f"two-way: {type(exc).__name__}: {exc}"[:500])


def _worth_reporting(result: EditResult) -> bool:
    return bool(
        result.to_dest or result.to_source or result.conflicts or result.resolved or result.error
    )


def two_way_pass(
    ctx: SyncContext, headers: list[RunHeader], fresh: bool = False
) -> dict[str, EditResult]:
    """Plan and apply at once (runs just written by this pass, ``fresh``)."""
    edits = TwoWayPass(ctx)
    out = edits.plan(headers, fresh)
    out.update(edits.apply())
    return {sid: r for sid, r in out.items() if _worth_reporting(r)}
