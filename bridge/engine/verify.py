"""Check that every synced run's destination copy is what the mapping promises.

``verify`` reads both sides and compares, for each source run the state (or the
destination's identity tag) maps to a destination run: that the run exists and is complete;
the params/tags the writer renders for the source run against the destination's current
values (bookkeeping tags that change by design excluded); per metric stream the point count
and an order-independent checksum over (step, timestamp, value); and run files (presence,
size, digest where both sides know it).

Which source runs: those of the pair's scope — the filters given to ``verify``, else the
filters of the pair's last real sync (remembered in the state store), else every run. A
source run in scope without a copy is a finding (``unsynced``) like a mismatch; a run the
bridge left out on purpose is ``not-copied`` with the reason (a destination deletion
settled ``dest-wins``, a run deleted at the source under ``--on-delete``, a run with
nothing importable) and does not fail. Registered models follow the same rule.

Histories are streamed, never held: a checksum is a sum of per-point hashes, so the order
a backend returns points in does not matter. Only streams that differ are read a second
time, to name example points and to keep a downsampled copy of both sides for a plot.

The destination's history is read through the destination's own reader (the Writer
interface has none): the same URI opened as a source. A destination that cannot store
±inf (``Capabilities.stores_infinity`` False) keeps ±max float in its place: for such a
destination ±max float compares equal to ±inf on both sides, so faithful copies verify
clean.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import LoggedModels, ModelRegistry, RegistrySource
from bridge.engine.artifacts import artifact_folder
from bridge.engine.html_report import downsample
from bridge.engine.plan import MANIFEST_ONLY
from bridge.errors import NothingToImport
from bridge.schema import ExtraValue, FileRef, MetricChunk, Run, RunHeader

if TYPE_CHECKING:
    from bridge.adapters.base import DestRun, Reader, Writer
    from bridge.state import StateStore

#: Tags/params that change by design after a run is written (or name the source URI,
#: which differs between offline and online reads of the same run): never compared.
BOOKKEEPING_KEYS = frozenset(
    {
        "bridge.fingerprint",
        "bridge.complete",
        "bridge.source_uri",
        "_bridge.fingerprint",
        "_bridge.complete",
        "_bridge.source_uri",
    }
)
#: Points kept per side of a mismatched stream for the example diff (beyond: counts only).
DETAIL_CAP = 200_000
#: Points per side of a plotted stream.
PLOT_POINTS = 500
#: Example points named per mismatched stream.
EXAMPLES = 3

_MAX = sys.float_info.max
_NAN_TOKEN = 0x7FF8_0000_0000_0001  # stands for NaN in a point hash (hash(nan) is per object)
_MASK = (1 << 64) - 1

RunStatusV = Literal["ok", "mismatch", "unsynced", "not-copied", "error"]
#: Statuses that fail a verify (exit 1): a copy that differs, a copy that is missing, a
#: run that could not be checked. ``not-copied`` (left out on purpose) does not.
FINDINGS: frozenset[str] = frozenset({"mismatch", "unsynced", "error"})
#: Display order of the statuses in a summary line.
STATUS_ORDER = ("ok", "mismatch", "unsynced", "not-copied", "error")


class Mismatch(BaseModel):
    """One line of a verify report: a field of a run that differs."""

    source_id: str
    field: str  # "run", "param:lr", "tag:team", "metric:loss", "file:files/output.log"
    source_value: str | None = None
    dest_value: str | None = None
    detail: str | None = None


class RunVerify(BaseModel):
    source_id: str
    name: str | None = None
    project: str
    dest_id: str | None = None
    status: RunStatusV = "ok"
    #: The source changed since the last sync: differences may just be not synced yet.
    stale: bool = False
    params_checked: int = 0
    tags_checked: int = 0
    metrics_checked: int = 0
    points_checked: int = 0
    files_checked: int = 0
    mismatches: list[Mismatch] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    #: Why a ``not-copied`` run was left out on purpose.
    reason: str | None = None


class StreamSample(BaseModel):
    """Downsampled (step, value) points of one mismatched stream, both sides, for plots."""

    source_id: str
    key: str
    source: list[tuple[float, float]] = Field(default_factory=list)
    dest: list[tuple[float, float]] = Field(default_factory=list)


class VerifyReport(BaseModel):
    source: str
    dest: str
    runs: list[RunVerify] = Field(default_factory=list)
    samples: list[StreamSample] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # problems not tied to one run
    #: Which source objects were checked and where that scope came from.
    scope: str = "every source run"
    filters: dict[str, Any] = Field(default_factory=dict)

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for run in self.runs for m in run.mismatches]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.status] = out.get(run.status, 0) + 1
        return out

    def counts_line(self) -> str:
        """Statuses as counted, e.g. ``4 ok, 2 unsynced, 1 not copied`` (ok, unsynced and
        not copied always; the others when present)."""
        counts = self.counts()
        always = ("ok", "unsynced", "not-copied")
        return ", ".join(
            f"{counts.get(s, 0)} {s.replace('-', ' ')}"
            for s in STATUS_ORDER
            if s in always or counts.get(s)
        )

    def exit_code(self) -> int:
        """0 when every run in scope has a copy that verifies clean (or was left out on
        purpose), else 1: a mismatch, a source run without a copy, an error."""
        if self.errors or any(r.status in FINDINGS for r in self.runs):
            return 1
        return 0

    def streams(self) -> dict[tuple[str, str], tuple[list, list]]:
        """(source id, key) → (source points, dest points): what the HTML report plots."""
        return {(s.source_id, s.key): (s.source, s.dest) for s in self.samples}


# ---------------------------------------------------------------------------- streams


def normalize_value(value: float, stores_infinity: bool = False) -> float:
    """The value as compared: -0.0 is 0.0; unless the destination stores infinity
    (``Capabilities.stores_infinity``), ±max float is ±inf (the destination's stand-in)."""
    if not stores_infinity:
        if value >= _MAX:
            return math.inf
        if value <= -_MAX:
            return -math.inf
    if value == 0.0:
        return 0.0
    return value


def _token(value: float, stores_infinity: bool) -> float | int:
    """A value as hashed and compared (NaN as a token: ``hash(nan)`` is per object)."""
    return _NAN_TOKEN if value != value else normalize_value(value, stores_infinity)


@dataclass
class StreamStats:
    """Count and order-independent checksum of one metric stream."""

    count: int = 0
    checksum: int = 0
    #: The destination's ``Capabilities.stores_infinity`` (see :func:`normalize_value`).
    stores_infinity: bool = False

    def add(self, chunk: MetricChunk) -> None:
        total, inf = self.checksum, self.stores_infinity
        for step, ts, value in zip(chunk.steps, chunk.timestamps, chunk.values, strict=True):
            total += hash((step, ts, _token(value, inf))) & _MASK
        self.checksum = total & _MASK
        self.count += len(chunk)

    def describe(self) -> str:
        return f"{self.count} points, checksum {self.checksum:016x}"


@dataclass
class HistoryStats:
    streams: dict[str, StreamStats] = field(default_factory=dict)
    media: dict[str, FileRef] = field(default_factory=dict)  # files named by history values


def history_stats(items: Iterable[object], stores_infinity: bool = False) -> HistoryStats:
    """One streaming pass over a history: stats per metric key, media files on the way."""
    out = HistoryStats()
    for item in items:
        if isinstance(item, MetricChunk):
            stats = out.streams.get(item.key)
            if stats is None:
                stats = out.streams[item.key] = StreamStats(stores_infinity=stores_infinity)
            stats.add(item)
        elif isinstance(item, ExtraValue) and item.file is not None:
            out.media.setdefault(item.file.path, item.file)
    return out


Point = tuple[int, int, float | int]


def _collect(
    items: Iterable[object], keys: set[str], stores_infinity: bool
) -> dict[str, list[Point] | None]:
    """All points of ``keys`` (None for a key past :data:`DETAIL_CAP`), NaN as a token."""
    out: dict[str, list[Point] | None] = {k: [] for k in keys}
    for item in items:
        if not isinstance(item, MetricChunk) or item.key not in keys:
            continue
        points = out[item.key]
        if points is None:
            continue
        for step, ts, value in zip(item.steps, item.timestamps, item.values, strict=True):
            points.append((step, ts, _token(value, stores_infinity)))
        if len(points) > DETAIL_CAP:
            out[item.key] = None
    return out


def _plot_points(points: list[Point]) -> list[tuple[float, float]]:
    ordered = sorted(points, key=lambda p: (p[0], p[1]))
    finite = [
        (float(s), float(v)) for s, _, v in ordered if isinstance(v, float) and math.isfinite(v)
    ]
    return downsample(finite, PLOT_POINTS)


def _fmt_point(p: Point) -> str:
    value = "NaN" if p[2] == _NAN_TOKEN and isinstance(p[2], int) else repr(float(p[2]))
    return f"step {p[0]} ts {p[1]} value {value}"


# ---------------------------------------------------------------------------- scope

#: ReaderOptions fields that decide which source objects a sync lists and how it names
#: them (``entity``, ``staging_dir``): remembered per pair by every real sync, re-applied
#: by ``verify`` so it checks what the sync was asked to copy — no more, no less.
SCOPE_FIELDS = (
    "run_ids",
    "since",
    "tags",
    "states",
    "experiments",
    "include_deleted",
    "registries",
    "registry",
    "entity",
    "staging_dir",
)
#: How each scope field is spelled on the command line (for the report's scope line).
_FLAGS = {
    "run_ids": "--runs",
    "since": "--since",
    "tags": "--tag",
    "states": "--run-state",
    "experiments": "--experiment",
    "include_deleted": "--include-deleted",
    "registries": "--models",
    "registry": "--no-registry",
    "entity": "--entity",
    "staging_dir": "--staging-dir",
}


def pair_scope(options: ReaderOptions) -> dict[str, Any]:
    """The scope fields of a sync's reader options, as the state store keeps them."""
    return {name: getattr(options, name) for name in SCOPE_FIELDS}


def describe_filters(filters: dict[str, Any]) -> str:
    """Filters as command-line flags; "none (every source run)" when nothing narrows."""
    default = pair_scope(ReaderOptions())
    parts: list[str] = []
    for name in SCOPE_FIELDS:
        value = filters.get(name, default[name])
        if value == default[name]:
            continue
        flag = _FLAGS[name]
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list):  # repeated, as the command line takes each
            parts.extend(f"{flag} {shlex.quote(str(v))}" for v in value)
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts) or "none (every source run)"


