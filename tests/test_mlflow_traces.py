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
from conftest import running_mlflow_server
from mlflow.tracking import MlflowClient

from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow import traces_read
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
from mlflow.entities import AssessmentError, AssessmentSource, Link, SpanEvent
mlflow.set_tracking_uri(sys.argv[1])
exp_id = mlflow.set_experiment("genai").experiment_id
model = mlflow.initialize_logged_model(name="traced-model")
mlflow.set_active_model(model_id=model.model_id)

earlier = mlflow.search_traces(locations=[exp_id], return_type="list")[0]
link = Link(trace_id=earlier.info.trace_id, span_id=earlier.data.spans[0].span_id,
            attributes={"why": "follow-up"})

@mlflow.trace(span_type="AGENT", attributes={"agent.version": 3, "cfg": {"a": [1, 2]}})
def agent(q):
    with mlflow.start_span("plan", links=[link]) as s:
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
    assert any(k.attributes == {"why": "follow-up"} for s in spans for k in s.links)
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
    held = {a.source_assessment_id for t in read_all(MlflowReader(dst)) for a in t.assessments}
    assert held == {a.source_assessment_id for t in traces for a in t.assessments}  # ids kept

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


def test_traces_sqlite_to_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traces_read, "PAGE", 3)  # the listing pages through 4 and 5 traces
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}")


@pytest.mark.e2e
def test_traces_sqlite_to_postgresql(tmp_path: Path, pg_database: str) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", pg_database)


@pytest.mark.e2e
def test_traces_sqlite_to_server(tmp_path: Path, mlflow_server: str) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'src.db'}", mlflow_server)


@pytest.mark.e2e
def test_traces_server_to_server_on_postgresql(
    tmp_path: Path, mlflow_server: str, pg_database: str
) -> None:
    """Read from a server (REST search, get_trace), write into a server with PostgreSQL
    behind it (start_trace over REST, spans over OTLP /v1/traces)."""
    with running_mlflow_server(tmp_path / "pg-server", backend_uri=pg_database) as url:
        _round_trip(mlflow_server, url)


def test_file_store_refuses_traces_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's file store has no span logging: the plan says so, naming the store."""
    from bridge.errors import BridgeError

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.17 refuses it otherwise

    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(f"file://{tmp_path / 'mlruns'}")
    trace = read_all(reader)[0]
    links = Links(writer, {p.source_id: p.name for p in trace.header.projects})
    with pytest.raises(BridgeError, match="cannot store trace spans"):
        TraceWriter(writer).plan(trace, None, links)
    assert "trace" not in writer.item_kinds()  # the engine reports traces-not-copied once
    assert "trace" in MlflowWriter(f"sqlite:///{tmp_path / 'dst.db'}").item_kinds()


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


