"""MLflow 3 traces written faithfully into an MLflow store, through the store's own
trace-logging API — the same calls on SQL stores and on ``mlflow server`` (REST, spans
over OTLP ``/v1/traces``):

* ``start_trace(TraceInfo)``: the trace info under the source's trace id (request time,
  duration, state, previews, client request id, tags, metadata). On an id it already
  holds, MLflow's SQL store overwrites the info and merges tags and metadata — used again
  after ``log_spans``, which derives state and previews from the root span, so the copy
  keeps the source's values.
* ``log_spans(experiment_id, spans)``: the spans, ids and nanosecond times as the source
  has them (``Span.from_dict``); an existing span id is replaced (upsert).
* ``create_assessment``: feedback and expectations, times kept (the store takes
  ``create_time_ms``/``last_update_time_ms`` as given); each copy carries the source
  assessment's id in its metadata (``bridge.source_assessment_id``), so overrides point at
  the copy's ids and a re-sync adds only new ones.

Every copy carries ``bridge.source_id``. Where the destination cannot keep the trace id
(it holds that id already for another source, e.g. source and destination are the same
store), the copy gets a new id and the source's id in the tag ``bridge.source_trace_id``.
"""

from __future__ import annotations

import uuid
from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindWriter
from bridge.adapters.mlflow.traces_convert import (
    MODEL_ID,
    SOURCE_RUN,
    mlflow_assessment,
    mlflow_span,
    neutral_trace,
    otel_trace_hex,
)
from bridge.adapters.mlflow.traces_find import CopyIndex, spans_may_alter
from bridge.adapters.mlflow.traces_plan import (
    SOURCE_ASSESSMENT_KEY,
    SOURCE_TRACE_TAG,
    diff_trace,
)
from bridge.errors import BridgeError
from bridge.schema_items import Assessment, Item, ItemHeader, Trace

MODELS_PREFIX = "models:/"
SPAN_BATCH = 500  # spans per log_spans call