@dataclass
class Scope:
    """Which source objects a verify checks, and where that choice came from."""

    filters: dict[str, Any]
    origin: Literal["given", "last sync", "none"]

    def describe(self) -> str:
        if self.origin == "none":
            return "every source run (no filters given, no sync of this pair recorded)"
        where = "filters given" if self.origin == "given" else "filters of the last sync"
        return f"{where}: {describe_filters(self.filters)}"

    def options(self, workers: int) -> ReaderOptions:
        """Reader options that list this scope."""
        known = {k: v for k, v in self.filters.items() if k in SCOPE_FIELDS}
        return ReaderOptions(workers=workers, **known)


def scope_for(
    state: StateStore, source_uri: str, dest_uri: str, given: ReaderOptions | None
) -> Scope:
    """The filters given to verify, else those of the pair's last real sync, else none."""
    if given is not None:
        return Scope(pair_scope(given), "given")
    remembered = state.pair_filters(source_uri, dest_uri)
    if remembered is None:
        return Scope({}, "none")
    return Scope(remembered, "last sync")


# ---------------------------------------------------------------------------- runs


@dataclass
class VerifyContext:
    """What the per-run checks share across worker threads."""

    reader: Reader
    writer: Writer
    state: StateStore
    dest_reader: Reader
    digests: bool = False
    #: The destination's logged-model objects, when it has them (checked once).
    logged_models: LoggedModels | None = None
    #: Source ids this pair's syncs saw disappear from a complete listing (--on-delete).
    deleted_at_source: dict[str, float | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dest_headers: dict[str, RunHeader] | None = None
    _indexes: dict[str, dict[str, DestRun]] = field(default_factory=dict)
    samples: list[StreamSample] = field(default_factory=list)

    @property
    def dest_uri(self) -> str:
        return self.writer.display_uri

    def dest_index(self, project_dest_id: str) -> dict[str, DestRun]:
        with self._lock:
            if project_dest_id not in self._indexes:
                self._indexes[project_dest_id] = self.writer.find_runs_by_source(project_dest_id)
            return self._indexes[project_dest_id]

    def dest_header(self, dest_id: str) -> RunHeader | None:
        """The destination reader's header for a destination run id (listed once)."""
        with self._lock:
            if self._dest_headers is None:
                self._dest_headers = {h.native_id: h for h in self.dest_reader.list_runs()}
            headers = self._dest_headers
        found = headers.get(dest_id)
        if found is None and "/" in dest_id:  # a path-like dest id ends in the native id
            found = headers.get(dest_id.rsplit("/", 1)[1])
        return found


def _mapped_dest(ctx: VerifyContext, header: RunHeader) -> tuple[str | None, str | None]:
    """(dest id, fingerprint recorded at the last completion) of a source run, if mapped."""
    st = ctx.state.get_run(ctx.dest_uri, header.source_id)
    if st is not None:
        return st.dest_id, st.fingerprint
    project_dest_id = ctx.writer.find_project(header.project)
    if project_dest_id is None:
        return None, None
    dest = ctx.dest_index(project_dest_id).get(header.source_id)
    if dest is None:
        return None, None
    return dest.dest_id, dest.fingerprint


def _compare_values(rv: RunVerify, kind: str, want: dict[str, str], have: dict[str, str]) -> int:
    checked = 0
    for key, value in sorted(want.items()):
        if key in BOOKKEEPING_KEYS:
            continue
        checked += 1
        got = have.get(key)
        if got != value:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=f"{kind}:{key}",
                    source_value=value,
                    dest_value=got,
                    detail="missing at the destination" if got is None else None,
                )
            )
    return checked


