"""Compare source, state and destination; decide one action per run.

The planner touches backends only through the Reader/Writer interfaces. The cheap path
(state says complete with the same fingerprint) reads neither the run body nor the
destination, which is what makes a no-op re-sync cost O(runs) state look-ups.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO

from bridge.adapters.base import DestRun, Reader, Rendered, Writer
from bridge.engine.artifacts import hash_content, transfer_bytes
from bridge.engine.claims import RunClaims, claim_run, holder_name
from bridge.engine.model import Conflict, OnConflict, RunPlan
from bridge.engine.streams import merge_streams, open_gate
from bridge.faults import kill_point
from bridge.schema import FileRef, MetricChunk, Project, Run, RunHeader, Warning_
from bridge.state import Resolution, RunState, StateStore

#: Where a source value lands when the destination's param is immutable and the source
#: wins: MLflow params cannot change, so the new value is written to this tag instead and
#: the param keeps its old value (never a silent overwrite or drop).
PARAM_OVERRIDE_PREFIX = "bridge.param_override."
#: Recorded for a file whose content was missing and a person accepted as gone for good.
MANIFEST_ONLY = "manifest-only:"
#: Appended to the fingerprint recorded for a run synced with open conflicts, so the next
#: sync does not take it as unchanged: it reads the run again and reports them again.
OPEN_CONFLICTS = "+open-conflicts"


@dataclass
class SyncContext:
    """Everything one sync pass shares across worker threads."""

    reader: Reader
    writer: Writer
    state: StateStore
    dry_run: bool = False
    full: bool = False  # compare every run in full, ignoring matching fingerprints
    on_conflict: OnConflict = "skip"
    download_references: bool = False  # fetch reference artifact entries' targets
    # A person decided missing artifact content is gone for good: record it manifest-only.
    accept_missing_content: bool = False
    listed: set[str] = field(default_factory=set)  # source ids of the runs in this pass
    two_way: bool = False  # editable fields are carried both ways by engine.two_way
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _projects: dict[str, str | None] = field(default_factory=dict)
    _dest_index: dict[str, dict[str, DestRun]] = field(default_factory=dict)
    claims: RunClaims | None = None  # the run claims this pass holds (engine/claims.py)

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
    # Conflicts a policy settled in this pass, with the side taken: recorded after planning.
    new_resolutions: list[tuple[Conflict, str]] = field(default_factory=list)
    _settled: dict[str, Resolution] | None = None
    # What is kept of a dropped body (a sync holds O(workers) bodies, engine/sync.py): that
    # it was read (the run was compared in full) and the parent link it was planned with.
    body_read: bool = False
    parent_source_id: str | None = None
    parent_dest_id: str | None = None

    @property
    def compared(self) -> bool:
        """The run's body was read and compared in full while planning."""
        return self.run is not None or self.body_read

    def drop_body(self) -> None:
        """Free the run's body (and its rendering); ``read_body`` reads it again."""
        if self.run is not None:
            self.body_read = True
            self.parent_source_id = self.run.parent_source_id
            self.parent_dest_id = self.run.parent_dest_id
        self.run = self.rendered = None

    def read_body(self, reader: Reader, writer: Writer) -> None:
        """Read a dropped body again, for the apply, as it was planned: the parent link
        stays what planning saw (the applier adds one made since, as for any run)."""
        if self.run is not None:
            return
        run = reader.read_run(self.header)
        run.parent_dest_id = self.parent_dest_id
        self.run, self.rendered = run, writer.render(run)

    def settled(self, state: StateStore, dest_uri: str) -> dict[str, Resolution]:
        """Earlier settlements of this run's conflicts, per field (read once, when needed)."""
        if self._settled is None:
            self._settled = state.resolutions(dest_uri, self.plan.source_id)
        return self._settled


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
    st = ctx.state.get_run(ctx.dest_uri, sid)
    if not _up_to_date(ctx, st, header):
        busy = claim_run(ctx, sid)  # one process per run and destination (engine/claims.py)
        if busy is not None:
            return _claimed_elsewhere(base, header, busy)
        st = ctx.state.get_run(ctx.dest_uri, sid)  # another process may just have copied it
    if _up_to_date(ctx, st, header):
        assert st is not None
        base.action, base.outcome, base.dest_id = "unchanged", "unchanged", st.dest_id
        return Planned(plan=base, header=header)

    dest: DestRun | None = None
    if st is not None:
        dest = ctx.writer.get_run(st.dest_id)
        if dest is None:
            gone = _deleted_in_dest(ctx, base, header, st)
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
                if not ctx.dry_run:
                    kill_point("plan.relink.before_state")
                    # The watermarks before the run row: a row marked complete without
                    # them looks unchanged for good, and the next append would re-send
                    # every point (a crash in between just re-links again).
                    counts = ctx.writer.metric_counts(dest.dest_id)
                    ctx.state.set_watermarks(ctx.dest_uri, sid, counts)
                    kill_point("plan.relink.between")
                    ctx.state.put_run(ctx.dest_uri, sid, st)
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
            # A conflict concerns its field only: the rest of the run is still written.
            base.action = "conflict"
            base.reason = "conflicting fields left untouched; the rest of the run is synced"
    if ctx.dry_run or ctx.full:
        base.points_new = count_new_points(ctx, run, planned)
        base.files_new = sum(1 for f in run.files if _file_changed(ctx, f, planned.files_done))
        _sized_only(ctx, planned)
        _new_artifacts(ctx, planned)
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
    kill_point("plan.run")
    return planned