class TraceWriter(KindWriter):
    """Traces into the MLflow store behind ``store.client``."""

    @property
    def backend(self) -> Any:
        """The tracking store (SQLAlchemy or REST) the writer's client talks to."""
        return self.store.client._tracking_client.store

    # ------------------------------------------------------------------ find

    def find(self, header: ItemHeader, links: ItemLinks) -> str | None:
        home = self._home(header)
        if home is not None:
            return home if self._info(home) is not None else None
        trace_id = str(header.locator.get("trace_id") or header.name)
        exp = links.project(header.projects[0].source_id) if header.projects else None
        hit = self.copies.copy_in(exp, header.source_id) if exp is not None else None
        if hit == trace_id:
            return hit
        info = self.copies.info(trace_id)  # a copy under the source's id, any experiment
        if info is not None and (info.tags or {}).get(ITEM_SOURCE_TAG) == header.source_id:
            return trace_id
        return hit

    def prepare(self, headers: list[ItemHeader]) -> None:
        self.copies.expect([str(h.locator.get("trace_id") or h.name) for h in headers])

    @property
    def copies(self) -> CopyIndex:
        """The copies already in the destination's experiments (traces_find.py)."""
        index = self.__dict__.get("_copies")
        if index is None:
            made = CopyIndex(self.store.client, self._info, lambda: self.backend)
            index = self.__dict__.setdefault("_copies", made)
        return index

    def _home(self, header: ItemHeader) -> str | None:
        """The id of this destination's trace that the source trace is a copy of (its
        ``origin``, a two-way sync coming back), or None."""
        origin = str(header.locator.get("origin") or "")
        mine = self._sid("trace/")
        return origin.removeprefix(mine) if origin.startswith(mine) else None

    def _info(self, trace_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.backend.get_trace_info(trace_id)
        except MlflowException:
            return None

    # ------------------------------------------------------------------ plan

    def plan(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        assert isinstance(item, Trace)
        self._check_store()
        home = self._home(item.header)
        if home is not None:  # never copied back where it came from
            return ItemChange(action="unchanged", dest_id=dest_id or home)
        warnings: list[str] = []
        meta = self._dest_metadata(item, links, warnings)
        dropped = item.header.locator.get("dropped_assessments") or []
        if dropped:
            warnings.append(
                f"trace {item.trace_id}: {len(dropped)} issue assessment(s) not copied "
                f"({', '.join(dropped)}): they name issues of the source's store"
            )
        if dest_id is not None:
            copy = self._read(dest_id)
            if copy is not None:
                change = diff_trace(item, copy, dest_id, meta, warnings)
                if change.action != "unchanged":  # the conflict check reads it back next
                    self.copies.keep_read(dest_id, copy)
                return change
        trace_id = item.trace_id
        if otel_trace_hex(trace_id) is None or self.copies.take_info(trace_id) is not None:
            trace_id = f"tr-{uuid.uuid4().hex}"
            warnings.append(
                f"trace {item.trace_id}: the destination holds that id already (or cannot "
                f"take it): copied as {trace_id}, the source id kept in tag {SOURCE_TRACE_TAG}"
            )
        changes = [f"+{len(item.spans)} spans"]
        if item.assessments:
            changes.append(f"+{len(item.assessments)} assessments")
        return ItemChange(
            action="create",
            changes=changes,
            warnings=warnings + _validity_warnings(item),
            payload={
                "trace_id": trace_id,
                "metadata": meta,
                "spans": [s.span_id for s in item.spans],
                "assessments": [a.source_assessment_id for a in item.assessments],
                "info": True,
            },
        )

    def stored(self) -> bool:
        """False where MLflow has no span logging (its file store): the engine then reports
        the traces not copied, once."""
        from mlflow.store.tracking.abstract_store import AbstractStore

        return type(self.backend).log_spans is not AbstractStore.log_spans

    def _check_store(self) -> None:
        """Refuse, naming the store, where MLflow has no span logging (its file store)."""
        if not self.stored():
            raise BridgeError(
                f"{self.store.display_uri}: this MLflow store ({type(self.backend).__name__}) "
                "cannot store trace spans; copy traces into a database or an mlflow server"
            )

    def _dest_metadata(self, item: Trace, links: ItemLinks, warnings: list[str]) -> dict[str, str]:
        """The copy's metadata: the source's, links rewritten to the copies they point to."""
        meta = dict(item.metadata)
        if item.run_source_id is not None:
            run = links.run(item.run_source_id)
            if run is None:
                warnings.append(
                    f"trace {item.trace_id}: linked run {item.run_source_id} not copied: "
                    "link left out"
                )
            else:
                meta[SOURCE_RUN] = run
        if item.model_source_id is not None:
            model = links.model(item.model_source_id)
            if model is None or not model.startswith(MODELS_PREFIX):
                warnings.append(
                    f"trace {item.trace_id}: linked logged model {item.model_source_id} "
                    "not copied: link left out"
                )
            else:
                meta[MODEL_ID] = model.removeprefix(MODELS_PREFIX)
        return meta

    # ------------------------------------------------------------------ apply

    def apply(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        assert isinstance(item, Trace)
        if change.action == "unchanged":
            assert change.dest_id is not None
            return change.dest_id
        pay = change.payload
        trace_id: str = pay["trace_id"]
        self.copies.take_read(trace_id)  # written now: a read-back reads it again
        exp = self._experiment(item, trace_id, change, links)
        info = self._trace_info(item, trace_id, exp, pay["metadata"])
        created = change.action == "create"
        if created:  # first, so the copy carries its identity before anything else
            self.backend.start_trace(info)
            self.copies.added(exp, item.header.source_id, trace_id)
        by_id = {s.span_id: s for s in item.spans}
        spans = [mlflow_span(by_id[sid], trace_id) for sid in pay["spans"]]
        for at in range(0, len(spans), SPAN_BATCH):  # bounded requests (OTLP on a server)
            self.backend.log_spans(exp, spans[at : at + SPAN_BATCH])
        if (pay.get("info") and not created) or (spans and spans_may_alter(info, spans)):
            self.backend.start_trace(info)  # the source's info over what log_spans derived
        for key in pay.get("drop_tags", []):
            self.backend.delete_trace_tag(trace_id, key)
        self._assessments(item, trace_id, pay)
        return trace_id

    def _experiment(self, item: Trace, trace_id: str, change: ItemChange, links: ItemLinks) -> str:
        if change.action == "update":
            info = self._info(trace_id)
            if info is not None:
                return str(info.experiment_id)
        exp = links.project(item.header.projects[0].source_id) if item.header.projects else None
        if exp is None:
            raise BridgeError(
                f"trace {item.trace_id}: its experiment has no copy at "
                f"{self.store.display_uri}: nothing to write the trace into"
            )
        return exp

    def _trace_info(self, item: Trace, trace_id: str, exp: str, meta: dict[str, str]) -> Any:
        from mlflow.entities import TraceInfo, TraceLocation, TraceState

        tags = {**item.tags, ITEM_SOURCE_TAG: item.header.source_id}
        if trace_id != item.trace_id:
            tags[SOURCE_TRACE_TAG] = item.trace_id
        return TraceInfo(
            trace_id=trace_id,
            trace_location=TraceLocation.from_experiment_id(exp),
            request_time=item.request_time_ms,
            execution_duration=item.execution_duration_ms,
            state=TraceState(item.state),
            request_preview=item.request_preview,
            response_preview=item.response_preview,
            client_request_id=item.client_request_id,
            trace_metadata=dict(meta),
            tags=tags,
        )

    def _assessments(self, item: Trace, trace_id: str, pay: dict[str, Any]) -> None:
        """Delete those gone at the source; create the new ones and again the changed ones
        (an overridden one before its override, so the store marks it invalid as the
        source has it); update in place the changed ones an override points at."""
        ids: dict[str, str] = dict(pay.get("assessment_ids", {}))
        by_id = {a.source_assessment_id: a for a in item.assessments}
        for dest_aid in pay.get("delete", []):
            self.backend.delete_assessment(trace_id, dest_aid)
        for aid in pay.get("replace", []):
            self.backend.delete_assessment(trace_id, ids.pop(aid))
        todo = [by_id[aid] for aid in [*pay.get("assessments", []), *pay.get("replace", [])]]
        for a in _override_order(todo):
            entity = mlflow_assessment(
                a, trace_id, ids.get(a.overrides or "", a.overrides), SOURCE_ASSESSMENT_KEY
            )
            ids[a.source_assessment_id] = self._create_assessment(
                entity, a.source_assessment_id if trace_id == item.trace_id else None
            )
        for aid in pay.get("updates", []):
            a = by_id[aid]
            self._update_assessment(trace_id, ids[aid], a)

    def _create_assessment(self, entity: Any, keep_id: str | None) -> str:
        """Create it under the source's id where the copy kept the trace id (the stores
        take a given id), else — or when the destination refuses that id — a new one."""
        if keep_id is not None:
            entity.assessment_id = keep_id
            try:
                return str(self.backend.create_assessment(entity).assessment_id)
            except Exception:  # noqa: BLE001 - the id is taken: a new one (real errors recur)
                entity.assessment_id = None
        return str(self.backend.create_assessment(entity).assessment_id)

    def _update_assessment(self, trace_id: str, dest_aid: str, a: Assessment) -> None:
        from mlflow.entities.assessment import ExpectationValue, FeedbackValue

        value: dict[str, Any] = {}
        if a.kind == "expectation":
            value["expectation"] = ExpectationValue(value=a.value)
        else:
            value["feedback"] = FeedbackValue(value=a.value)
        self.backend.update_assessment(
            trace_id,
            dest_aid,
            name=a.name,
            rationale=a.rationale,
            metadata={**a.metadata, SOURCE_ASSESSMENT_KEY: a.source_assessment_id},
            **value,
        )

    # ------------------------------------------------------------------ read back

    def _read(self, dest_id: str) -> Trace | None:
        """The copy as a neutral record, bookkeeping still in (tags, assessment metadata)."""
        from mlflow.exceptions import MlflowException

        try:
            trace = self.store.client.get_trace(dest_id)
        except MlflowException:
            return None
        tags = dict(trace.info.tags or {})
        header = ItemHeader(
            kind="trace",
            source_id=tags.get(ITEM_SOURCE_TAG) or self._sid(f"trace/{dest_id}"),
            name=tags.get(SOURCE_TRACE_TAG) or dest_id,
            fingerprint="",
        )
        return neutral_trace(trace, header, self._run_sid, self._model_sid)

    def read_back(self, dest_id: str) -> Item | None:
        copy = self.copies.take_read(dest_id) or self._read(dest_id)
        if copy is None:
            return None
        copy.trace_id = copy.tags.pop(SOURCE_TRACE_TAG, copy.trace_id)
        copy.tags.pop(ITEM_SOURCE_TAG, None)
        to_source: dict[str, str] = {}
        for a in copy.assessments:
            source_aid = a.metadata.pop(SOURCE_ASSESSMENT_KEY, None)
            if source_aid is not None:
                to_source[a.source_assessment_id] = source_aid
        for a in copy.assessments:
            a.source_assessment_id = to_source.get(a.source_assessment_id, a.source_assessment_id)
            if a.overrides is not None:
                a.overrides = to_source.get(a.overrides, a.overrides)
        return copy

    def _sid(self, local: str) -> str:
        return object_source_id(self.store.display_uri, local)

    def _run_sid(self, run_id: str) -> str:
        """A linked run by its source identity (its copy's identity tag), else its own."""
        try:
            run = self.store.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a dangling link is named by its id
            return self._sid(run_id)
        return str(run.data.tags.get(ITEM_SOURCE_TAG) or self._sid(run_id))

    def _model_sid(self, model_id: str) -> str:
        try:
            model = self.store.client.get_logged_model(model_id)
        except Exception:  # noqa: BLE001 - a dangling link is named by its id
            return self._sid(f"model/{model_id}")
        return str((model.tags or {}).get(ITEM_SOURCE_TAG) or self._sid(f"model/{model_id}"))


def _override_order(todo: list[Assessment]) -> list[Assessment]:
    """Overridden assessments before those that override them; else by creation time."""
    pending = sorted(todo, key=lambda a: (a.create_time_ms or 0, a.source_assessment_id))
    done: set[str] = set()
    waiting = {a.source_assessment_id for a in pending}
    out: list[Assessment] = []
    while pending:
        for a in pending:
            if a.overrides not in waiting or a.overrides in done:
                break
        else:
            a = pending[0]  # a cycle cannot happen in MLflow; never loop forever
        pending.remove(a)
        done.add(a.source_assessment_id)
        out.append(a)
    return out


def _validity_warnings(item: Trace) -> list[str]:
    """Assessments the source marks invalid without another one overriding them: the
    store marks an assessment invalid only when an override is created."""
    overridden = {a.overrides for a in item.assessments if a.overrides}
    return [
        f"trace {item.trace_id}: assessment {a.name} ({a.source_assessment_id}) is invalid "
        "at the source but nothing copied overrides it: the copy stays valid"
        for a in item.assessments
        if not a.valid and a.source_assessment_id not in overridden
    ]