def _sha256(stream: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for block in stream:
        h.update(block)
    return h.hexdigest()


def _file_digest(reader: Reader, ref: FileRef) -> str | None:
    try:
        with reader.open_file(ref) as fh:
            return _sha256(iter(lambda: fh.read(1 << 20), b""))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by size/presence
        return None


def _expected_files(
    run: Run, media: dict[str, FileRef], model_objects: bool, accepted: set[str]
) -> dict[str, FileRef]:
    """Source files the sync copies: run files, media named by history, and every stored
    artifact entry — also one whose content is missing at the source now (the sync failed
    the run for it; it is a finding until it is copied), except those a person accepted
    as manifest-only (``accepted``). Model artifacts go to model objects when the
    destination has them (``model_objects``; see :func:`_compare_models`)."""
    out: dict[str, FileRef] = {}
    for ref in [*run.files, *media.values()]:
        out.setdefault(ref.path, ref)
    for art in run.artifacts:
        if art.direction != "logged" or not art.manifest:
            continue
        if model_objects and art.type == "model" and art.source_id:
            continue
        folder = artifact_folder(art)
        for entry in art.manifest:
            path = f"{folder}/files/{entry.path}"
            if entry.ref is not None or path in accepted:
                continue
            out.setdefault(path, FileRef(path=path, size=entry.size))
    return out


def _compare_models(ctx: VerifyContext, models: LoggedModels, rv: RunVerify, run: Run) -> None:
    """Each model artifact the run logged has its model object in the destination."""
    for art in run.artifacts:
        if art.direction != "logged" or art.type != "model" or not art.source_id:
            continue
        if not art.manifest:
            continue
        if ctx.state.get_object(ctx.dest_uri, art.source_id) is not None:
            continue
        if models.find_model(art.source_id) is not None:
            continue
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field=f"model:{art.name}:{art.version or art.digest}",
                source_value=f"{len(art.manifest)} file(s)",
                dest_value=None,
                detail="model content not in the destination (missing or not matching its "
                "manifest at the source when synced)",
            )
        )