def test_in_progress_trace_then_finished(tmp_path: Path) -> None:
    """A trace copied while IN_PROGRESS (root span open) is brought up to date once it
    finishes at the source: state, duration, the root span's end and the spans that
    arrived since — and nothing else."""
    from mlflow.entities import TraceInfo, TraceLocation, TraceState
    from mlflow.tracking._tracking_service.utils import _get_store

    from bridge.adapters.mlflow.traces_convert import mlflow_span
    from bridge.schema_items import Span

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    store = _get_store(src)
    exp = MlflowClient(src).create_experiment("live")
    tid, t0 = "tr-" + "ab" * 16, 1_700_000_000_123_456_789
    root = Span(span_id="1" * 16, name="root", span_type="CHAIN", start_ns=t0, inputs={"q": 1})
    child = Span(
        span_id="2" * 16,
        parent_id=root.span_id,
        name="step",
        start_ns=t0 + 7,
        end_ns=t0 + 1_000_001,
        status_code="OK",
        attributes={"i": 1},
    )

    def info(state: str, duration: int | None) -> TraceInfo:
        return TraceInfo(
            trace_id=tid,
            trace_location=TraceLocation.from_experiment_id(exp),
            request_time=t0 // 1_000_000,
            execution_duration=duration,
            state=TraceState(state),
            trace_metadata={"k": "v"},
            tags={"t": "1"},
        )

    store.start_trace(info("IN_PROGRESS", None))
    store.log_spans(exp, [mlflow_span(root, tid), mlflow_span(child, tid)])
    store.start_trace(info("IN_PROGRESS", None))
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    (source,) = read_all(reader)
    assert source.state == "IN_PROGRESS" and source.spans[0].end_ns is None
    # Spans may arrive unseen by the listing: an open trace is re-read on every pass.
    (one,), (two,) = TraceReader(reader).list(), TraceReader(reader).list()
    assert one.fingerprint != two.fingerprint
    done, links = sync(reader, writer)
    assert done[tid][1] == tid
    assert_faithful(reader, writer, done)

    late = Span(
        span_id="3" * 16,
        parent_id=root.span_id,
        name="late",
        start_ns=t0 + 2_000_000,
        end_ns=t0 + 3_000_000,
        status_code="ERROR",
        status_message="late failure",
    )
    ended = root.model_copy(
        update={"end_ns": t0 + 5_000_003, "status_code": "OK", "outputs": {"a": 2}}
    )
    store.log_spans(exp, [mlflow_span(late, tid), mlflow_span(ended, tid)])
    store.start_trace(info("OK", 5))
    again, _ = sync(reader, writer, links)
    change = again[tid][0]
    assert change.action == "update"
    assert sorted(change.changes) == sorted(
        [
            "state: IN_PROGRESS -> OK",
            "execution_duration_ms: (none) -> 5",
            'response_preview: (none) -> {"a": 2}',  # the source store took it from the root
            "+1 spans",
            "1 spans changed",
        ]
    )
    assert_faithful(reader, writer, again)
    (copy,) = read_all(MlflowReader(dst))
    assert [(s.span_id, s.start_ns, s.end_ns) for s in copy.spans] == [
        ("1" * 16, t0, t0 + 5_000_003),
        ("2" * 16, t0 + 7, t0 + 1_000_001),
        ("3" * 16, t0 + 2_000_000, t0 + 3_000_000),
    ]
    assert {c.action for c, _ in sync(reader, writer, links)[0].values()} == {"unchanged"}
    (one,), (two,) = TraceReader(reader).list(), TraceReader(reader).list()
    assert one.fingerprint == two.fingerprint  # ended: the listing tells


def test_unlinked_run_is_named_in_a_warning(tmp_path: Path) -> None:
    """A trace whose linked run was not copied: copied without the link, the run named."""
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    made = make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    traces = read_all(reader)
    links = Links(writer, {p.source_id: p.name for t in traces for p in t.header.projects})
    part = TraceWriter(writer)
    (linked,) = [t for t in traces if t.run_source_id]
    assert linked.run_source_id is not None and linked.run_source_id.endswith(made["run_id"])
    change = part.plan(linked, part.find(linked.header, links), links)
    assert change.action == "create"
    assert [w for w in change.warnings if linked.run_source_id in w and "not copied" in w]
    copy = part.read_back(part.apply(linked, change, links))
    assert isinstance(copy, Trace) and copy.run_source_id is None
    assert copy.spans == linked.spans


@pytest.mark.e2e
def test_sync_cli_copies_traces(tmp_path: Path) -> None:
    """Through the engine (api.sync, as the CLI runs it): traces copied after their runs,
    the run link pointing at the run's copy; verify finds every trace ok; a second pass
    unchanged; a new trace and a new assessment -> one create, one update."""
    from bridge import api

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    state = str(tmp_path / "state.db")
    made = make_source(src)
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state)
    assert plan.exit_code() == 0
    assert plan.item_counts["trace"]["create"] == 4
    dst_client = MlflowClient(dst)
    (run,) = [
        r
        for e in dst_client.search_experiments()
        for r in dst_client.search_runs([e.experiment_id])
        if r.data.tags.get(ITEM_SOURCE_TAG, "").endswith(made["run_id"])
    ]
    linked = [t for t in read_all(MlflowReader(src)) if t.run_source_id]
    (copy,) = [dst_client.get_trace(t.trace_id) for t in linked]
    assert copy.info.trace_metadata["mlflow.sourceRun"] == run.info.run_id
    # The extra corpus' logged model was made outside any run: whether that travels is the
    # logged-model pass's choice; a trace whose link target has no copy says so, by name,
    # in its plan and in verify — every other trace verifies ok.
    unlinked = {
        i.source_id
        for i in plan.items
        if i.kind == "trace" and any("linked logged model" in w.message for w in i.warnings)
    }
    report = api.verify(f"mlflow:{src}", f"mlflow:{dst}", state=state)
    assert report.item_counts["trace"]["ok"] == 4 - len(unlinked)
    assert {i.source_id for i in report.items if i.kind == "trace"} == unlinked
    assert all("logged model link" in f for i in report.items for f in i.findings)
    again = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state)
    assert again.item_counts["trace"]["unchanged"] == 4
    _run(["-m", "tests.genai_corpus", src, "--more"])
    third = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state)
    counts = third.item_counts["trace"]
    assert (counts["create"], counts["update"], counts["unchanged"]) == (1, 1, 3)
    (updated,) = [i for i in third.items if i.kind == "trace" and i.action == "update"]
    assert updated.changes == ["+1 assessments"]


