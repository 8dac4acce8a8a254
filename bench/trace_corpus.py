"""Trace corpus and read-back for bench/copy_traces.py.

The corpus is written through the source store's own trace-logging API (``start_trace`` with
a TraceInfo, then ``log_spans``), so 1,000 traces of 20 spans take seconds rather than the
minutes a live replay would take; the corpus build is not what the bench measures. Each trace:
a root span, 4 children, 15 grandchildren (20 spans), attributes, inputs/outputs, events on a
few spans, an ERROR status on every 10th trace's tool branch, odd nanosecond start/end times
(so a copy that rounds to microseconds or milliseconds shows up), and assessments on every
20th trace (a human feedback on the root, an expectation on a span; every 100th trace also
an LLM-judge feedback overridden by a person).

Read-back (``snapshot``) goes through ``MlflowClient`` only and keys copies by the trace tag
``bench.case`` every method copies, so the fidelity table is computed from both sides.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

EXPERIMENT = "bench-traces"
T0_NS = 1_750_000_000_000_000_000
CHILDREN = ("retrieve", "rerank", "generate", "tool")
GRAND = (4, 4, 4, 3)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _ids(case: int) -> tuple[bytes, list[bytes]]:
    """A trace id (16 bytes) and 20 span ids (8 bytes), deterministic per case."""
    digest = hashlib.sha256(f"trace-{case}".encode()).digest()
    spans = [hashlib.sha256(f"span-{case}-{n}".encode()).digest()[:8] for n in range(20)]
    return digest[:16], spans


def _span_dict(
    trace_b64: str,
    request_id: str,
    span_id: bytes,
    parent: bytes | None,
    name: str,
    kind: str,
    times: tuple[int, int],
    io: tuple[Any, Any],
    attrs: dict[str, Any],
    error: bool = False,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    attributes = {
        "mlflow.traceRequestId": json.dumps(request_id),
        "mlflow.spanType": json.dumps(kind),
        "mlflow.spanInputs": json.dumps(io[0]),
        "mlflow.spanOutputs": json.dumps(io[1]),
        **{k: json.dumps(v) for k, v in attrs.items()},
    }
    return {
        "trace_id": trace_b64,
        "span_id": _b64(span_id),
        "parent_span_id": _b64(parent) if parent else None,
        "name": name,
        "start_time_unix_nano": times[0],
        "end_time_unix_nano": times[1],
        "events": events or [],
        "status": {
            "code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK",
            "message": "tool failed: timeout" if error else "",
        },
        "attributes": attributes,
    }


def trace_spans(case: int, spans_per_trace: int = 20) -> tuple[str, list[dict[str, Any]]]:
    """The MLflow trace id and the span dicts (MLflow's Span.to_dict form) of one case."""
    trace_raw, span_raw = _ids(case)
    trace_b64, request_id = _b64(trace_raw), "tr-" + trace_raw.hex()
    start = T0_NS + case * 60_000_000_000 + 123_457 + case % 997
    err = case % 10 == 7
    root = span_raw[0]
    out = [
        _span_dict(
            trace_b64,
            request_id,
            root,
            None,
            "agent",
            "CHAIN",
            (start, start + 9_000_000_001 + case),
            ({"question": f"question {case}?"}, {"answer": f"answer {case}"}),
            {"bench.case": case, "model": "m-1"},
            error=err,
        )
    ]
    n = 1
    for c, (child, grand) in enumerate(zip(CHILDREN, GRAND, strict=True)):
        c_start = start + 1_000 + c * 2_000_000_003
        c_id = span_raw[n]
        n += 1
        events = None
        if child == "retrieve":
            events = [
                {"name": "cache-miss", "time_unix_nano": c_start + 17, "attributes": {"shard": c}}
            ]
        c_err = err and child == "tool"
        if c_err:
            events = [
                {
                    "name": "exception",
                    "time_unix_nano": c_start + 1_500_000_011,
                    "attributes": {"exception.type": "TimeoutError", "exception.message": "slow"},
                }
            ]
        out.append(
            _span_dict(
                trace_b64,
                request_id,
                c_id,
                root,
                child,
                {"retrieve": "RETRIEVER", "rerank": "RERANKER", "generate": "LLM"}.get(
                    child, "TOOL"
                ),
                (c_start, c_start + 1_900_000_007),
                ({"step": child, "case": case}, [f"{child}-{case}-{k}" for k in range(3)]),
                {"top_k": 3 + c, "index": "docs-v2"},
                error=c_err,
                events=events,
            )
        )
        for g in range(grand):
            if n >= spans_per_trace:
                break
            g_start = c_start + 10_001 + g * 400_000_009
            out.append(
                _span_dict(
                    trace_b64,
                    request_id,
                    span_raw[n],
                    c_id,
                    f"{child}.{g}",
                    "UNKNOWN",
                    (g_start, g_start + 300_000_013),
                    ({"part": g}, {"ok": not (c_err and g == 0)}),
                    {"attempt": g, "tokens": 100 + g},
                    error=c_err and g == 0,
                )
            )
            n += 1
    return request_id, out[:spans_per_trace]


@dataclass
class Snapshot:
    """What one store holds, keyed by ``bench.case``: per trace, info and spans by name."""

    traces: dict[int, dict[str, Any]] = field(default_factory=dict)


def make_corpus(uri: str, traces: int, spans_per_trace: int) -> None:
    """Write the corpus through the store's trace-logging API (start_trace + log_spans)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import (
        AssessmentSource,
        Span,
        TraceInfo,
        TraceLocation,
        TraceState,
    )

    client = MlflowClient(tracking_uri=uri)
    store = client._tracking_client.store
    exp = client.create_experiment(EXPERIMENT)
    batch: list[Any] = []
    for case in range(traces):
        request_id, dicts = trace_spans(case, spans_per_trace)
        spans = [Span.from_dict(d) for d in dicts]
        root = spans[0]
        info = TraceInfo(
            trace_id=request_id,
            trace_location=TraceLocation.from_experiment_id(exp),
            request_time=root.start_time_ns // 1_000_000,
            execution_duration=(root.end_time_ns - root.start_time_ns) // 1_000_000,
            state=TraceState.ERROR if case % 10 == 7 else TraceState.OK,
            request_preview=json.dumps(root.inputs),
            response_preview=json.dumps(root.outputs),
            trace_metadata={
                "mlflow.trace_schema.version": "3",
                "mlflow.user": "bench",
                "mlflow.source.name": "trace_corpus.py",
                "mlflow.source.type": "LOCAL",
            },
            tags={"bench.case": str(case), "team": "bench", "mlflow.traceName": "agent"},
        )
        store.start_trace(info)
        batch.extend(spans)
        if len(batch) >= 2000:
            store.log_spans(exp, batch)
            batch = []
    if batch:
        store.log_spans(exp, batch)
    mlflow.set_tracking_uri(uri)
    human = AssessmentSource(source_type="HUMAN", source_id="ann@example.com")
    for case in range(0, traces, 20):
        request_id, dicts = trace_spans(case, spans_per_trace)
        mlflow.log_feedback(
            trace_id=request_id,
            name="helpful",
            value=case % 40 == 0,
            rationale=f"case {case} reads well",
            source=human,
            metadata={"batch": "b1"},
        )
        mlflow.log_expectation(
            trace_id=request_id,
            name="expected_docs",
            value=[f"doc-{case}"],
            source=human,
            span_id=Span.from_dict(dicts[1]).span_id,
        )
        if case % 100 == 0:
            judged = mlflow.log_feedback(
                trace_id=request_id,
                name="correct",
                value=0.4,
                source=AssessmentSource(source_type="LLM_JUDGE", source_id="judge-1"),
            )
            mlflow.override_feedback(
                trace_id=request_id,
                assessment_id=judged.assessment_id,
                value=1.0,
                rationale="a person checked it",
                source=AssessmentSource(source_type="HUMAN", source_id="bob@example.com"),
            )


def _span_record(span: Any, names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": span.span_id,
        "parent": names.get(span.parent_id or "", None),
        "start": span.start_time_ns,
        "end": span.end_time_ns,
        "status": (str(span.status.status_code), span.status.description or ""),
        "events": [
            (e.name, e.timestamp, json.dumps(e.attributes, sort_keys=True)) for e in span.events
        ],
        "content": json.dumps(
            [
                span.span_type,
                span.inputs,
                span.outputs,
                {k: v for k, v in span.attributes.items() if not k.startswith("mlflow.")},
            ],
            sort_keys=True,
            default=str,
        ),
    }


def _assessment_record(a: Any, names: dict[str, str], by_id: dict[str, Any]) -> tuple[Any, ...]:
    feedback = getattr(a, "feedback", None) is not None
    value = a.feedback.value if feedback else a.expectation.value
    over = by_id.get(a.overrides or "")
    return (
        a.name,
        json.dumps(value, sort_keys=True),
        str(a.source.source_type),
        a.source.source_id,
        a.rationale,
        names.get(a.span_id or "", None),
        a.valid if feedback else None,  # a server reads no validity back for expectations
        (over.name, over.source.source_id) if over is not None else None,
    )


def snapshot(uri: str) -> Snapshot:
    """Read every trace of the bench experiment back through MlflowClient (spans included)."""
    import mlflow
    from mlflow import MlflowClient

    # Spans a server keeps as artifacts (mlflow-artifacts:) resolve through the global URI.
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    snap = Snapshot()
    if exp is None:
        return snap
    token = None
    while True:
        page = client.search_traces(
            locations=[exp.experiment_id], max_results=200, page_token=token
        )
        for trace in page:
            info = trace.info
            case = int(info.tags.get("bench.case", "-1"))
            names = {s.span_id: s.name for s in trace.data.spans}
            by_id = {a.assessment_id: a for a in info.assessments}
            snap.traces[case] = {
                "trace_id": info.trace_id,
                "info": (
                    info.request_time,
                    info.execution_duration,
                    str(info.state),
                    info.request_preview,
                    info.response_preview,
                ),
                "spans": {s.name: _span_record(s, names) for s in trace.data.spans},
                "assessments": sorted(
                    (_assessment_record(a, names, by_id) for a in info.assessments), key=repr
                ),
            }
        token = page.token
        if not token:
            return snap


def fidelity(src: Snapshot, dst: Snapshot) -> dict[str, str]:
    """Rows of the fidelity table: what the copy kept, counted against the source."""
    n = len(src.traces)
    spans = sum(len(t["spans"]) for t in src.traces.values())
    counts = dict.fromkeys(("ids", "span_ids", "times", "tree", "info", "status", "content"), 0)
    ev_total = ev_kept = as_total = as_kept = ov_total = ov_kept = found = 0
    for case, s in src.traces.items():
        d = dst.traces.get(case)
        as_total += len(s["assessments"])
        ov_total += sum(1 for a in s["assessments"] if a[-1] is not None)
        ev_total += sum(1 for r in s["spans"].values() if r["events"])
        if d is None:
            continue
        found += 1
        counts["ids"] += d["trace_id"] == s["trace_id"]
        counts["info"] += d["info"] == s["info"]
        counts["tree"] += {k: r["parent"] for k, r in s["spans"].items()} == {
            k: r["parent"] for k, r in d["spans"].items()
        }
        for name, r in s["spans"].items():
            c = d["spans"].get(name)
            if c is None:
                continue
            counts["span_ids"] += c["id"] == r["id"]
            counts["times"] += (c["start"], c["end"]) == (r["start"], r["end"])
            counts["status"] += c["status"] == r["status"]
            counts["content"] += c["content"] == r["content"]
            ev_kept += bool(r["events"]) and c["events"] == r["events"]
        left = list(d["assessments"])
        for a in s["assessments"]:
            if a in left:
                left.remove(a)
                as_kept += 1
                ov_kept += a[-1] is not None
    return {
        "traces copied": f"{found}/{n}",
        "trace ids kept": f"{counts['ids']}/{n}",
        "trace info kept (request time, duration, state, previews)": f"{counts['info']}/{n}",
        "span ids kept": f"{counts['span_ids']}/{spans}",
        "span start and end kept to the ns": f"{counts['times']}/{spans}",
        "span tree (parents) identical": f"{counts['tree']}/{n}",
        "span status kept": f"{counts['status']}/{spans}",
        "span type, inputs, outputs, attributes kept": f"{counts['content']}/{spans}",
        "span events kept": f"{ev_kept}/{ev_total}",
        "assessments copied (value, source, rationale, span)": f"{as_kept}/{as_total}",
        "overrides pointing at the copied assessment": f"{ov_kept}/{ov_total}",
    }