def _up_to_date(ctx: SyncContext, st: RunState | None, header: RunHeader) -> bool:
    """State says the run was copied complete from this very source version."""
    return not ctx.full and st is not None and st.complete and st.fingerprint == header.fingerprint


def _claimed_elsewhere(base: RunPlan, header: RunHeader, holder: str) -> Planned:
    """Another live process is copying this run into this destination: skipped this pass,
    not lost (the holder copies it; the next sync compares again)."""
    base.action, base.outcome = "skip", "skipped"
    base.reason = f"being copied by {holder_name(holder)}"
    return Planned(plan=base, header=header)


def _deleted_in_dest(
    ctx: SyncContext, base: RunPlan, header: RunHeader, st: RunState
) -> Planned | None:
    """The destination run was deleted. Open conflict (skip/fail); dest-wins or an earlier
    ``resolve --take dest`` keeps it deleted; source-wins writes it again (returns None)."""
    planned = Planned(plan=base, header=header)
    conflict = Conflict(
        source_id=base.source_id,
        field="run",
        reason=f"destination run {st.dest_id} was deleted after the bridge wrote it",
    )
    base.dest_id = st.dest_id
    earlier = planned.settled(ctx.state, ctx.dest_uri).get("run")
    if earlier is not None and earlier.choice == "dest" and _honoured(ctx, earlier):
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
        if not ctx.dry_run:
            ctx.state.forget_run(ctx.dest_uri, base.source_id)
            ctx.state.resolve_conflict(
                ctx.dest_uri, base.source_id, "run", None, None, "source", "policy:source-wins"
            )
        return None
    base.action = "conflict"
    base.conflicts.append(conflict)
    return planned


def _new_artifacts(ctx: SyncContext, planned: Planned) -> None:
    """Logged artifact versions whose content the destination does not hold yet."""
    run, plan = planned.run, planned.plan
    assert run is not None
    plan.bytes_new = 0
    for art in run.artifacts:
        if art.direction != "logged" or not art.manifest:
            continue
        if art.source_id and ctx.state.get_object(ctx.dest_uri, art.source_id) is not None:
            continue
        size = transfer_bytes(art, ctx.download_references)
        plan.bytes_new += size
        label = art.version or (art.digest or "")[:12]
        refs = sum(1 for e in art.manifest if e.ref)
        kept = f", {refs} references kept" if refs and not ctx.download_references else ""
        plan.artifacts_new.append(f"{art.name}:{label} ({art.type}, {size} bytes{kept})")


def file_digest(
    ctx: SyncContext, ref: FileRef, prior: str | None, opener: Callable[[], IO[bytes]]
) -> str | None:
    """The content digest to compare with ``prior`` (what state recorded when the file was
    last copied); None: unknown, copy it and hash it on the way.

    A digest the source states (SHA-256 of W&B media, MD5 of W&B server files) is used as
    is. Otherwise the content is hashed — once per version of the file: the MD5 is cached
    under the reader's cheap identity (``stat_key``: path, size, mtime), so a file
    rewritten with the same size is still found and an unchanged one is not read again.
    Without a cheap identity (remote stores) the size stands in between ``--full`` passes,
    and in every dry run: a diff never downloads content (:func:`_sized_only` says so)."""
    if ref.sha256:
        return f"sha256:{ref.sha256}"
    if ref.md5:
        return f"md5:{ref.md5}:{ref.size}"
    if ref.stat_key:
        cached = ctx.state.get_digest(ref.stat_key)
        if cached is not None:
            return f"md5:{cached}:{ref.size}"
    if prior is None:
        return None
    if ref.stat_key is None and not (ctx.full and not ctx.dry_run):
        same_size = prior.endswith(f":{ref.size}") or prior == f"size:{ref.size}"
        return prior if same_size else None
    md5, size = hash_content(opener)
    if ref.stat_key and not ctx.dry_run:
        ctx.state.put_digest(ref.stat_key, md5)
    return f"md5:{md5}:{size}"


