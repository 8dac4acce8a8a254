"""Engine core (issue 12): adapters' notices reach the report, planning writes nothing,
each run is rendered once, and optional features are checked once by type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.features import EditableSource, RunEdits
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.engine.context import Features, SyncContext
from bridge.engine.plan import plan_run
from bridge.engine.two_way import check_two_way
from bridge.errors import BridgeError
from bridge.reporting.plan import as_dict
from bridge.state import StateStore
from bridge.uris import open_reader, open_writer

T0 = 1_650_000_000_000


def _source(tmp_path: Path, runs: int = 2) -> str:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "src-art"))
    for i in range(runs):
        run = client.create_run(exp, start_time=T0 + i, run_name=f"r{i}")
        client.log_param(run.info.run_id, "lr", str(i))
        client.log_metric(run.info.run_id, "loss", 0.5, timestamp=T0, step=0)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 10)
    return f"mlflow:{uri}"


def test_notices_reach_the_run_line_and_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notice naming a run lands on its line; one naming nothing of the plan lands in
    Plan.notices; both are in every report (Plan.warnings)."""
    src = _source(tmp_path, runs=1)
    real = MlflowReader.read_run

    def read_run(self: MlflowReader, header: Any) -> Any:
        self.notices.add(header.source_id, "test-notice", "bent something")
        self.notices.add("elsewhere", "test-other", "about nothing listed")
        return real(self, header)

    monkeypatch.setattr(MlflowReader, "read_run", read_run)
    dst = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    plan = api.sync(src, dst, state=str(tmp_path / "state.db"))
    assert plan.exit_code() == 0
    [line] = plan.runs
    assert [w.code for w in line.warnings if w.code.startswith("test")] == ["test-notice"]
    assert [w.code for w in plan.notices] == ["test-other"]
    codes = [w["code"] for w in as_dict(plan)["warnings"]]
    assert "test-notice" in codes and "test-other" in codes


def test_planning_writes_no_state_and_renders_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan_run over a pass whose state was lost (the re-link path) and a --full pass: the
    state store is unchanged until the run is settled; each run is rendered once."""
    src = _source(tmp_path)
    dst = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    state_path = str(tmp_path / "state.db")
    assert api.sync(src, dst, state=state_path).exit_code() == 0
    renders: list[str] = []
    real = MlflowWriter.render

    def render(self: MlflowWriter, run: Any, parent_dest_id: str | None = None) -> Any:
        renders.append(run.header.source_id)
        return real(self, run, parent_dest_id)

    monkeypatch.setattr(MlflowWriter, "render", render)
    lost = str(tmp_path / "lost.db")  # state lost: every run is re-linked by its tag
    reader, writer = open_reader(src), open_writer(dst)
    writer.source_uri = reader.display_uri
    store = StateStore(lost)
    try:
        for full in (False, True):
            ctx = SyncContext(reader=reader, writer=writer, state=store, full=full)
            before = store.count_runs(ctx.dest_uri)
            planned = [plan_run(ctx, h) for h in reader.list_runs()]
            assert store.count_runs(ctx.dest_uri) == before  # nothing written by planning
            if not full:
                assert all(p.relink is not None for p in planned)
                from bridge.engine.intents import record_intents

                for p in planned:
                    record_intents(ctx, p)
                assert store.count_runs(ctx.dest_uri) == len(planned)
            else:
                assert all(p.refingerprint is not None for p in planned)
                assert sorted(renders) == sorted(p.plan.source_id for p in planned)
    finally:
        reader.close()
        writer.close()
        store.close()
    renders.clear()
    plan = api.sync(src, dst, state=state_path, full=True)
    assert plan.exit_code() == 0
    assert len(renders) == len(set(renders)) == len(plan.runs)  # once per run


def test_features_are_typed_views_and_two_way_needs_a_source_writer(tmp_path: Path) -> None:
    src = _source(tmp_path, runs=1)
    reader, writer = open_reader(src), open_writer(f"mlflow:sqlite:///{tmp_path / 'd.db'}")
    try:
        f = Features.of(reader, writer, None)
        assert f.read_back is writer and f.edits is writer and f.registry is writer
        assert f.source_edits is None
        assert isinstance(reader, EditableSource) and isinstance(writer, RunEdits)
        with pytest.raises(BridgeError, match="--two-way needs the source"):
            check_two_way(reader, writer, None)  # readers never write: a writer is needed
        check_two_way(reader, writer, open_writer(src))
    finally:
        reader.close()
        writer.close()
