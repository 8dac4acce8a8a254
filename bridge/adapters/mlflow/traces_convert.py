"""MLflow 3 traces <-> neutral :class:`~bridge.schema_items.Trace` records, both ways.

Shared by the trace reader (a source trace into a neutral record) and the trace writer
(a neutral record into MLflow entities for ``start_trace``/``log_spans``/
``create_assessment``, and its copy back into a neutral record for ``bridge verify``).

Span attributes: MLflow stores each as a JSON string; the neutral record holds the decoded
value when decoding and re-encoding gives the stored text back byte for byte, else the
stored value as is (written back JSON-encoded: an attribute another OpenTelemetry client
stored as a bare string or number comes back as JSON text). ``mlflow.spanInputs``/``spanOutputs``/``spanType`` become the span's
``inputs``/``outputs``/``span_type``; ``mlflow.traceRequestId`` is the trace's id (not
repeated per span, so a copy under a new trace id reads the same).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any, Literal

from bridge.schema_items import Assessment, ItemHeader, Span, SpanEvent, SpanLink, Trace

SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
SPAN_TYPE = "mlflow.spanType"
SPAN_TRACE_ID = "mlflow.traceRequestId"
SOURCE_RUN = "mlflow.sourceRun"
MODEL_ID = "mlflow.modelId"
# Stamped by the store that holds the trace (its own artifact folder, where it keeps the
# spans, that start_trace finalized it): neither source content nor copied.
STORE_TAGS = frozenset({"mlflow.artifactLocation", "mlflow.trace.spansLocation"})
STORE_METADATA = frozenset({"mlflow.trace.infoFinalized"})


def dump_value(value: Any) -> str:
    """A span attribute's stored text, as MLflow's tracing writes it."""
    from mlflow.tracing.utils import TraceJSONEncoder

    return json.dumps(value, cls=TraceJSONEncoder, ensure_ascii=False)


def load_value(raw: Any) -> Any:
    """The neutral value of a stored span attribute (see the module docstring)."""
    if not isinstance(raw, str):
        return _plain(raw)
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if dump_value(value) == raw else raw


def neutral_span(span: Any) -> Span:
    raw = dict(span._span.attributes or {})
    raw.pop(SPAN_TRACE_ID, None)
    inputs = load_value(raw.pop(SPAN_INPUTS)) if SPAN_INPUTS in raw else None
    outputs = load_value(raw.pop(SPAN_OUTPUTS)) if SPAN_OUTPUTS in raw else None
    span_type = load_value(raw.pop(SPAN_TYPE)) if SPAN_TYPE in raw else None
    status = span.status
    return Span(
        span_id=span.span_id,
        parent_id=span.parent_id,
        name=span.name,
        span_type=span_type if isinstance(span_type, str) else None,
        start_ns=int(span.start_time_ns),
        end_ns=int(span.end_time_ns) if span.end_time_ns is not None else None,
        status_code=str(getattr(status.status_code, "value", status.status_code)),
        status_message=status.description or "",
        inputs=inputs,
        outputs=outputs,
        attributes={k: load_value(v) for k, v in sorted(raw.items())},
        events=[
            SpanEvent(
                name=e.name,
                timestamp_ns=int(e.timestamp),
                attributes={k: _plain(v) for k, v in (e.attributes or {}).items()},
            )
            for e in span.events
        ],
        links=[
            SpanLink(trace_id=k.trace_id, span_id=k.span_id, attributes=k.attributes)
            for k in getattr(span, "links", None) or []
        ],
    )


def _plain(value: Any) -> Any:
    """An event attribute as stored (OpenTelemetry values, not JSON text): sequences as lists."""
    return list(value) if isinstance(value, tuple) else value


def neutral_assessment(a: Any) -> Assessment | None:
    """None for kinds the neutral record has no room for (MLflow's issue assessments)."""
    kind: Literal["feedback", "expectation"]
    if a.feedback is not None:
        kind, value = "feedback", a.feedback.value
        error = a.feedback.error.to_dictionary() if a.feedback.error else None
    elif a.expectation is not None:
        kind, value, error = "expectation", a.expectation.value, None
    else:
        return None
    source = a.source
    return Assessment(
        source_assessment_id=a.assessment_id,
        name=a.name,
        kind=kind,
        value=value,
        error=error,
        source_type=str(getattr(source.source_type, "value", source.source_type)),
        source_name=source.source_id,
        rationale=a.rationale,
        metadata=dict(a.metadata or {}),
        span_id=a.span_id,
        create_time_ms=a.create_time_ms,
        last_update_time_ms=a.last_update_time_ms,
        overrides=a.overrides,
        valid=bool(a.valid) if a.valid is not None else True,
    )


def state_name(state: Any) -> str:
    return str(getattr(state, "value", state))


def neutral_trace(trace: Any, header: ItemHeader, run_sid: Any, model_sid: Any) -> Trace:
    """``trace`` (an MLflow Trace with spans) as a neutral record; ``run_sid``/``model_sid``
    map a linked run id / logged model id to its source identity."""
    info = trace.info
    meta = {k: v for k, v in (info.trace_metadata or {}).items() if k not in STORE_METADATA}
    run_id = meta.pop(SOURCE_RUN, None)
    model_id = meta.pop(MODEL_ID, None)
    found = [neutral_assessment(a) for a in info.assessments or []]
    dropped = [
        a.assessment_id for a, n in zip(info.assessments or [], found, strict=True) if n is None
    ]
    if dropped:  # MLflow "issue" assessments: no neutral form; the writer names them
        header.locator["dropped_assessments"] = dropped
    return Trace(
        header=header,
        trace_id=info.trace_id,
        request_time_ms=int(info.request_time),
        execution_duration_ms=info.execution_duration,
        state=state_name(info.state),
        request_preview=info.request_preview,
        response_preview=info.response_preview,
        client_request_id=info.client_request_id,
        tags={k: v for k, v in sorted((info.tags or {}).items()) if k not in STORE_TAGS},
        metadata=dict(sorted(meta.items())),
        run_source_id=run_sid(run_id) if run_id else None,
        model_source_id=model_sid(model_id) if model_id else None,
        spans=sorted(
            (neutral_span(s) for s in trace.data.spans), key=lambda s: (s.start_ns, s.span_id)
        ),
        assessments=[a for a in found if a is not None],
    )


def listing_fingerprint(info: Any) -> str:
    """What a trace listing returns (info, tags, metadata, state, assessments incl. their
    validity and overrides), hashed: changes whenever a copy would. A trace still in
    progress gets a new fingerprint each time (see below)."""
    body = {
        "request_time": info.request_time,
        "duration": info.execution_duration,
        "state": state_name(info.state),
        "previews": [info.request_preview, info.response_preview, info.client_request_id],
        "tags": dict(info.tags or {}),
        "metadata": dict(info.trace_metadata or {}),
        "assessments": sorted(
            (json.dumps(a.to_dictionary(), sort_keys=True, default=str))
            for a in info.assessments or []
        ),
    }
    if body["state"] == "IN_PROGRESS":
        # Spans can arrive without the listing showing it: re-read it on every pass until
        # it ends (the plan finds "unchanged" when nothing arrived).
        body["pass"] = uuid.uuid4().hex
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def otel_trace_hex(trace_id: str) -> str | None:
    """The OpenTelemetry trace id inside an MLflow 3 trace id ``tr-<32 hex>``, or None."""
    hexpart = trace_id.removeprefix("tr-")
    if not trace_id.startswith("tr-") or len(hexpart) != 32:
        return None
    try:
        bytes.fromhex(hexpart)
    except ValueError:
        return None
    return hexpart


def _b64(hexid: str) -> str:
    return base64.b64encode(bytes.fromhex(hexid)).decode()


def mlflow_span(span: Span, trace_id: str) -> Any:
    """The MLflow Span entity ``log_spans`` stores, under the trace ``trace_id``."""
    from mlflow.entities import Span as MlflowSpan

    otel_hex = otel_trace_hex(trace_id)
    assert otel_hex is not None, trace_id
    attrs: dict[str, Any] = {SPAN_TRACE_ID: dump_value(trace_id)}
    if span.span_type is not None:
        attrs[SPAN_TYPE] = dump_value(span.span_type)
    if span.inputs is not None:
        attrs[SPAN_INPUTS] = dump_value(span.inputs)
    if span.outputs is not None:
        attrs[SPAN_OUTPUTS] = dump_value(span.outputs)
    for key, value in span.attributes.items():
        attrs[key] = dump_value(value)
    return MlflowSpan.from_dict(
        {
            "trace_id": _b64(otel_hex),
            "span_id": _b64(span.span_id),
            "parent_span_id": _b64(span.parent_id) if span.parent_id else None,
            "name": span.name,
            "start_time_unix_nano": span.start_ns,
            "end_time_unix_nano": span.end_ns,
            "events": [
                {"name": e.name, "time_unix_nano": e.timestamp_ns, "attributes": e.attributes}
                for e in span.events
            ],
            "status": {"code": _status_name(span.status_code), "message": span.status_message},
            "attributes": attrs,
            "links": [k.model_dump() for k in span.links],
        }
    )


def _status_name(code: str) -> str:
    return {"OK": "STATUS_CODE_OK", "ERROR": "STATUS_CODE_ERROR"}.get(code, "STATUS_CODE_UNSET")


def mlflow_assessment(a: Assessment, trace_id: str, overrides: str | None, tag: str) -> Any:
    """The MLflow Feedback/Expectation to create on the copy ``trace_id``, tagged in its
    metadata (``tag``) with the source assessment's id; times kept."""
    from mlflow.entities import AssessmentError, AssessmentSource, Expectation, Feedback

    source = AssessmentSource(source_type=a.source_type, source_id=a.source_name)
    meta = {**a.metadata, tag: a.source_assessment_id}
    common: dict[str, Any] = {
        "name": a.name,
        "source": source,
        "trace_id": trace_id,
        "metadata": meta,
        "span_id": a.span_id,
        "create_time_ms": a.create_time_ms,
        "last_update_time_ms": a.last_update_time_ms,
    }
    if a.kind == "expectation":
        return Expectation(value=a.value, **common)
    error = None
    if a.error:
        error = AssessmentError(
            error_code=a.error.get("error_code") or "",
            error_message=a.error.get("error_message"),
            stack_trace=a.error.get("stack_trace"),
        )
    return Feedback(
        value=a.value, error=error, rationale=a.rationale, overrides=overrides, **common
    )
