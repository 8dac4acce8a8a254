"""The trace writer's pass costs (issue 14): copies found by one listing per experiment
(not one search per trace), ``start_trace`` once per finished trace, a changed copy read
once for its plan and the conflict check — and what is written byte for byte what the
two-call path wrote (differential: the same source copied both ways, tables compared)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from test_mlflow_traces import make_source, read_all, sync

from bridge.adapters.mlflow import traces_find
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.traces_write import TraceWriter
from bridge.adapters.mlflow.writer import MlflowWriter

LINKS = ("mlflow.modelId", "mlflow.sourceRun")
TABLES = ("trace_info", "trace_tags", "trace_request_metadata", "spans", "assessments")


def _count(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str, calls: list[str]) -> None:
    real = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)


def _tables(db: Path) -> dict[str, list[tuple[str, ...]]]:
    """The trace tables' rows, the store's own write counter and directory left out, and
    the ids of the linked run and logged model (each destination has its own copies)."""
    conn = sqlite3.connect(db)
    out: dict[str, list[tuple[str, ...]]] = {}
    for table in TABLES:
        cur = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
        cols = [d[0] for d in cur.description]
        rows = []
        for row in cur:
            values = dict(zip(cols, row, strict=True))
            if values.get("key") in LINKS:
                values["value"] = "<link>"
            values.pop("db_payload_generation", None)
            rows.append(tuple(str(v).replace(str(db.parent), "<dir>") for v in values.values()))
        out[table] = sorted(rows)
    conn.close()
    return out


def test_one_listing_and_one_start_trace_per_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    n = len(read_all(reader))
    calls: list[str] = []
    backend = writer.client._tracking_client.store
    _count(monkeypatch, backend, "start_trace", calls)
    _count(monkeypatch, writer.client, "search_traces", calls)
    again_for: list[bool] = []
    real_alter = traces_find.spans_may_alter

    def alter(info: Any, spans: list[Any]) -> bool:
        again_for.append(real_alter(info, spans))
        return again_for[-1]

    monkeypatch.setattr("bridge.adapters.mlflow.traces_write.spans_may_alter", alter)
    done, links = sync(reader, writer)
    assert {c.action for c, _ in done.values()} == {"create"}
    assert len(again_for) == n and False in again_for
    # The info written once, again only where log_spans may have changed it.
    assert calls.count("start_trace") == n + again_for.count(True)
    assert calls.count("search_traces") == 1  # one experiment, one listing page
    calls.clear()
    again, _ = sync(reader, writer, links)  # found by the listing: unchanged
    assert {c.action for c, _ in again.values()} == {"unchanged"}
    assert calls == ["search_traces"]


def test_one_start_trace_writes_what_two_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    made = make_source(src)
    MlflowClient(src).set_trace_tag(made["trace_ids"][0], "reviewed", "yes")
    reader = MlflowReader(src)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    sync(reader, MlflowWriter(f"sqlite:///{tmp_path / 'one' / 'dst.db'}"))
    monkeypatch.setattr(traces_find, "spans_may_alter", lambda info, spans: True)
    monkeypatch.setattr(
        "bridge.adapters.mlflow.traces_write.spans_may_alter", lambda info, spans: True
    )
    sync(reader, MlflowWriter(f"sqlite:///{tmp_path / 'two' / 'dst.db'}"))
    one, two = _tables(tmp_path / "one" / "dst.db"), _tables(tmp_path / "two" / "dst.db")
    assert one["spans"] and one["trace_info"]
    assert one == two


def test_changed_copy_read_once_for_plan_and_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    made = make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    done, links = sync(reader, writer)
    tid = made["trace_ids"][1]
    MlflowClient(src).set_trace_tag(tid, "reviewed", "yes")
    (trace,) = [t for t in read_all(reader) if t.trace_id == tid]
    part = TraceWriter(writer)
    calls: list[str] = []
    _count(monkeypatch, writer.client, "get_trace", calls)
    change = part.plan(trace, done[tid][1], links)
    assert change.action == "update"
    before = part.read_back(done[tid][1])  # the conflict check's read-back: no new read
    assert calls == ["get_trace"]
    assert before is not None and "reviewed" not in before.tags
    part.apply(trace, change, links)
    after = part.read_back(done[tid][1])  # written since: read again
    assert calls == ["get_trace", "get_trace"]
    assert after is not None and after.tags.get("reviewed") == "yes"


def test_spans_may_alter_names_what_log_spans_derives() -> None:
    from mlflow.entities import TraceInfo, TraceLocation, TraceState

    from bridge.adapters.mlflow.traces_convert import mlflow_span
    from bridge.schema_items import Span

    t0 = 1_700_000_000_123_456_789
    tid = "tr-" + "cd" * 16
    root = Span(span_id="1" * 16, name="root", start_ns=t0, end_ns=t0 + 5_000_000)

    def info(**kw: Any) -> TraceInfo:
        base: dict[str, Any] = {
            "trace_id": tid,
            "trace_location": TraceLocation.from_experiment_id("1"),
            "request_time": t0 // 1_000_000,
            "execution_duration": 5,
            "state": TraceState.OK,
            "request_preview": "q",
            "response_preview": "a",
        }
        return TraceInfo(**{**base, **kw})

    spans = [mlflow_span(root, tid)]
    assert not traces_find.spans_may_alter(info(), spans)
    assert traces_find.spans_may_alter(info(state=TraceState.IN_PROGRESS), spans)
    assert traces_find.spans_may_alter(info(request_preview=None), spans)
    assert traces_find.spans_may_alter(info(execution_duration=1), spans)
    assert traces_find.spans_may_alter(info(request_time=t0 // 1_000_000 + 1), spans)
    tagged = root.model_copy(update={"attributes": {"mlflow.traceTag.team": "a"}})
    assert traces_find.spans_may_alter(info(), [mlflow_span(tagged, tid)])


def test_finds_read_ahead_in_one_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pass's headers announced (prepare), the finds of a first copy read the
    infos of all its traces in one batch request, none one by one — same answers."""
    from bridge.adapters.mlflow.traces_read import TraceReader

    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    make_source(src)
    reader, writer = MlflowReader(src), MlflowWriter(dst)
    done, links = sync(reader, writer)
    headers = list(TraceReader(reader).list())
    calls: list[str] = []
    backend = writer.client._tracking_client.store
    _count(monkeypatch, backend, "batch_get_trace_infos", calls)
    _count(monkeypatch, backend, "get_trace_info", calls)
    part = TraceWriter(writer)
    part.prepare(headers)
    found = {h.name: part.find(h, links) for h in headers}
    assert found == {tid: dest for tid, (_c, dest) in done.items()}
    assert calls == []  # every copy found by the listing: no info read at all
    fresh = MlflowWriter(f"sqlite:///{tmp_path / 'other.db'}")
    backend = fresh.client._tracking_client.store
    _count(monkeypatch, backend, "batch_get_trace_infos", calls)
    _count(monkeypatch, backend, "get_trace_info", calls)
    names = {p.source_id: p.name for h in headers for p in h.projects}
    other_links = type(links)(fresh, names)
    part = TraceWriter(fresh)
    part.prepare(headers)
    assert [part.find(h, other_links) for h in headers] == [None] * len(headers)
    assert calls == ["batch_get_trace_infos"]
    for h in headers:  # the plan's question answered by what the find read
        assert part.copies.take_info(h.name) is None
    assert calls == ["batch_get_trace_infos"]
