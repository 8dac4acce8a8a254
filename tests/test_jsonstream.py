"""A report's JSON written piece by piece is the same text as one ``json.dumps``
(bridge/reporting/jsonstream.py), and the pieces never hold the runs whole; the text
report likewise comes in pieces of whole lines."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.engine.lines import RunLines
from bridge.engine.model import Plan, RunPlan
from bridge.reporting.jsonstream import iter_json
from bridge.reporting.plan import as_dict, as_json, as_text, json_chunks, text_chunks
from bridge.reporting.render import render_chunks

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(), values, max_size=5),
    st.dictionaries(st.text(), st.lists(values, max_size=5), max_size=3),
)
def test_pieces_join_to_json_dumps(plain: dict[str, Any], lazy: dict[str, list[Any]]) -> None:
    data: dict[str, Any] = {**plain, **lazy}
    want = json.dumps(data, indent=2, default=str)
    streamed = {k: iter(v) if k in lazy else v for k, v in data.items()}
    assert "".join(iter_json(streamed)) == want


def test_a_string_like_the_placeholder_is_just_a_string() -> None:
    data = {"a": "lazy-0", "b": iter([{"x": "lazy-1"}]), "c": '"lazy-0"'}
    assert "".join(iter_json(data)) == json.dumps(
        {"a": "lazy-0", "b": [{"x": "lazy-1"}], "c": '"lazy-0"'}, indent=2
    )


def _plan(n: int) -> Plan:
    plan = Plan(source="mlflow:sqlite:///src.db", dest="mlflow:sqlite:///dst.db", dry_run=False)
    lines: RunLines[RunPlan] = RunLines()
    for i in range(n):
        run = RunPlan(source_id=f"run-{i}", name=f"n{i}", project="p", action="unchanged")
        run.outcome, run.dest_id = "unchanged", f"d{i}"
        lines.append(run, final=True)  # on disk, read back as written
    plan.runs = lines
    return plan


def test_plan_json_is_the_whole_dict_dumped_and_reads_one_run_at_a_time() -> None:
    plan = _plan(50)
    assert as_json(plan) == json.dumps(as_dict(plan), indent=2, default=str)
    chunks = json_chunks(plan)
    head = next(chunks)
    assert head.endswith('"runs": ') and '"run-0"' not in head
    assert '"run-0"' in next(chunks) and '"run-1"' not in head
    rest = list(chunks)
    assert len(rest) == 51  # 49 more runs, the closing bracket, the keys after "runs"
    assert rest[-2] == "\n  ]" and rest[-1].startswith(',\n  "models": []')
    assert json.loads(as_json(plan))["counts"] == {"unchanged": 50}


def test_render_chunks_redacts_every_piece(monkeypatch: Any) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr3t-pw-value")
    plan = _plan(3)
    run = RunPlan(source_id="run-x", project="p", action="create", outcome="failed")
    run.error = "401 for s3cr3t-pw-value"
    plan.runs.append(run, final=True)
    plan.errors.append("server said: bad auth for s3cr3t-pw-value")
    text = "".join(render_chunks(plan, "json"))
    assert "s3cr3t-pw-value" not in text
    data = json.loads(text)
    assert data["errors"] == ["server said: bad auth for ***"]
    assert data["runs"][3]["error"] == "401 for ***"


def test_text_report_in_pieces_of_whole_lines() -> None:
    plan = _plan(600)
    pieces = list(text_chunks(plan, lines_per_chunk=256))
    text = as_text(plan)
    assert "".join(pieces) == text
    assert all(p.endswith("\n") for p in pieces)
    # head + "project p" + 600 runs + summary = 603 lines: 256, 256, 91
    assert [p.count("\n") for p in pieces] == [256, 256, 91]
    assert text.splitlines()[2] == "  unchanged run-0 (n0)"
    assert text.splitlines()[-1].startswith("summary: 600 unchanged; 0 points written")
    assert "".join(render_chunks(plan, "text")) == text
