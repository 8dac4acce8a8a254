"""Compare source, state and destination; decide one action per run.

The planner touches backends only through the Reader/Writer interfaces. The cheap path
(state says complete with the same fingerprint) reads neither the run body nor the
destination, which is what makes a no-op re-sync cost O(runs) state look-ups.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bridge.adapters.base import DestRun, Reader, Rendered, Writer
from bridge.engine.model import Conflict, RunPlan
from bridge.schema import FileRef, MetricChunk, Project, Run, RunHeader
from bridge.state import RunState, StateStore


@dataclass
class SyncContext:
    """Everything one sync pass shares across worker threads."""

    reader: Reader
    writer: Writer
    state: StateStore
    dry_run: bool = False
    full: bool = False  # compare every run in full, ignoring matching fingerprints
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _projects: dict[str, str | None] = field(default_factory=dict)
    _dest_index: dict[str, dict[str, DestRun]] = field(default_factory=dict)

    @property
    def dest_uri(self) -> str:
        return self.writer.display_uri

    def project_id(self, project: Project, create: bool) -> str | None:
        """Destination id of a project, found once per pass (created when ``create``)."""
        with self._lock:
            known = self._projects.get(project.source_id)
            if known is None and (create or project.source_id not in self._projects):
                known = (
                    self.writer.ensure_project(project)
                    if create
                    else self.writer.find_project(project)
                )
                self._projects[project.source_id] = known
            return known

    def dest_index(self, project_dest_id: str) -> dict[str, DestRun]:
        """Destination runs by source identity: how a lost state store is rebuilt."""
        with self._lock:
            if project_dest_id not in self._dest_index:
                self._dest_index[project_dest_id] = self.writer.find_runs_by_source(project_dest_id)
            return self._dest_index[project_dest_id]


@dataclass
class Planned:
    """A plan line plus what the applier needs to carry it out."""

    plan: RunPlan
    header: RunHeader
    run: Run | None = None
    rendered: Rendered | None = None
    watermarks: dict[str, int] = field(default_factory=dict)
    files_done: dict[str, str] = field(default_factory=dict)
    baseline: RunState | None = None


def plan_run(ctx: SyncContext, header: RunHeader) -> Planned:
    """Decide what to do with one source run."""
    sid = header.source_id
    base = RunPlan(source_id=sid, name=header.name, project=header.project.name, action="create")
    st = ctx.state.get_run(ctx.dest_uri, sid)
    if not ctx.full and st is not None and st.complete and st.fingerprint == header.fingerprint:
        base.action, base.outcome, base.dest_id = "unchanged", "unchanged", st.dest_id
        return Planned(plan=base, header=header)

    dest: DestRun | None = None
    if st is not None:
        dest = ctx.writer.get_run(st.dest_id)
        if dest is None:
            base.action = "conflict"
            base.dest_id = st.dest_id
            base.conflicts.append(
                Conflict(
                    source_id=sid,
                    field="run",
                    dest_value=None,
                    reason=f"destination run {st.dest_id} was deleted after the bridge wrote it",
                )
            )
            return Planned(plan=base, header=header)
    else:
        project_dest_id = ctx.project_id(header.project, create=False)
        if project_dest_id is not None:
            dest = ctx.dest_index(project_dest_id).get(sid)
        if dest is not None:
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
                if not ctx.dry_run:
                    ctx.state.put_run(ctx.dest_uri, sid, st)
                    # the watermarks too, or the next append would re-send every point
                    counts = ctx.writer.metric_counts(dest.dest_id)
                    ctx.state.set_watermarks(ctx.dest_uri, sid, counts)
                base.action, base.outcome, base.dest_id = "unchanged", "unchanged", dest.dest_id
                base.reason = "re-linked from the destination's identity tag"
                return Planned(plan=base, header=header)

    run = ctx.reader.read_run(header)
    resolve_parent(ctx, run)
    rendered = ctx.writer.render(run)
    base.warnings.extend(rendered.warnings)
    base.warnings.extend(_reader_warnings(run))
    planned = Planned(plan=base, header=header, run=run, rendered=rendered, baseline=st)

    if dest is None:
        base.params_to_write = dict(rendered.params)
        base.tags_to_write = dict(rendered.tags)
    else:
        assert st is not None
        base.dest_id = dest.dest_id
        base.action = "update" if dest.complete else "resume"
        if not dest.complete:
            base.reason = "a previous sync stopped part-way; finishing it"
        _diff_metadata(ctx, planned, dest, st)
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
            base.action = "conflict"
    if (ctx.dry_run or ctx.full) and base.action != "conflict":
        base.points_new = count_new_points(ctx.reader, run, planned.watermarks)
        base.files_new = sum(
            1 for f in run.files if planned.files_done.get(f.path) != file_digest(f)
        )
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
            ctx.state.put_run(ctx.dest_uri, sid, st)
    return planned


def file_digest(ref: FileRef) -> str:
    """What the state remembers of an uploaded file, to skip it next time."""
    return f"sha256:{ref.sha256}" if ref.sha256 else f"size:{ref.size}"


def resolve_parent(ctx: SyncContext, run: Run) -> bool:
    """Fill ``run.parent_dest_id`` from state once the parent run has been written."""
    if run.parent_source_id is None or run.parent_dest_id is not None:
        return False
    parent = ctx.state.get_run(ctx.dest_uri, run.parent_source_id)
    if parent is None:
        return False
    run.parent_dest_id = parent.dest_id
    return True


def _reader_warnings(run: Run) -> list:
    from bridge.schema import Warning_

    out = [Warning_(source_id=run.header.source_id, code="source", message=w) for w in run.warnings]
    if run.incomplete_reason:
        out.append(
            Warning_(
                source_id=run.header.source_id,
                code="incomplete",
                message=f"source is damaged; imported up to the damage: {run.incomplete_reason}",
            )
        )
    return out


def _diff_metadata(ctx: SyncContext, planned: Planned, dest: DestRun, st: RunState) -> None:
    """New params are written; a changed param is a conflict (immutable); a changed tag is
    updated unless the destination edited it since the bridge wrote it (a conflict)."""
    plan, rendered = planned.plan, planned.rendered
    assert rendered is not None
    immutable = ctx.writer.capabilities.immutable_params
    for key, value in rendered.params.items():
        have = dest.params.get(key)
        if have is None:
            plan.params_to_write[key] = value
        elif have != value:
            synced = st.written_params.get(key)
            reason = (
                "changed in the destination since the last sync"
                if synced is not None and have != synced
                else "changed at the source; the destination's params are immutable"
            )
            if not immutable and (synced is None or have == synced):
                plan.params_to_write[key] = value
                continue
            plan.conflicts.append(
                Conflict(
                    source_id=plan.source_id,
                    field=f"param:{key}",
                    source_value=value,
                    dest_value=have,
                    synced_value=synced,
                    reason=reason,
                )
            )
    for key, value in rendered.tags.items():
        have = dest.tags.get(key)
        if have == value:
            continue
        synced = st.written_tags.get(key)
        if have is not None and synced is not None and have != synced:
            plan.conflicts.append(
                Conflict(
                    source_id=plan.source_id,
                    field=f"tag:{key}",
                    source_value=value,
                    dest_value=have,
                    synced_value=synced,
                    reason="changed in the destination since the last sync",
                )
            )
        else:
            plan.tags_to_write[key] = value


def slice_new(chunk: MetricChunk, seen_before: int, already: int) -> MetricChunk | None:
    """The part of ``chunk`` past the watermark (``already`` points of its key written)."""
    start = max(0, already - seen_before)
    if start >= len(chunk):
        return None
    if start == 0:
        return chunk
    return MetricChunk(
        key=chunk.key,
        steps=chunk.steps[start:],
        timestamps=chunk.timestamps[start:],
        values=chunk.values[start:],
    )


def count_new_points(reader: Reader, run: Run, watermarks: dict[str, int]) -> int:
    """Stream the history once, counting points past the watermarks (dry runs only)."""
    seen: dict[str, int] = {}
    new = 0
    for item in reader.iter_history(run):
        if isinstance(item, MetricChunk):
            before = seen.get(item.key, 0)
            seen[item.key] = before + len(item)
            new += max(0, before + len(item) - max(before, watermarks.get(item.key, 0)))
    return new