def _accepted_manifest_only(ctx: VerifyContext, rv: RunVerify) -> set[str]:
    """Files a person accepted as manifest-only (``--accept-missing-content``): listed in
    the run's notes, not findings."""
    done = ctx.state.get_files(ctx.dest_uri, rv.source_id)
    accepted = {path for path, digest in done.items() if digest.startswith(MANIFEST_ONLY)}
    if accepted:
        shown = ", ".join(sorted(accepted)[:5]) + (" ..." if len(accepted) > 5 else "")
        rv.notes.append(f"{len(accepted)} file(s) accepted as manifest-only: {shown}")
    return accepted


def _compare_files(
    ctx: VerifyContext, rv: RunVerify, want: dict[str, FileRef], have: list[FileRef]
) -> None:
    dest_files = {f.path: f for f in have}
    for path, src in sorted(want.items()):
        rv.files_checked += 1
        dst = dest_files.get(path)
        field_name = f"file:{path}"
        if dst is None:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"{src.size} bytes" if src.size is not None else "present",
                    dest_value=None,
                    detail="missing at the destination",
                )
            )
            continue
        if src.size is not None and dst.size is not None and src.size != dst.size:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"{src.size} bytes",
                    dest_value=f"{dst.size} bytes",
                    detail="size differs",
                )
            )
            continue
        src_sha, dst_sha = src.sha256, dst.sha256
        if ctx.digests:
            if dst_sha is None:
                dst_sha = _file_digest(ctx.dest_reader, dst)
            if src_sha is None:
                src_sha = _file_digest(ctx.reader, src)
        if src_sha and dst_sha and src_sha != dst_sha:
            rv.mismatches.append(
                Mismatch(
                    source_id=rv.source_id,
                    field=field_name,
                    source_value=f"sha256:{src_sha}",
                    dest_value=f"sha256:{dst_sha}",
                    detail="content differs",
                )
            )


