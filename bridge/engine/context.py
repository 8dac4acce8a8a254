"""What one sync pass shares across worker threads, and what a planned run carries.

The adapters' optional features (bridge/adapters/features.py) are checked here, once, when
the pass is set up: each is a typed view of the reader or writer (``None`` when the
backend does not have it), so the rest of the engine never probes for a method.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from bridge.adapters.base import DestRun, Reader, Rendered, Writer
from bridge.adapters.features import (
    EditableSource,
    FileLinks,
    ItemSink,
    ItemSource,
    LoggedModels,
    MetricReadBack,
    ModelRegistry,
    RegistrySource,
    RunDeletion,
    RunEdits,
    SourcePresence,
)
from bridge.engine.claims import FencedStore, RunClaims
from bridge.engine.model import Conflict, OnConflict, RunPlan
from bridge.schema import Project, Run, RunHeader
from bridge.state import Resolution, RunState, StateStore
from bridge.state.claims import Fence


@dataclass(frozen=True)
class Features:
    """The optional features of one pass's reader, writer and source writer, typed."""

    registry_source: RegistrySource | None = None
    editable_source: EditableSource | None = None
    read_back: MetricReadBack | None = None
    file_links: FileLinks | None = None
    deletion: RunDeletion | None = None
    edits: RunEdits | None = None  # the destination's
    logged_models: LoggedModels | None = None
    registry: ModelRegistry | None = None  # the destination's
    source_edits: RunEdits | None = None  # the writer opened on the source URI
    source_registry: ModelRegistry | None = None  # same writer: aliases moved back
    item_source: ItemSource | None = None  # traces, prompts, datasets to read
    item_sink: ItemSink | None = None  # the destination's: where they are written
    presence: SourcePresence | None = None  # asked before a deletion acts (engine/deletions.py)

    @classmethod
    def of(cls, reader: Reader, writer: Writer, source_writer: Writer | None) -> Features:
        sw = source_writer
        return cls(
            registry_source=reader if isinstance(reader, RegistrySource) else None,
            editable_source=reader if isinstance(reader, EditableSource) else None,
            read_back=writer if isinstance(writer, MetricReadBack) else None,
            file_links=writer if isinstance(writer, FileLinks) else None,
            deletion=writer if isinstance(writer, RunDeletion) else None,
            edits=writer if isinstance(writer, RunEdits) else None,
            logged_models=writer if isinstance(writer, LoggedModels) else None,
            registry=writer if isinstance(writer, ModelRegistry) else None,
            source_edits=sw if isinstance(sw, RunEdits) else None,
            source_registry=sw if isinstance(sw, ModelRegistry) else None,
            item_source=reader if isinstance(reader, ItemSource) else None,
            item_sink=writer if isinstance(writer, ItemSink) else None,
            presence=reader if isinstance(reader, SourcePresence) else None,
        )


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
    # --two-way: a writer opened on the source URI. Readers never write: edits carried
    # back to the source (notes, tags, registry aliases) go through it.
    source_writer: Writer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _projects: dict[str, str | None] = field(default_factory=dict)
    _dest_index: dict[str, dict[str, DestRun]] = field(default_factory=dict)
    claims: RunClaims | None = None  # the run claims this pass holds (engine/claims.py)
    features: Features = field(init=False)

    def __post_init__(self) -> None:
        self.features = Features.of(self.reader, self.writer, self.source_writer)
        if not isinstance(self.state, FencedStore):
            # Every per-run state write of the pass carries its run's fence (claims.py).
            # A weak reference: no cycle, so a pass dropped without closing is freed (and
            # its claims given back) as soon as it is unreferenced.
            ref = weakref.ref(self)

            def fence_of(dest_uri: str, source_id: str) -> Fence | None:
                ctx = ref()
                return None if ctx is None else ctx._fence_of(dest_uri, source_id)

            self.state = FencedStore(self.state, fence_of)

    @property
    def dest_uri(self) -> str:
        return self.writer.display_uri

    # -- run claims: one process per run and destination (engine/claims.py) -------------

    def claim_run(self, source_id: str) -> str | None:
        """Claim a run for this pass before planning work on it: None when claimed (or a
        dry run, which writes nothing, not even a claim), else who is copying it."""
        if self.dry_run:
            return None
        with self._lock:
            if self.claims is None:
                # the store itself, not the pass's fenced view (which refers to this
                # context): the claims' finalizer must not keep the pass alive
                store = self.state
                if isinstance(store, FencedStore):
                    store = store.inner
                self.claims = RunClaims(store, self.dest_uri)
            claims = self.claims
        return claims.take(source_id)

    def fence(self, source_id: str) -> Fence | None:
        """The fence of this pass's claim on a run (None: not claimed by this pass, e.g. a
        dry run); :class:`~bridge.errors.LeaseLost` when its lease went to another holder."""
        claims = self.claims
        return None if claims is None else claims.fence(source_id)

    def check_lease(self, source_id: str) -> None:
        """Before writing more of a claimed run to the destination: raise
        :class:`~bridge.errors.LeaseLost` if its lease went to another holder."""
        claims = self.claims
        if claims is not None:
            claims.check(source_id)

    def _fence_of(self, dest_uri: str, source_id: str) -> Fence | None:
        return self.fence(source_id) if dest_uri == self.dest_uri else None

    def release_run(self, source_id: str) -> None:
        """The run's apply ended (done or failed): let other processes have it."""
        if self.claims is not None:
            self.claims.release(source_id)

    def release_runs(self, keep: set[str] | None = None) -> None:
        """Give back the pass's claims, except the runs in ``keep`` (about to be applied);
        without ``keep`` the pass is over and the heartbeat stops too."""
        if self.claims is None:
            return
        if keep is None:
            self.claims.close()
            self.claims = None
        else:
            self.claims.release_all(keep)

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
class Relink:
    """Intent: adopt a destination run found by its identity tag as this run's copy
    (state was lost): its stored counts become the watermarks, then the run row."""

    state: RunState
    counts: dict[str, int]


