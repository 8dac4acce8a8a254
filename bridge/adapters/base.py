"""The two interfaces every backend implements, and what a destination can store.

The engine talks to backends only through :class:`Reader` and :class:`Writer` (the core:
list, read, stream history, open files; create, write, finish) and the optional features
an adapter declares by inheriting them (bridge/adapters/features.py). Adding a backend
means adding one adapter package and registering its URI scheme in ``bridge.uris``; the
engine never changes.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from pydantic import BaseModel, Field

from bridge.schema import (
    ArtifactVersion,
    FileRef,
    HistoryItem,
    ManifestEntry,
    MetricChunk,
    Project,
    Run,
    RunHeader,
    Warning_,
)


class Notices:
    """The one channel through which an adapter reports what it had to bend, skip or
    guess (renamed keys, unreadable extras, registry names shortened...). Every reader and
    writer has one (``self.notices``); the engine drains it after each run and registry
    pass into the report, so a notice reaches every report format."""

    def __init__(self) -> None:
        self._items: list[Warning_] = []
        self._lock = threading.Lock()

    def add(self, source_id: str, code: str, message: str) -> None:
        with self._lock:
            self._items.append(Warning_(source_id=source_id, code=code, message=message))

    def drain(self, source_id: str | None = None) -> list[Warning_]:
        """Take the notices (of one source object, or all) out of the channel."""
        with self._lock:
            taken = [w for w in self._items if source_id is None or w.source_id == source_id]
            self._items = [w for w in self._items if w not in taken]
        return taken


class Capabilities(BaseModel):
    """What a destination can and cannot store; the planner decides once from these."""

    can_set_start_time: bool = True
    can_choose_run_id: bool = False
    immutable_params: bool = True  # a param, once written, cannot change value
    stores_infinity: bool = False  # False: ±inf points are kept aside and reported
    dedupes_metric_points: bool = False  # re-sending identical points is harmless
    # True: points are stored once MetricSink.flush() returns. False (the W&B SDK writes in
    # the background): after a crash only the destination's own counts can be trusted.
    durable_flush: bool = True
    # True: write_metadata may be called again once the history pass brought the run's
    # results (Reader.read_run_deferring_results), with the tags they render to.
    late_results: bool = False
    max_param_len: int | None = None
    max_tag_len: int | None = None
    max_key_len: int | None = None
    metrics_per_batch: int = 1000
    params_per_batch: int = 100
    tags_per_batch: int = 100
    # Whether points read back, a registry or logged models exist is not a capability
    # but a feature the adapter declares (bridge/adapters/features.py).
    max_alias_len: int | None = None


class ReaderOptions(BaseModel):
    """Options a reader may use; unknown ones are ignored by readers that don't need them."""

    staging_dir: str | None = None  # W&B offline: moved copy of the SDK artifact staging dir
    entity: str | None = None  # W&B offline: entity for runs whose log records none
    run_ids: list[str] = Field(default_factory=list)  # restrict to these native run ids
    since: str | None = None  # ISO date: runs created/heartbeat since
    tags: list[str] = Field(default_factory=list)
    states: list[str] = Field(default_factory=list)
    experiments: list[str] = Field(default_factory=list)  # MLflow: names or globs
    registries: list[str] = Field(default_factory=list)  # model names / collections; [] = all
    registry: bool = True  # also list registered models / registry collections
    download_references: bool = False  # fetch reference artifact entries' targets
    # Folders under which file:// reference targets may be read (offline sources only).
    reference_roots: list[str] = Field(default_factory=list)
    include_deleted: bool = False  # MLflow: also read deleted runs
    # Workspace item kinds to copy (traces, prompts, evaluation datasets): --no-traces ...
    # "model": logged models no run made (MLflow), always on: they follow the experiment filters
    items: list[str] = Field(default_factory=lambda: ["trace", "prompt", "dataset", "model"])
    workers: int = 4