def _compare_history(
    ctx: VerifyContext, rv: RunVerify, run: Run, dest_run: Run, src: HistoryStats
) -> None:
    inf = ctx.writer.capabilities.stores_infinity
    dst = history_stats(ctx.dest_reader.iter_history(dest_run), inf)
    differing: set[str] = set()
    for key in sorted(src.streams.keys() | dst.streams.keys()):
        a, b = src.streams.get(key), dst.streams.get(key)
        if a is not None:
            rv.metrics_checked += 1
            rv.points_checked += a.count
        if a is not None and b is not None and (a.count, a.checksum) == (b.count, b.checksum):
            continue
        differing.add(key)
    if not differing:
        return
    # Second pass, only over the differing streams: example points and plot samples.
    src_pts = _collect(ctx.reader.iter_history(run), differing, inf)
    dst_pts = _collect(ctx.dest_reader.iter_history(dest_run), differing, inf)
    dedupes = ctx.writer.capabilities.dedupes_metric_points
    for key in sorted(differing):
        a, b = src.streams.get(key), dst.streams.get(key)
        sp, dp = src_pts.get(key), dst_pts.get(key)
        detail: str | None = None
        if a is None:
            detail = "stream exists only at the destination"
        elif b is None:
            detail = "stream missing at the destination"
        elif sp is not None and dp is not None:
            if dedupes and set(sp) == set(dp):
                rv.notes.append(
                    f"metric {key!r}: the source repeats identical points, which the "
                    "destination stores once; same distinct points on both sides"
                )
                continue
            only_src = list((Counter(sp) - Counter(dp)).elements())
            only_dst = list((Counter(dp) - Counter(sp)).elements())
            parts = []
            if only_src:
                shown = "; ".join(_fmt_point(p) for p in sorted(only_src)[:EXAMPLES])
                parts.append(f"{len(only_src)} only at the source (e.g. {shown})")
            if only_dst:
                shown = "; ".join(_fmt_point(p) for p in sorted(only_dst)[:EXAMPLES])
                parts.append(f"{len(only_dst)} only at the destination (e.g. {shown})")
            detail = "; ".join(parts) or None
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field=f"metric:{key}",
                source_value=a.describe() if a is not None else None,
                dest_value=b.describe() if b is not None else None,
                detail=detail,
            )
        )
        sample = StreamSample(
            source_id=rv.source_id,
            key=key,
            source=_plot_points(sp) if sp else [],
            dest=_plot_points(dp) if dp else [],
        )
        with ctx._lock:
            ctx.samples.append(sample)


