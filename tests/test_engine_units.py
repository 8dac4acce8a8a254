"""Fast unit tests of the engine's pure parts: watermark slicing, exit codes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.engine.model import Conflict, Plan, RunPlan
from bridge.engine.streams import slice_new
from bridge.reporting import as_dict, as_markdown, as_text, render
from bridge.schema import MetricChunk, Warning_


def _chunk(start: int, n: int) -> MetricChunk:
    return MetricChunk(
        key="loss",
        steps=list(range(start, start + n)),
        timestamps=[1000 + i for i in range(start, start + n)],
        values=[float(i) for i in range(start, start + n)],
    )


def test_slice_new_skips_points_under_the_watermark() -> None:
    chunk = _chunk(10, 5)  # points #10..#14 of the stream
    assert slice_new(chunk, seen_before=10, already=0) is chunk
    assert slice_new(chunk, seen_before=10, already=15) is None
    part = slice_new(chunk, seen_before=10, already=12)
    assert part is not None and part.steps == [12, 13, 14] and part.values == [12.0, 13.0, 14.0]
    assert part.timestamps == [1012, 1013, 1014]


def _plan() -> Plan:
    plan = Plan(source="wandb-offline:/d", dest="mlflow:sqlite:///m.db", dry_run=False)
    plan.runs = [
        RunPlan(
            source_id="wandb:a/p/1",
            name="one",
            project="p",
            action="create",
            outcome="done",
            points_written=42,
            params_to_write={"lr": "0.1"},
        ),
        RunPlan(
            source_id="wandb:a/p/2",
            name="<b>two|x</b>",
            project="p",
            action="unchanged",
            outcome="unchanged",
        ),
    ]
    plan.runs[0].warnings.append(
        Warning_(source_id="wandb:a/p/1", code="truncated", message="param 'long' cut")
    )
    return plan


def test_exit_codes_follow_the_contract() -> None:
    plan = _plan()
    assert plan.exit_code() == 0  # warnings allowed
    plan.runs[1].conflicts.append(
        Conflict(
            source_id="wandb:a/p/2",
            field="tag:x",
            source_value="a",
            dest_value="b",
            reason="changed in the destination",
        )
    )
    assert plan.exit_code() == 3
    plan.runs[0].outcome = "failed"
    assert plan.exit_code() == 1  # a failure outranks conflicts


def test_reports_carry_counts_warnings_and_conflicts() -> None:
    plan = _plan()
    plan.runs[1].conflicts.append(
        Conflict(
            source_id="wandb:a/p/2",
            field="param:lr",
            source_value="0.2",
            dest_value="0.1",
            synced_value="0.1",
            reason="changed at the source",
        )
    )
    data = as_dict(plan)
    assert data["counts"] == {"create": 1, "unchanged": 1}
    assert data["points_written"] == 42
    assert data["conflicts"][0]["field"] == "param:lr"
    assert json.loads(render(plan, "json"))["exit_code"] == 3
    text = as_text(plan)
    assert "create" in text and "+42 points" in text and "param:lr" in text
    assert "[truncated]" in text
    md = as_markdown(plan)
    assert "| p | `wandb:a/p/1` | one | create | done |" in md
    assert "two\\|x" in md  # table cells escape pipes


def test_relative_targets_are_keyed_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqlite:///mlflow.db` is another store in every folder: state must not mix them up."""
    from bridge.uris import open_reader, open_writer

    monkeypatch.chdir(tmp_path)
    assert open_writer("mlflow:sqlite:///m.db").display_uri == f"mlflow:sqlite:///{tmp_path}/m.db"
    assert open_writer("mlflow:sqlite:////abs/m.db").display_uri == "mlflow:sqlite:////abs/m.db"
    assert open_reader("mlflow:sqlite:///m.db").display_uri == f"mlflow:sqlite:///{tmp_path}/m.db"
    assert open_reader("wandb-offline:runs").display_uri == f"wandb-offline:{tmp_path}/runs"
    out = open_writer("wandb-offline:out?entity=acme")
    assert out.display_uri == f"wandb-offline:{tmp_path}/out"
    assert open_writer("mlflow:http://127.0.0.1:5000").display_uri == "mlflow:http://127.0.0.1:5000"