class Reader(ABC):
    """Reads one backend into neutral records. Readers never write anywhere."""

    #: URI scheme this reader answers to, e.g. "wandb-offline".
    scheme: str = ""

    def __init__(self, target: str, options: ReaderOptions | None = None) -> None:
        self.target = target
        self.options = options or ReaderOptions()
        self.notices = Notices()

    @classmethod
    def normalize_target(cls, target: str) -> str:
        """The target spelled the one way state and tags key on (e.g. an absolute path:
        ``sqlite:///mlflow.db`` means a different store in every working directory)."""
        return target

    @property
    def display_uri(self) -> str:
        """The URI as it may appear in reports, state and tags: no credentials."""
        return f"{self.scheme}:{self.target}"

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`bridge.errors.BridgeError` with one clear line if unusable."""

    @abstractmethod
    def list_runs(self) -> Iterator[RunHeader]:
        """Every run in scope, cheaply (no history). Damaged runs are still listed."""

    @abstractmethod
    def read_run(self, header: RunHeader) -> Run:
        """The full run body (config, summary, tags, files, artifacts), no history.

        Raises :class:`bridge.errors.RunError` if the run cannot be read at all.
        """

    def read_run_deferring_results(self, header: RunHeader) -> Run | None:
        """The run body with ``results`` left to :meth:`iter_history`, for a reader whose
        results and history come from one log (reading it twice is most of a long run's
        cost): ``results_pending`` is True and ``iter_history`` sets ``results`` before
        its summary-only points. None (the default): not cheaper here, use read_run."""
        return None

    @abstractmethod
    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        """The whole history, streamed.

        Numeric points come as :class:`MetricChunk` (one key per chunk, points of a key in
        source order across chunks, bounded chunk size); everything else as
        :class:`ExtraValue`. System metrics use keys ``system/<name>``. Numeric summary
        values that never appear in history come last, one point each at the last step.
        """

    @abstractmethod
    def open_file(self, ref: FileRef) -> IO[bytes]:
        """Open one of the run's files (or a media file named by an ExtraValue)."""

    def file_reference_roots(self) -> list[str] | None:
        """Folders under which this source's ``file://`` references may be read with
        ``--download-references``. None (the default, every server): never — a path a
        server sent names a file on someone else's machine, or one it wants read here.
        Readers of folders the operator points at return ``options.reference_roots``."""
        return None

    def open_artifact_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        """Open one manifest entry's content (not a reference entry's target).

        Raises FileNotFoundError when the content is not available."""
        if entry.local_path:
            return open(entry.local_path, "rb")
        raise FileNotFoundError(f"artifact {art.name}: no content for {entry.path!r}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, subprocesses, temp folders."""


class DestRun(BaseModel):
    """A run as found in the destination."""

    dest_id: str
    project_dest_id: str
    source_id: str | None = None
    complete: bool = False  # the completion marker was written last, so True = whole
    fingerprint: str | None = None  # source fingerprint recorded at completion
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


class Rendered(BaseModel):
    """What a writer would store for a run's metadata, after mapping: the planner diffs this."""

    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    warnings: list[Warning_] = Field(default_factory=list)


OpenEntry = Callable[[], IO[bytes]]


class DestModelVersion(BaseModel):
    """A registered model version as found in the destination."""

    version: str  # MLflow "3"; W&B "v3"
    source_id: str | None = None  # identity tag written at creation
    source_index: int | None = None
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class DestRegisteredModel(BaseModel):
    name: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    versions: list[DestModelVersion] = Field(default_factory=list)  # oldest first
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> version label


class MetricSink(ABC):
    """Buffers metric points across keys and writes them in destination-sized batches.

    What a sink had to bend (renamed keys ...) it reports on its writer's ``notices``,
    the one channel every report gets.
    """

    @abstractmethod
    def add(self, chunk: MetricChunk) -> None: ...

    @abstractmethod
    def flush(self) -> None:
        """Write everything buffered; after it returns the points are durable."""


class Writer(ABC):
    """Writes neutral records into one backend. Every method is idempotent for equal input."""

    scheme: str = ""
    capabilities: Capabilities = Capabilities()
    #: The writer's own bookkeeping params/tags that change by design after a run is written
    #: (fingerprint, completion marker) or name the source URI (which differs between reads
    #: of the same run): ``verify`` never compares them. Each writer names its own.
    bookkeeping_keys: frozenset[str] = frozenset()

    def __init__(self, target: str) -> None:
        self.target = target
        #: Credential-free URI of the source being synced; set by the engine, written as a tag.
        self.source_uri: str | None = None
        self.notices = Notices()

    @classmethod
    def normalize_target(cls, target: str) -> str:
        """The target spelled the one way state and tags key on (e.g. an absolute path:
        ``sqlite:///mlflow.db`` means a different store in every working directory)."""
        return target

    @property
    def display_uri(self) -> str:
        """The URI as it may appear in reports, state and tags: no credentials."""
        return f"{self.scheme}:{self.target}"

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`bridge.errors.BridgeError` with one clear line if unusable."""

    @abstractmethod
    def find_project(self, project: Project) -> str | None:
        """Destination id of the project/experiment the mapping names, if it exists."""

    @abstractmethod
    def ensure_project(self, project: Project) -> str:
        """Create the project/experiment if missing; return its destination id."""

    @abstractmethod
    def find_runs_by_source(self, project_dest_id: str) -> dict[str, DestRun]:
        """All runs in a destination project that carry a source-identity tag, by source id.

        This is how a lost state store is rebuilt: the identity tag is written at creation.
        """

    @abstractmethod
    def get_run(self, dest_id: str) -> DestRun | None:
        """The run's current params/tags, or None if it was deleted."""

    @abstractmethod
    def render(self, run: Run, parent_dest_id: str | None = None) -> Rendered:
        """The params and tags this writer would store for ``run`` (pure; no I/O).

        ``parent_dest_id``: the destination id of the run's parent (``run.parent_source_id``)
        once the engine has written it, for a writer that links nested runs by it."""

    @abstractmethod
    def create_run(self, project_dest_id: str, run: Run, rendered: Rendered) -> str:
        """Create the run with its start time, name and source-identity tag; return its id.

        Params/tags are written afterwards by :meth:`write_metadata`.
        """

    @abstractmethod
    def begin_update(self, dest_id: str) -> None:
        """Clear the completion marker before changing a finished run, so a crash mid-update
        leaves a run the next sync knows to finish."""

    @abstractmethod
    def write_metadata(
        self, dest_id: str, run: Run, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Write (only) the given params and tags, in batches, plus any metadata files
        the mapping keeps beside them (e.g. full config/summary JSON)."""

    @abstractmethod
    def metric_sink(self, dest_id: str) -> MetricSink:
        """A sink that batches points for this run."""

    @abstractmethod
    def metric_counts(self, dest_id: str) -> dict[str, int]:
        """Points per metric key stored now; used only to recover a lost state store."""

    @abstractmethod
    def put_file(self, dest_id: str, path: str, stream: IO[bytes]) -> None:
        """Store one file under the run at ``path`` ("/"-separated); overwrite if present."""

    @abstractmethod
    def finish_run(self, dest_id: str, run: Run, fingerprint: str) -> None:
        """Set final status and end time, then write the completion marker (last)."""

    def item_gap(self, kind: str) -> str:
        """Why this destination does not store items of ``kind`` (traces, prompts,
        datasets) — said once per pass with the count of items not copied."""
        return f"{self.display_uri} cannot store {kind}s"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""


def batched(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """Split key/value pairs into lists of at most ``size``."""
    batch: list[tuple[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
