"""Check that every synced run's destination copy is what the mapping promises.

``verify`` reads both sides and compares, for each source run the state (or the
destination's identity tag) maps to a destination run: that the run exists and is complete;
the params/tags the writer renders for the source run against the destination's current
values (the keys the writer declares bookkeeping, ``Writer.bookkeeping_keys``, which
change by design, excluded); per metric stream the point count and an order-independent
checksum over (step, timestamp, value); and run files (presence, size, digest where both
sides know it). Workspace items (traces, prompts, evaluation datasets) are compared by
content digest, source item against the copy the writer reads back (``verify/items.py``).

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

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bridge.adapters.base import ReaderOptions
from bridge.engine.context import Features
from bridge.engine.text import one_line
from bridge.engine.verify.context import VerifyContext, mapped_dest
from bridge.engine.verify.items import verify_items
from bridge.engine.verify.models import models_not_copied, verify_models
from bridge.engine.verify.report import (
    FINDINGS,
    STATUS_ORDER,
    ItemVerify,
    Mismatch,
    RunStatusV,
    RunVerify,
    StreamSample,
    VerifyReport,
)
from bridge.engine.verify.runs import verify_run
from bridge.engine.verify.scope import (
    MAPPING_KEY,
    SCOPE_FIELDS,
    Scope,
    describe_filters,
    pair_scope,
    recorded_mapping,
    scope_for,
)
from bridge.engine.verify.streams import (
    HistoryStats,
    StreamStats,
    history_stats,
    normalize_value,
)
from bridge.schema import RunHeader
from bridge.uris import open_reader

if TYPE_CHECKING:
    from bridge.adapters.base import Reader, Writer
    from bridge.state import StateStore

__all__ = [
    "FINDINGS",
    "MAPPING_KEY",
    "SCOPE_FIELDS",
    "STATUS_ORDER",
    "HistoryStats",
    "ItemVerify",
    "Mismatch",
    "RunStatusV",
    "RunVerify",
    "Scope",
    "StreamSample",
    "StreamStats",
    "VerifyContext",
    "VerifyReport",
    "describe_filters",
    "dest_reader_for",
    "history_stats",
    "models_not_copied",
    "normalize_value",
    "pair_scope",
    "recorded_mapping",
    "scope_for",
    "verify",
    "verify_items",
    "verify_models",
    "verify_run",
]


def dest_reader_for(writer: Writer, run_ids: list[str]) -> Reader:
    """A reader on the writer's store, restricted to the given native run ids (a
    path-like destination id ends in the native id)."""
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
    features = Features.of(reader, writer, None)  # the optional features, checked once
    headers: list[RunHeader] = list(reader.list_runs())
    own_reader = dest_reader is None
    probe = VerifyContext(
        reader=reader, writer=writer, state=state, dest_reader=dest_reader or reader
    )
    mapped: list[str] = []
    for header in headers:
        dest_id, _ = mapped_dest(probe, header)
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
        logged_models=features.logged_models,
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
                error=one_line(exc),
            )

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            report.runs = list(pool.map(one, headers))
    finally:
        if own_reader and dest_reader is not reader:
            dest_reader.close()
    report.samples = sorted(ctx.samples, key=lambda s: (s.source_id, s.key))
    source = features.registry_source
    if reader.options.registry and source is not None:
        try:
            if features.registry is not None:
                report.runs.extend(
                    verify_models(source, features.registry, state, writer.display_uri)
                )
            else:
                report.runs.extend(models_not_copied(source, writer))
        except Exception as exc:
            report.errors.append(f"registered models: {one_line(exc)}")
    # Workspace items (traces, prompts, datasets): digests of source and copy (items.py).
    verify_items(
        report, reader, writer, state, logged_models=features.logged_models, workers=workers
    )
    return report
