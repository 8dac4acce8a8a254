"""A pass's plan lines kept on disk once final (engine/lines.py ``RunLines``, ``Plan.runs``):
the same lines, in order, as often as asked; lines added by hand stay the same objects; a
sync holds O(workers) lines in memory, not one per run."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.engine.lines import RunLines
from bridge.engine.model import Plan, RunPlan
from bridge.reporting import render

WORKERS = 2
RUNS = 30


def _lines(n: int) -> list[RunPlan]:
    return [
        RunPlan(
            source_id=f"src#{i:02d}",
            project=f"p{i % 3}",
            action="create",
            name=f"r{i}",
            params_to_write={"lr": str(i)},
        )
        for i in range(n)
    ]


def test_sealed_lines_read_back_equal_in_order_and_leave_memory() -> None:
    made = _lines(20)
    lines: RunLines[RunPlan] = RunLines()
    for line in made:
        lines.append(line, final=True)
    assert len(lines) == 20 and not lines._live  # all on disk
    assert list(lines) == made and list(lines) == made  # read again from the start
    assert lines[0] == made[0] and lines[-1] == made[-1] and lines[3:5] == made[3:5]
    assert lines[0] is not made[0]  # a copy read back
    with pytest.raises(IndexError):
        lines[20]
    key = lambda r: (r.project, r.source_id)  # noqa: E731
    assert list(lines.ordered(key)) == sorted(made, key=key)
    assert pickle.loads(pickle.dumps(lines)) == made
    assert copy.deepcopy(lines) == lines


def test_live_lines_are_the_same_objects_until_sealed() -> None:
    made = _lines(3)
    plan = Plan(source="a", dest="b", dry_run=False, runs=made)
    assert isinstance(plan.runs, RunLines)
    assert all(a is b for a, b in zip(plan.runs, made, strict=True))
    plan.runs[1].outcome = "failed"  # a caller changing a line it was handed
    assert plan.exit_code() == 1
    plan.runs.seal(1)
    assert plan.runs[1].outcome == "failed" and plan.runs[1] is not made[1]
    plan.runs = [made[0]]  # assignment is validated into lines too
    assert isinstance(plan.runs, RunLines) and len(plan.runs) == 1


def test_reserved_places_keep_the_order_lines_are_put_in() -> None:
    made = _lines(4)
    lines: RunLines[RunPlan] = RunLines()
    places = [lines.reserve() for _ in made]
    for i in (2, 0, 3, 1):  # finished out of order
        lines.put(places[i], made[i])
        lines.seal(places[i])
    assert list(lines) == made
    with pytest.raises(ValueError):
        lines.put(0, made[0])  # sealed lines do not change


def test_transformed_lines_keep_what_was_in_memory_in_memory() -> None:
    made = _lines(3)
    lines = RunLines(made)
    lines.seal(0)
    same = lines.transformed(lambda r: r)
    assert same[1] is made[1] and same[2] is made[2] and list(same._live) == [1, 2]
    renamed = lines.transformed(lambda r: r.model_copy(update={"name": "x"}))
    assert [r.name for r in renamed] == ["x"] * 3
    assert [r.name for r in lines] == ["r0", "r1", "r2"]  # the original is untouched


def test_reports_are_the_same_from_disk_and_from_memory() -> None:
    made = _lines(12)
    live = Plan(source="a", dest="b", dry_run=True, runs=[m.model_copy() for m in made])
    sealed = Plan(source="a", dest="b", dry_run=True, runs=made)
    sealed.runs.seal_all()
    for fmt in ("text", "json", "markdown"):
        assert render(sealed, fmt) == render(live, fmt)
    strip = lambda s: s.split("generated", 1)[0]  # noqa: E731 - the page's time stamp
    assert strip(render(sealed, "html")) == strip(render(live, "html"))
    text = render(sealed, "text").splitlines()
    assert text.index("project p0") < text.index("project p1") < text.index("project p2")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('spool') / 'src.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("spool")
    for i in range(RUNS):
        run = client.create_run(exp, start_time=1_600_000_000_000 + i, run_name=f"r{i}")
        client.log_batch(
            run.info.run_id,
            params=[Param("i", str(i))],
            metrics=[Metric("loss", 1 / (s + 1), 1_600_000_000_000 + s, s) for s in range(3)],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    return f"mlflow:{uri}"


@pytest.mark.e2e
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_sync_holds_o_workers_plan_lines(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    most = [0]
    put, seal = RunLines.put, RunLines.seal

    def counted_put(self: RunLines[Any], i: int, line: Any) -> None:
        put(self, i, line)
        most[0] = max(most[0], len(self._live))

    monkeypatch.setattr(RunLines, "put", counted_put)
    monkeypatch.setattr(RunLines, "seal", lambda self, i: seal(self, i))
    dest = f"mlflow:sqlite:///{tmp_path / 'dest.db'}"
    state = str(tmp_path / "state.db")
    plan = api.sync(source, dest, state=state, workers=WORKERS, dry_run=dry_run)
    assert len(plan.runs) == RUNS and not plan.runs._live
    assert {r.outcome for r in plan.runs} == {"skipped" if dry_run else "done"}
    assert sorted(r.name or "" for r in plan.runs) == sorted(f"r{i}" for i in range(RUNS))
    # Before: every line of the pass was held until the report (30 here).
    assert 1 <= most[0] <= 2 * WORKERS, f"{most[0]} plan lines in memory at once"
    if not dry_run:  # the no-op pass reads its lines back the same way
        again = api.sync(source, dest, state=state, workers=WORKERS)
        assert {r.outcome for r in again.runs} == {"unchanged"} and len(again.runs) == RUNS
