"""MLflow 3 traces copied faithfully (issue 13): TraceReader -> TraceWriter into sqlite,
PostgreSQL and an ``mlflow server``; every field read back identical (span times to the
ns, trace and span ids kept), a second pass unchanged, one change at the source -> exactly
that change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.items import ITEM_SOURCE_TAG
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.traces_read import TraceReader
from bridge.adapters.mlflow.traces_write import TraceWriter
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.schema import Project
from bridge.schema_items import Trace, item_digest

ROOT = Path(__file__).resolve().parents[1]

# Extras on top of tests/genai_corpus.py: nested spans with attributes, events and an
# error span; a trace linked to a logged model; feedback with an error; an expectation on
# a span.
EXTRA = r"""
import json, sys
import mlflow
from mlflow.entities import AssessmentError, AssessmentSource, SpanEvent
mlflow.set_tracking_uri(sys.argv[1])
exp_id = mlflow.set_experiment("genai").experiment_id
model = mlflow.initialize_logged_model(name="traced-model")
mlflow.set_active_model(model_id=model.model_id)

@mlflow.trace(span_type="AGENT", attributes={"agent.version": 3, "cfg": {"a": [1, 2]}})
def agent(q):
    with mlflow.start_span("plan") as s:
        s.set_attributes({"depth": 2, "ratio": 0.5, "flag": True, "unicode": "é☃"})
        s.add_event(SpanEvent("thought", attributes={"text": "hmm", "n": 4}))
        with mlflow.start_span("tool", span_type="TOOL") as t:
            t.set_inputs({"q": q})
            try:
                raise KeyError("missing")
            except KeyError as e:
                t.record_exception(e)
                t.set_status("ERROR")
    return {"answer": q[::-1]}

agent("abc")
mlflow.clear_active_model()
mlflow.flush_trace_async_logging()
tid = mlflow.get_last_active_trace_id()
span_id = mlflow.get_trace(tid).data.spans[1].span_id
mlflow.log_feedback(trace_id=tid, name="judge", error=AssessmentError(error_code="TIMEOUT",
    error_message="judge timed out"), source=AssessmentSource("LLM_JUDGE", "judge-model"))
mlflow.log_expectation(trace_id=tid, name="plan_ok", value={"steps": [1, 2]}, span_id=span_id,
    metadata={"by": "qa"})