def _left_out(ctx: VerifyContext, header: RunHeader) -> str | None:
    """Why the bridge left a source run without a copy on purpose, or None (a finding).

    Deleted at the source (a complete listing of an earlier sync lost it; ``--on-delete``
    decided about its copy), or nothing importable (the reader's NothingToImport, the
    same rule by which a sync skips a run rather than failing it)."""
    if ctx.deleted_at_source.get(header.source_id) is not None:
        return (
            "deleted at the source (an earlier sync's complete listing no longer showed it); "
            "its copy was handled by --on-delete"
        )
    try:
        ctx.reader.read_run(header)
    except NothingToImport as exc:
        return f"nothing importable: {exc}"
    return None


def _unsynced(ctx: VerifyContext, rv: RunVerify, header: RunHeader) -> RunVerify:
    """A source run in scope with no copy: ``unsynced`` unless left out on purpose."""
    reason = _left_out(ctx, header)
    if reason is not None:
        rv.status, rv.reason = "not-copied", reason
        return rv
    rv.status = "unsynced"
    rv.notes.append(
        "no copy: not mapped in state and no destination run carries its identity; "
        "run `bridge sync`"
    )
    return rv


def _kept_deleted(ctx: VerifyContext, source_id: str) -> str | None:
    """Why a missing destination copy is meant to be missing: its deletion was settled
    by taking the destination's side (``dest-wins`` or ``conflicts resolve --take dest``)."""
    settled = ctx.state.resolutions(ctx.dest_uri, source_id).get("run")
    if settled is None or settled.choice != "dest":
        return None
    return f"deleted in the destination; kept deleted (settled by {settled.resolved_by})"


