"""Neutral records for workspace items beyond runs: traces, prompts, evaluation datasets,
logged models no run made.

Like :mod:`bridge.schema`, this is the bottom layer (it imports nothing of the bridge):
readers list :class:`ItemHeader` cheaply, read one item into a :class:`Trace`,
:class:`Prompt` or :class:`EvalDataset`, and writers store it. Values are plain JSON;
times keep the source's precision (span times in nanoseconds, the rest in ms).

:func:`item_digest` is what ``bridge verify`` compares between a source item and its copy:
content only, never the ids a destination must assign anew (assessment ids, dataset record
ids), so an exact copy has the same digest on both sides.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

ItemKind = Literal["trace", "prompt", "dataset", "model"]
ITEM_KINDS: tuple[ItemKind, ...] = ("trace", "prompt", "dataset", "model")


class ItemProject(BaseModel):
    """The container (experiment) an item belongs or is linked to, in the same form a
    run's :class:`bridge.schema.Project` has (``source_id`` equal), so the destination
    maps it to the same copy as the runs."""

    source_id: str
    name: str


class ItemHeader(BaseModel):
    """What a reader lists cheaply: enough to decide whether an item needs reading."""

    kind: ItemKind
    source_id: str  # e.g. "mlflow:URI#trace/tr-…", "mlflow:URI#prompt/NAME", "…#dataset/d-…"
    name: str  # for reports: trace id, prompt name, dataset name
    # Experiments it belongs to (a trace: one) or is linked with (a dataset: any); [] for
    # workspace-level items (prompts).
    projects: list[ItemProject] = Field(default_factory=list)
    # Changes whenever anything a copy holds changes (new span, tag, assessment, version,
    # alias, record). Equal fingerprints mean "nothing to do".
    fingerprint: str
    locator: dict[str, Any] = Field(default_factory=dict)  # reader-private


class SpanEvent(BaseModel):
    name: str
    timestamp_ns: int
    attributes: dict[str, Any] = Field(default_factory=dict)


class SpanLink(BaseModel):
    """An OpenTelemetry span link (MLflow keeps them: ``start_span(links=...)``): a span
    this one relates to, possibly in another trace."""

    trace_id: str  # the linked span's trace, as the source names it
    span_id: str
    attributes: dict[str, Any] | None = None


class Span(BaseModel):
    """One span, as OpenTelemetry has it: ids in hex, times in ns since the epoch."""

    span_id: str
    parent_id: str | None = None
    name: str
    span_type: str | None = None
    start_ns: int
    end_ns: int | None = None  # None: still open
    status_code: str = "UNSET"  # "OK", "ERROR", "UNSET"
    status_message: str = ""
    inputs: Any = None
    outputs: Any = None
    # Every other attribute, JSON values (inputs/outputs/type are not repeated here).
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)
    links: list[SpanLink] = Field(default_factory=list)


class Assessment(BaseModel):
    """Feedback or an expectation on a trace (or one of its spans)."""

    source_assessment_id: str  # the source's id; a copy gets its own id
    name: str
    kind: Literal["feedback", "expectation"]
    value: Any = None
    error: dict[str, Any] | None = None  # feedback that failed: code, message
    source_type: str  # "HUMAN", "LLM_JUDGE", "CODE"
    source_name: str | None = None  # who: a user, a judge's model
    rationale: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    span_id: str | None = None
    create_time_ms: int | None = None
    last_update_time_ms: int | None = None
    overrides: str | None = None  # the source id of the assessment this one overrides
    valid: bool = True  # False once overridden


class Trace(BaseModel):
    header: ItemHeader
    trace_id: str  # the source's own id
    request_time_ms: int
    execution_duration_ms: int | None = None
    state: str = "OK"  # "OK", "ERROR", "IN_PROGRESS"
    request_preview: str | None = None
    response_preview: str | None = None
    client_request_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # The source's metadata, minus the links below (which name source objects).
    metadata: dict[str, str] = Field(default_factory=dict)
    run_source_id: str | None = None  # the linked run, by source identity
    model_source_id: str | None = None  # the linked logged model, by source identity
    spans: list[Span] = Field(default_factory=list)
    assessments: list[Assessment] = Field(default_factory=list)


class PromptVersion(BaseModel):
    version: int  # the source's own number
    template: str | list[dict[str, Any]]  # text, or chat messages (role, content)
    response_format: dict[str, Any] | None = None
    commit_message: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    # What MLflow calls the version's model config (model name, temperature ...).
    generation_config: dict[str, Any] | None = None
    created_at_ms: int | None = None


class Prompt(BaseModel):
    header: ItemHeader
    name: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    versions: list[PromptVersion] = Field(default_factory=list)  # source order
    aliases: dict[str, int] = Field(default_factory=dict)  # alias -> source version
    # Experiments the prompt is linked with (MLflow keeps their ids in a prompt tag), by the
    # source identity of each experiment: a copy links the copies of those experiments.
    linked_projects: list[str] = Field(default_factory=list)


class DatasetRecord(BaseModel):
    source_record_id: str | None = None  # the source's id; a copy gets its own id
    inputs: dict[str, Any] = Field(default_factory=dict)
    expectations: dict[str, Any] | None = None
    outputs: Any = None
    tags: dict[str, str] | None = None
    source: dict[str, Any] | None = None  # where the record came from (type, data)
    created_time_ms: int | None = None
    last_update_time_ms: int | None = None


class EvalDataset(BaseModel):
    header: ItemHeader  # projects: the experiments it is linked to
    name: str
    tags: dict[str, str] = Field(default_factory=dict)
    columns_json: str | None = None  # the record schema the source computed
    profile_json: str | None = None
    created_by: str | None = None
    created_time_ms: int | None = None
    records: list[DatasetRecord] = Field(default_factory=list)


class ModelMetric(BaseModel):
    """One metric row of a logged model (MLflow: ``logged_model_metrics``; every row was
    logged by a run, named by its source identity)."""

    key: str
    value: float
    step: int = 0
    timestamp_ms: int
    run_source_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class ItemFile(BaseModel):
    path: str  # "/"-separated, relative to the item's file root
    size: int | None = None


class LoggedModelItem(BaseModel):
    """A logged model no run made (MLflow 3 ``initialize_logged_model`` outside a run):
    the models a run made travel with the run instead. Files are listed (a manifest); the
    reader that made the record attaches how to open each one (:meth:`open_file`), so
    content streams from the source and never sits in the record."""

    header: ItemHeader  # projects: the experiment it belongs to
    model_id: str  # the source's own id; a copy gets its own
    name: str
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    status: str = "PENDING"  # "PENDING", "READY", "FAILED"
    model_type: str | None = None
    source_run_id: str | None = None  # by source identity (None for the models listed here)
    metrics: list[ModelMetric] = Field(default_factory=list)
    files: list[ItemFile] = Field(default_factory=list)
    created_time_ms: int | None = None
    _opener: Any = PrivateAttr(default=None)

    def attach_opener(self, opener: Any) -> None:
        """``opener(path)`` returns a binary stream of one file (set by the reader)."""
        self._opener = opener

    def open_file(self, path: str) -> Any:
        if self._opener is None:
            raise FileNotFoundError(f"logged model {self.name}: no content source for {path!r}")
        return self._opener(path)


Item = Trace | Prompt | EvalDataset | LoggedModelItem


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def span_tree_digest(spans: list[Span]) -> str:
    """The span tree's digest: every span's id, parent, name, type, times (ns), status,
    inputs/outputs, attributes, events and links, in span-id order."""
    return _digest([s.model_dump(mode="json") for s in sorted(spans, key=lambda s: s.span_id)])


def item_digest(item: Item) -> str:
    """Content digest of an item, the same for a faithful copy as for its source: ids a
        destination assigns itself (assessments, records) and the item's header are left out;
        links count by presence (their ids differ on each side), and so do what a destination
    stamps itself (creation times, computed profiles). A writer's ``read_item_back`` returns
    the copy without its own bookkeeping (identity tags), so the two digests are comparable."""
    if isinstance(item, Trace):
        body = item.model_dump(
            mode="json",
            exclude={"header", "spans", "assessments", "run_source_id", "model_source_id"},
        )
        body["linked"] = [item.run_source_id is not None, item.model_source_id is not None]
        body["spans"] = span_tree_digest(item.spans)
        body["assessments"] = sorted(
            _digest(a.model_dump(mode="json", exclude={"source_assessment_id", "overrides"}))
            for a in item.assessments
        )
        return _digest(body)
    if isinstance(item, LoggedModelItem):
        body = item.model_dump(
            mode="json", exclude={"header", "model_id", "metrics", "created_time_ms"}
        )
        body["source_run_id"] = item.source_run_id is not None
        body["metrics"] = sorted(
            _digest({**m.model_dump(mode="json"), "run_source_id": m.run_source_id is not None})
            for m in item.metrics
        )
        return _digest(body)
    if isinstance(item, Prompt):
        body = item.model_dump(mode="json", exclude={"header"})
        for v in body["versions"]:
            v.pop("created_at_ms", None)  # a registry stamps its own creation time
        return _digest(body)
    body = item.model_dump(mode="json", exclude={"header", "records", *DATASET_STAMPS})
    body["records"] = sorted(
        _digest(r.model_dump(mode="json", exclude={"source_record_id", *RECORD_STAMPS}))
        for r in item.records
    )
    return _digest(body)


# What a destination stamps itself when it stores a dataset (creation, computed profile):
# left out of the digest; writers keep the source's values in tags where they can.
DATASET_STAMPS = {"created_time_ms", "created_by", "profile_json"}
RECORD_STAMPS = {"created_time_ms", "last_update_time_ms"}