print(json.dumps({"trace_id": tid, "model_id": model.model_id}))
"""


def _run(code_or_module: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, *code_or_module], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_source(uri: str) -> dict[str, Any]:
    made = _run(["-m", "tests.genai_corpus", uri])
    made["extra"] = _run(["-c", EXTRA, uri])
    return made


class Links(ItemLinks):
    """Projects through the writer; the linked run and logged model as copies made here
    (the engine's run and model passes would have made them), tagged with their source."""

    def __init__(self, writer: MlflowWriter, names: dict[str, str]) -> None:
        self.writer, self.names = writer, names
        self.runs: dict[str, str] = {}
        self.models: dict[str, str] = {}

    def project(self, source_id: str) -> str | None:
        return self.writer.ensure_project(Project(source_id=source_id, name=self.names[source_id]))

    def run(self, source_id: str) -> str | None:
        return self.runs.get(source_id)

    def model(self, source_id: str) -> str | None:
        return self.models.get(source_id)


def _links(reader: MlflowReader, writer: MlflowWriter, traces: list[Trace]) -> Links:
    names = {p.source_id: p.name for t in traces for p in t.header.projects}
    links = Links(writer, names)
    client = writer.client
    for t in traces:
        exp = links.project(t.header.projects[0].source_id)
        assert exp is not None
        if t.run_source_id and t.run_source_id not in links.runs:
            run = client.create_run(exp, tags={ITEM_SOURCE_TAG: t.run_source_id})
            links.runs[t.run_source_id] = run.info.run_id
        if t.model_source_id and t.model_source_id not in links.models:
            model = client.create_logged_model(
                exp, name="copied", tags={ITEM_SOURCE_TAG: t.model_source_id}
            )
            links.models[t.model_source_id] = f"models:/{model.model_id}"
    return links


def read_all(reader: MlflowReader) -> list[Trace]:
    part = TraceReader(reader)
    out = []
    for header in part.list():
        trace = part.read(header)
        assert isinstance(trace, Trace)
        out.append(trace)
    return out


def sync(
    reader: MlflowReader, writer: MlflowWriter, links: Links | None = None
) -> tuple[dict[str, tuple[ItemChange, str]], Links]:
    """One pass: every source trace found, planned and applied."""
    traces = read_all(reader)
    links = links or _links(reader, writer, traces)
    part = TraceWriter(writer)
    done: dict[str, tuple[ItemChange, str]] = {}
    for trace in traces:
        dest = part.find(trace.header, links)
        change = part.plan(trace, dest, links)
        done[trace.trace_id] = (change, part.apply(trace, change, links))
    return done, links


def assert_faithful(reader: MlflowReader, writer: MlflowWriter, done: dict[str, Any]) -> None:
    part = TraceWriter(writer)
    for source in read_all(reader):
        _, dest_id = done[source.trace_id]
        copy = part.read_back(dest_id)
        assert isinstance(copy, Trace)
        mine = source.model_dump(exclude={"header", "run_source_id", "model_source_id"})
        theirs = copy.model_dump(exclude={"header", "run_source_id", "model_source_id"})
        assert theirs == mine  # every field, span times to the ns, span/assessment ids mapped
        assert copy.run_source_id == source.run_source_id
        assert copy.model_source_id == source.model_source_id
        assert item_digest(copy) == item_digest(source)


def _check_corpus(traces: list[Trace]) -> None:
    """The corpus holds what the test claims to copy (so a silent reader gap fails)."""
    spans = [s for t in traces for s in t.spans]
    assert len(traces) == 4
    assert any(s.status_code == "ERROR" for s in spans)
    assert any(s.events for s in spans)
    assert any(s.attributes.get("depth") == 2 for s in spans)
    assert sum(t.run_source_id is not None for t in traces) == 1
    assert sum(t.model_source_id is not None for t in traces) == 1
    kinds = {
        (a.kind, a.overrides is not None, a.valid, a.error is not None)
        for t in traces
        for a in t.assessments
    }
    assert ("feedback", True, True, False) in kinds  # the override
    assert ("feedback", False, False, False) in kinds  # the overridden one
    assert ("feedback", False, True, True) in kinds  # an error
    assert any(a.kind == "expectation" and a.span_id for t in traces for a in t.assessments)


def _round_trip(src: str, dst: str) -> None:
    made = make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    traces = read_all(reader)
    _check_corpus(traces)
    done, links = sync(reader, writer)
    assert {c.action for c, _ in done.values()} == {"create"}
    assert all(dest == tid for tid, (_, dest) in done.items())  # trace ids kept
    assert not [w for c, _ in done.values() for w in c.warnings]
    assert_faithful(reader, writer, done)

    again, _ = sync(reader, writer, links)
    assert {tid: c.action for tid, (c, _) in again.items()} == dict.fromkeys(done, "unchanged")

    # One tag, one assessment, one trace at the source -> exactly those changes.
    client = MlflowClient(src)
    first = made["trace_ids"][0]
    client.set_trace_tag(made["trace_ids"][1], "reviewed", "yes")
    more = _run(["-m", "tests.genai_corpus", src, "--more"])
    new = set(more["trace_ids"]) - set(done) - {made["extra"]["trace_id"]}
    third, _ = sync(reader, writer, links)
    actions = {tid: (c.action, c.changes) for tid, (c, _) in third.items()}
    assert actions.pop(first) == ("update", ["+1 assessments"])
    assert actions.pop(made["trace_ids"][1]) == ("update", ["tag reviewed: (none) -> yes"])
    (fresh,) = new
    assert actions.pop(fresh)[0] == "create"
    assert {a for a, _ in actions.values()} == {"unchanged"}
    assert_faithful(reader, writer, third)
    fourth, _ = sync(reader, writer, links)
    assert {c.action for c, _ in fourth.values()} == {"unchanged"}


def test_traces_sqlite_to_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}")


@pytest.mark.e2e
def test_traces_sqlite_to_postgresql(tmp_path: Path, pg_database: str) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", pg_database)


@pytest.mark.e2e
def test_traces_sqlite_to_server(tmp_path: Path, mlflow_server: str) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", mlflow_server)


def test_same_store_gets_new_trace_ids(tmp_path: Path) -> None:
    """Source and destination the same store: each copy gets a new id, the source's in a
    tag, a warning naming it; the copy reads back as the source."""
    uri = f"sqlite:///{tmp_path / 'one.db'}"
    make_source(uri)
    reader = MlflowReader(uri, ReaderOptions(experiments=["genai"]))
    writer = MlflowWriter(uri)
    done, links = sync(reader, writer)
    for tid, (change, dest) in done.items():
        assert dest != tid
        assert any(tid in w and "bridge.source_trace_id" in w for w in change.warnings)
    for source in read_all(reader):
        if source.trace_id in done:
            copy = TraceWriter(writer).read_back(done[source.trace_id][1])
            assert isinstance(copy, Trace)
            assert item_digest(copy) == item_digest(source)