def verify_run(ctx: VerifyContext, header: RunHeader) -> RunVerify:
    """Verify one source run against its destination copy (see the module doc)."""
    rv = RunVerify(source_id=header.source_id, name=header.name, project=header.project.name)
    dest_id, synced_fp = _mapped_dest(ctx, header)
    if dest_id is None:
        return _unsynced(ctx, rv, header)
    rv.dest_id = dest_id
    rv.stale = synced_fp is not None and synced_fp != header.fingerprint
    dest = ctx.writer.get_run(dest_id)
    if dest is None:
        kept = _kept_deleted(ctx, header.source_id)
        if kept is not None:
            rv.status, rv.reason = "not-copied", kept
            return rv
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field="run",
                source_value=header.source_id,
                dest_value=None,
                detail=f"destination run {dest_id} is missing or deleted",
            )
        )
        rv.status = "mismatch"
        return rv
    if not dest.complete:
        rv.mismatches.append(
            Mismatch(
                source_id=rv.source_id,
                field="run",
                source_value="complete",
                dest_value="incomplete",
                detail="a sync stopped part-way; run `bridge sync` to finish it",
            )
        )
    run = ctx.reader.read_run(header)
    if run.parent_source_id and run.parent_dest_id is None:
        parent = ctx.state.get_run(ctx.dest_uri, run.parent_source_id)
        if parent is not None:
            run.parent_dest_id = parent.dest_id
    rendered = ctx.writer.render(run)
    rv.params_checked = _compare_values(rv, "param", rendered.params, dest.params)
    rv.tags_checked = _compare_values(rv, "tag", rendered.tags, dest.tags)

    src = history_stats(ctx.reader.iter_history(run), ctx.writer.capabilities.stores_infinity)
    dest_header = ctx.dest_header(dest_id)
    if dest_header is None:
        rv.status = "error"
        rv.error = f"destination run {dest_id} cannot be read back through {ctx.dest_uri}"
        return rv
    dest_run = ctx.dest_reader.read_run(dest_header)
    _compare_history(ctx, rv, run, dest_run, src)
    models = ctx.logged_models
    accepted = _accepted_manifest_only(ctx, rv)
    _compare_files(
        ctx, rv, _expected_files(run, src.media, models is not None, accepted), dest_run.files
    )
    if models is not None:
        _compare_models(ctx, models, rv, run)
    if rv.mismatches:
        rv.status = "mismatch"
        if rv.stale:
            rv.notes.append("the source changed since the last sync; run `bridge sync` first")
    return rv


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def dest_reader_for(writer: Writer, run_ids: list[str]) -> Reader:
    """A reader on the writer's store, restricted to the given native run ids."""
    from bridge.adapters.base import ReaderOptions
    from bridge.uris import open_reader

    native = sorted({i.rsplit("/", 1)[-1] for i in run_ids})
    return open_reader(f"{writer.scheme}:{writer.target}", ReaderOptions(run_ids=native))


def verify(
    reader: Reader,
    writer: Writer,
    state: StateStore,
    workers: int = 4,
    *,
    dest_reader: Reader | None = None,
    digests: bool = False,
    scope: Scope | None = None,
) -> VerifyReport:
    """Verify every source run the reader lists, ``workers`` runs at a time.

    ``dest_reader`` reads the destination back (default: the writer's URI opened as a
    source, limited to the mapped runs; closed here if made here). ``digests`` hashes file
    content where a side does not record a digest (reads every file; off by default).
    ``scope`` names the filters the reader was opened with (for the report).
    """
    scope = scope or Scope(pair_scope(reader.options), "given")
    report = VerifyReport(
        source=reader.display_uri,
        dest=writer.display_uri,
        scope=scope.describe(),
        filters=scope.filters,
    )
    headers: list[RunHeader] = list(reader.list_runs())
    own_reader = dest_reader is None
    probe = VerifyContext(
        reader=reader, writer=writer, state=state, dest_reader=dest_reader or reader
    )
    mapped: list[str] = []
    for header in headers:
        dest_id, _ = _mapped_dest(probe, header)
        if dest_id is not None:
            mapped.append(dest_id)
    if dest_reader is None:
        dest_reader = dest_reader_for(writer, mapped) if mapped else reader
    ctx = VerifyContext(
        reader=reader,
        writer=writer,
        state=state,
        dest_reader=dest_reader,
        digests=digests,
        logged_models=writer if isinstance(writer, LoggedModels) else None,
        deleted_at_source=state.pair_members(reader.display_uri, writer.display_uri),
        _indexes=probe._indexes,
    )

    def one(header: RunHeader) -> RunVerify:
        try:
            return verify_run(ctx, header)
        except Exception as exc:
            return RunVerify(
                source_id=header.source_id,
                name=header.name,
                project=header.project.name,
                status="error",
                error=_one_line(exc),
            )

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            report.runs = list(pool.map(one, headers))
    finally:
        if own_reader and dest_reader is not reader:
            dest_reader.close()
    report.samples = sorted(ctx.samples, key=lambda s: (s.source_id, s.key))
    if reader.options.registry and isinstance(reader, RegistrySource):
        try:
            if isinstance(writer, ModelRegistry):
                report.runs.extend(verify_models(reader, writer, state, writer.display_uri))
            else:
                report.runs.extend(models_not_copied(reader, writer))
        except Exception as exc:
            report.errors.append(f"registered models: {_one_line(exc)}")
    return report