def _sized_only(ctx: SyncContext, planned: Planned) -> None:
    """A ``--full`` dry run compares files without a local copy (a remote artifact store)
    by size, not content, since it downloads nothing: say so on the run's line."""
    run, plan = planned.run, planned.plan
    if not (ctx.full and ctx.dry_run) or run is None:
        return
    sized = [
        f
        for f in run.files
        if f.stat_key is None and not (f.sha256 or f.md5) and f.path in planned.files_done
    ]
    if sized:
        plan.warnings.append(
            Warning_(
                source_id=plan.source_id,
                code="compared-by-size",
                message=(
                    f"{len(sized)} file(s) without a local copy compared by size only: a "
                    "dry run downloads no content (a --full sync compares their content)"
                ),
            )
        )


def _file_changed(ctx: SyncContext, ref: FileRef, done: dict[str, str]) -> bool:
    prior = done.get(ref.path)
    digest = file_digest(ctx, ref, prior, partial(ctx.reader.open_file, ref))
    return digest is None or prior not in (digest, MANIFEST_ONLY + digest)


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
    editable = getattr(ctx.writer, "is_editable_tag", None) if ctx.two_way else None
    for key, value in rendered.tags.items():
        have = dest.tags.get(key)
        if have == value or (editable is not None and editable(key)):
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


def _honoured(ctx: SyncContext, earlier: Resolution) -> bool:
    """A person's settlement always holds; a policy's holds unless another policy now runs
    (a pair switched from dest-wins to source-wins means it)."""
    if not earlier.resolved_by.startswith("policy:"):
        return True
    return ctx.on_conflict not in ("source-wins", "dest-wins") or (
        earlier.resolved_by == f"policy:{ctx.on_conflict}"
    )


def settle_choice(
    ctx: SyncContext, settled: dict[str, Resolution], conflict: Conflict
) -> tuple[str, str] | None:
    """(side, by whom) for a conflict outside run params/tags (aliases, two-way edits): an
    earlier resolution of exactly these values, else the pair's policy (recorded), else
    None (the conflict stays open)."""
    earlier = settled.get(conflict.field)
    if (
        earlier is not None
        and earlier.source_value == conflict.source_value
        and earlier.dest_value == conflict.dest_value
        and _honoured(ctx, earlier)
    ):
        return earlier.choice, f"resolution #{earlier.id} by {earlier.resolved_by}"
    if ctx.on_conflict not in ("source-wins", "dest-wins"):
        return None
    choice = ctx.on_conflict.split("-")[0]
    if not ctx.dry_run:
        ctx.state.resolve_conflict(
            ctx.dest_uri,
            conflict.source_id,
            conflict.field,
            conflict.source_value,
            conflict.dest_value,
            choice,
            f"policy:{ctx.on_conflict}",
        )
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
        and _honoured(ctx, earlier)
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


def count_new_points(ctx: SyncContext, run: Run, planned: Planned) -> int:
    """The points a sync would write (dry runs and ``--full``): the history streamed once
    through the same gate the applier uses (points past each watermark whose prefix checks
    out), plus, for keys where points arrived inside the prefix, the source points the
    destination lacks (read back) — or, where it cannot be read back, all points past
    the watermark."""
    gate = open_gate(
        ctx.state, ctx.dest_uri, planned.plan.source_id, planned.watermarks, ctx.writer
    )
    new = 0
    for item in ctx.reader.iter_history(run):
        if isinstance(item, MetricChunk):
            part = gate.admit(item)
            new += len(part) if part is not None else 0
    keys = gate.to_merge()
    dest_id = planned.plan.dest_id
    if not keys or dest_id is None:
        return new
    if not ctx.writer.capabilities.reads_metric_points:
        return new + sum(max(0, gate.seen(k) - planned.watermarks.get(k, 0)) for k in keys)
    missing: list[int] = []
    merge_streams(ctx.reader, run, ctx.writer, dest_id, keys, lambda c: missing.append(len(c)))
    return new + sum(missing)