@dataclass
class Planned:
    """A plan line plus what the applier needs to carry it out.

    Planning reads and decides only; what it decided to record in state travels here as
    intents (``relink``, ``refingerprint``, ``forget``, ``digests``, ``new_resolutions``)
    and is carried out when the run is settled (engine/intents.py)."""

    plan: RunPlan
    header: RunHeader
    run: Run | None = None
    # The writer's rendering of the run, made once while planning (kept while the body is
    # dropped: the apply writes what was planned).
    rendered: Rendered | None = None
    # The run was planned without its results (Reader.read_run_deferring_results): the
    # rendering lacks what they give, written once the history pass brought them.
    results_late: bool = False
    watermarks: dict[str, int] = field(default_factory=dict)
    files_done: dict[str, str] = field(default_factory=dict)
    baseline: RunState | None = None
    # Conflicts a policy settled in this pass, with the side taken: recorded after planning.
    new_resolutions: list[tuple[Conflict, str]] = field(default_factory=list)
    relink: Relink | None = None
    refingerprint: RunState | None = None  # a --full pass found nothing to write
    forget: bool = False  # source-wins over a deleted destination run: start afresh
    digests: dict[str, str] = field(default_factory=dict)  # stat key -> MD5 hashed while planning
    _settled: dict[str, Resolution] | None = None
    # What is kept of a dropped body (a sync holds O(workers) bodies, engine/sync.py): that
    # it was read (the run was compared in full) and the parent link it was planned with.
    body_read: bool = False
    parent_source_id: str | None = None
    # The parent's destination id once its copy exists (engine/plan.py resolve_parent): the
    # writer gets it with the run (``Writer.render``); the run record never holds it.
    parent_dest_id: str | None = None

    @property
    def compared(self) -> bool:
        """The run's body was read and compared in full while planning."""
        return self.run is not None or self.body_read

    def drop_body(self) -> None:
        """Free the run's body; ``read_body`` reads it again. The rendering stays (it is
        what was planned, and the apply writes it) until :meth:`forget_rendering`."""
        if self.run is not None:
            self.body_read = True
            self.parent_source_id = self.run.parent_source_id
        self.run = None

    def forget_rendering(self) -> None:
        """Free the body and the rendering: the run is done, or set aside for a later
        apply (``--on-conflict fail`` holds no run's data while it plans the others)."""
        self.drop_body()
        self.rendered = None

    def read_body(self, reader: Reader, writer: Writer) -> None:
        """Read a dropped body again, for the apply, as it was planned: the parent link
        stays what planning saw (the applier adds one made since, as for any run). Only a
        run whose rendering was freed too is rendered again."""
        if self.run is not None:
            return
        run = reader.read_run(self.header)
        self.run = run
        if self.rendered is None:
            self.rendered = writer.render(run, parent_dest_id=self.parent_dest_id)

    def settled(self, state: StateStore, dest_uri: str) -> dict[str, Resolution]:
        """Earlier settlements of this run's conflicts, per field (read once, when needed)."""
        if self._settled is None:
            self._settled = state.resolutions(dest_uri, self.plan.source_id)
        return self._settled