def models_not_copied(reader: RegistrySource, writer: Writer) -> list[RunVerify]:
    """A destination without a model registry: every source registered model is listed
    as not copied (the sync reports each one so; it is not a finding)."""
    return [
        RunVerify(
            source_id=model.source_id,
            name=model.name,
            project="(registry)",
            status="not-copied",
            reason=(
                f"{writer.display_uri} has no model registry "
                f"({len(model.versions)} versions not copied)"
            ),
        )
        for model in reader.list_registered_models()
    ]


def verify_models(
    reader: RegistrySource, registry: ModelRegistry, state: StateStore, dest_uri: str
) -> list[RunVerify]:
    """Every source registered model: its versions exist in the destination (by the version
    map or identity tag) and each alias is on the version it maps to. A model or version
    without a copy is a finding; an alias the destination cannot hold (the sync's
    alias-not-copied) is listed in the model's notes and is not."""
    out: list[RunVerify] = []
    for model in reader.list_registered_models():
        name = registry.registered_model_name(model)
        rv = RunVerify(source_id=model.source_id, name=model.name, project="(registry)")
        dest = registry.get_registered_model(name)
        if dest is None:  # a finding, like a run without a copy
            rv.status = "unsynced"
            rv.notes.append(f"no registered model {name!r} in the destination; run `bridge sync`")
            out.append(rv)
            continue
        rv.dest_id = name
        labels = {v.version for v in dest.versions}
        by_identity = {v.source_id: v.version for v in dest.versions if v.source_id}
        mapped: dict[str, str] = {}
        for version in model.versions:
            rv.tags_checked += 1
            known = state.get_version(dest_uri, version.source_id)
            label = known[1] if known and known[1] in labels else by_identity.get(version.source_id)
            if label is None:
                rv.mismatches.append(
                    Mismatch(
                        source_id=model.source_id,
                        field=f"version:{version.artifact.version or version.index}",
                        source_value=version.source_id,
                        dest_value=None,
                        detail=f"no version of {name!r} is its copy",
                    )
                )
                continue
            mapped[version.source_id] = label
        for version in model.versions:
            for alias in version.aliases:
                why = registry.alias_problem(alias)
                if why:  # reported by the sync as alias-not-copied: listed, not a finding
                    rv.notes.append(f"alias {alias!r} not copied: {why}")
                    continue
                rv.tags_checked += 1
                want, have = mapped.get(version.source_id), dest.aliases.get(alias)
                if want is not None and want != have:
                    rv.mismatches.append(
                        Mismatch(
                            source_id=model.source_id,
                            field=f"alias:{alias}",
                            source_value=want,
                            dest_value=have,
                            detail=f"source alias on {version.artifact.version or version.index}",
                        )
                    )
        if rv.mismatches:
            rv.status = "mismatch"
        out.append(rv)
    return out


def iter_lines(report: VerifyReport) -> Iterator[str]:
    """The mismatch lines (run, field, source value, dest value) as tab-separated text."""
    for m in report.mismatches:
        yield "\t".join([m.source_id, m.field, str(m.source_value), str(m.dest_value)])
