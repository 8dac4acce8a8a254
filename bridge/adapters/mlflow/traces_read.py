"""MLflow 3 traces of the experiments in scope, as neutral :class:`Trace` records.

Listing uses MLflow's trace search without spans (one page of infos at a time); the
fingerprint hashes what the listing returns — info, tags, metadata, state and assessments
(with validity and overrides) — so a new tag, state or assessment re-reads the trace.
``read`` fetches the whole trace (spans included) with ``get_trace``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindReader
from bridge.adapters.mlflow.traces_convert import listing_fingerprint, neutral_trace
from bridge.schema_items import Item, ItemHeader, ItemProject, Trace

PAGE = 100
BRIDGE_PREFIX = "bridge."


def since_ms(since: str | None) -> int | None:
    """``--since`` (an ISO date or time; UTC unless it names a zone) in ms since the epoch."""
    if not since:
        return None
    when = datetime.fromisoformat(since)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


class TraceReader(KindReader):
    """Traces of ``store.experiments()``, requested since ``store.options.since``."""

    def list(self) -> Iterator[ItemHeader]:
        store = self.store
        start = since_ms(store.options.since)
        where = f"trace.timestamp_ms >= {start}" if start is not None else None
        for exp in store.experiments():
            project = store.project_of(exp)
            owner = ItemProject(source_id=project.source_id, name=project.name)
            token: str | None = None
            while True:
                page = store.client.search_traces(
                    locations=[str(exp.experiment_id)],
                    filter_string=where,
                    max_results=PAGE,
                    order_by=["timestamp_ms ASC"],
                    page_token=token,
                    include_spans=False,
                )
                for trace in page:
                    yield self._header(trace.info, owner, str(exp.experiment_id))
                token = page.token
                if not token:
                    break

    def _header(self, info: Any, owner: ItemProject, experiment_id: str) -> ItemHeader:
        return ItemHeader(
            kind="trace",
            source_id=object_source_id(self.store.display_uri, f"trace/{info.trace_id}"),
            name=info.trace_id,
            projects=[owner],
            fingerprint=listing_fingerprint(info),
            locator={"trace_id": info.trace_id, "experiment_id": experiment_id},
        )

    def read(self, header: ItemHeader) -> Item:
        trace_id = header.locator.get("trace_id") or header.name
        trace = self.store.client.get_trace(trace_id)
        display = self.store.display_uri
        item = neutral_trace(
            trace,
            header,
            run_sid=lambda run_id: object_source_id(display, run_id),
            model_sid=lambda model_id: object_source_id(display, f"model/{model_id}"),
        )
        return without_bookkeeping(item)


def without_bookkeeping(item: Trace) -> Trace:
    """A trace an earlier bridge pass wrote reads under its own identity: its ``bridge.*``
    tags and assessment metadata (identity, source ids) would give its copy a wrong one.
    The identity it carried stays in ``header.locator["origin"]``, so a writer can tell a
    copy of one of its own traces (two-way syncs) and not copy it back."""
    origin = item.tags.get(ITEM_SOURCE_TAG)
    if origin is not None:
        item.header.locator["origin"] = origin
    item.tags = {k: v for k, v in item.tags.items() if not k.startswith(BRIDGE_PREFIX)}
    for a in item.assessments:
        a.metadata = {k: v for k, v in a.metadata.items() if not k.startswith(BRIDGE_PREFIX)}
    return item