EDITS = r"""
import sys
import mlflow
from mlflow.entities import Expectation, Feedback
mlflow.set_tracking_uri(sys.argv[1])
tid = sys.argv[2]
got = {a.name: a for a in mlflow.get_trace(tid).info.assessments}
mlflow.update_assessment(tid, got["helpful"].assessment_id,
                         Feedback(name="helpful", value=False, rationale="on second thought"))
mlflow.delete_assessment(tid, got["expected_answer"].assessment_id)
mlflow.MlflowClient().delete_trace_tag(tid, "team")
print("{}")
"""


def test_source_edits_follow(tmp_path: Path) -> None:
    """At the source an assessment edited, one deleted, a tag deleted: the copy follows
    with exactly those lines, the edited assessment's times kept (created again)."""
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    made = make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    done, links = sync(reader, writer)
    first = made["trace_ids"][0]
    (helpful,) = [a for t in read_all(reader) for a in t.assessments if a.name == "helpful"]
    _run(["-c", EDITS, src, first])
    again, _ = sync(reader, writer, links)
    change = again.pop(first)[0]
    assert change.action == "update"
    assert sorted(change.changes) == sorted(
        [
            f"assessment helpful ({helpful.source_assessment_id}) changed",
            "-1 assessments (gone at the source)",
            "tag team: search -> (none)",
        ]
    )
    assert {c.action for c, _ in again.values()} == {"unchanged"}
    assert_faithful(reader, writer, {**again, first: (change, first)})
    (copy,) = [t for t in read_all(MlflowReader(dst)) if t.trace_id == first]
    assert "team" not in copy.tags and [a.value for a in copy.assessments] == [False]
    assert {c.action for c, _ in sync(reader, writer, links)[0].values()} == {"unchanged"}


def test_copies_travel_on_but_never_back(tmp_path: Path) -> None:
    """A -> B -> C: B's copies read under their own identity (no bridge.* bookkeeping) and
    reach C faithfully; B -> A (a two-way sync coming back): nothing is written to A."""
    a, b, c = (f"sqlite:///{tmp_path / n}.db" for n in ("a", "b", "c"))
    make_source(a)
    sync(MlflowReader(a), MlflowWriter(b))
    hop, _ = sync(MlflowReader(b), MlflowWriter(c))
    assert {ch.action for ch, _ in hop.values()} == {"create"}
    assert_faithful(MlflowReader(b), MlflowWriter(c), hop)
    for _, dest in hop.values():
        tags = MlflowClient(c).get_trace(dest).info.tags
        assert tags[ITEM_SOURCE_TAG] == f"mlflow:{b}#trace/{dest}"  # B's identity, not A's
        assert "bridge.source_trace_id" not in tags
    before = {t.trace_id for t in read_all(MlflowReader(a))}
    back, _ = sync(MlflowReader(b), MlflowWriter(a))
    assert {ch.action for ch, _ in back.values()} == {"unchanged"}
    assert {dest for _, dest in back.values()} == before
    assert {t.trace_id for t in read_all(MlflowReader(a))} == before


def test_issue_references_are_named_not_dropped_silently(tmp_path: Path) -> None:
    """MLflow's issue references (assessments naming an issue of the source's store) have
    no neutral form: the plan names each one it leaves out."""
    from mlflow.entities.assessment import IssueReference
    from mlflow.tracking._tracking_service.utils import _get_store

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    made = make_source(src)
    first = made["trace_ids"][0]
    issue = IssueReference(issue_id="iss-1", issue_name="hallucination", trace_id=first)
    ref = _get_store(src).create_assessment(issue).assessment_id
    done, _ = sync(MlflowReader(src), MlflowWriter(dst))
    change = done[first][0]
    assert [w for w in change.warnings if ref in w and "issue assessment" in w]
    assert not [w for tid, (c, _) in done.items() if tid != first for w in c.warnings]
