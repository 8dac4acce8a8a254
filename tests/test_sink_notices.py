"""Metric sinks report what they had to bend (renamed keys, colliding keys) on their
writer's ``notices`` channel, and the engine puts it on the run's line where the sink's
own list used to land: before the ±inf points set aside (issue 12, one channel)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import MetricSink
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.reporting.plan import as_dict
from bridge.schema import HistoryItem, MetricChunk, Project, Run, RunHeader

T0 = 1_650_000_000_000


def test_metric_sink_contract_has_no_warnings_list() -> None:
    assert "warnings" not in MetricSink.__annotations__
    assert not hasattr(MetricSink, "warnings")


@pytest.mark.parametrize("bulk", [True, False])
def test_mlflow_sink_reports_renamed_keys_on_the_writers_notices(
    tmp_path: Path, bulk: bool
) -> None:
    writer = MlflowWriter(f"sqlite:///{tmp_path / 'd.db'}")
    writer.bulk_metrics = bulk
    try:
        project = Project(source_id="wandb:team/proj", name="proj", entity="team")
        run = Run(
            header=RunHeader(
                source_id="wandb:team/proj/r1",
                native_id="r1",
                project=project,
                fingerprint="fp",
            )
        )
        pid = writer.ensure_project(project)
        rid = writer.create_run(pid, run, writer.render(run))
        writer.write_metadata(rid, run, {}, {})
        sink = writer.metric_sink(rid)
        assert not hasattr(sink, "warnings")
        for key in ("acc@1", "acc@1", "loss"):  # one notice per renamed key, not per chunk
            sink.add(MetricChunk(key=key, steps=[0], timestamps=[T0], values=[1.0]))
        sink.flush()
        notices = writer.notices.drain()
        assert [(w.source_id, w.code) for w in notices] == [("wandb:team/proj/r1", "sanitized-key")]
        assert "'acc@1' is not allowed by MLflow; stored as 'acc:401'" in notices[0].message
        assert "bridge/key-map.json" in notices[0].message
    finally:
        writer.close()


def _source(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "src-art"))
    run = client.create_run(exp, start_time=T0, run_name="r0")
    client.log_metric(run.info.run_id, "loss", 0.5, timestamp=T0, step=0)
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 10)
    return f"mlflow:{uri}"


def _with_odd_points(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """The source's history also holds ``key`` (a name the destination must rename) and
    an +inf point of ``loss`` (set aside by destinations that cannot store it)."""
    real = MlflowReader.iter_history

    def iter_history(self: MlflowReader, run: Any) -> Iterator[HistoryItem]:
        yield from real(self, run)
        yield MetricChunk(key=key, steps=[1], timestamps=[T0 + 1], values=[2.0])
        yield MetricChunk(key="loss", steps=[2], timestamps=[T0 + 2], values=[math.inf])

    monkeypatch.setattr(MlflowReader, "iter_history", iter_history)


def test_renamed_key_reaches_the_run_line_before_the_points_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _source(tmp_path)
    _with_odd_points(monkeypatch, "acc@1")
    dst = f"mlflow:sqlite:///{tmp_path / 'dst.db'}"
    plan = api.sync(src, dst, state=str(tmp_path / "state.db"))
    assert plan.exit_code() == 0
    [line] = plan.runs
    codes = [w.code for w in line.warnings]
    assert codes == ["sanitized-key", "non-finite"]
    assert all(w.source_id == line.source_id for w in line.warnings)
    assert plan.notices == []  # on the run's line, not left in the channel
    assert [w["code"] for w in as_dict(plan)["warnings"]] == codes


def test_wandb_sink_reports_a_reserved_key_on_the_run_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    src = _source(tmp_path)
    _with_odd_points(monkeypatch, "_runtime")
    plan = api.sync(src, f"wandb-offline:{tmp_path / 'out'}", state=str(tmp_path / "s.db"))
    assert plan.exit_code() == 0
    [line] = plan.runs
    renamed = [w for w in line.warnings if w.code == "sanitized-key"]
    assert len(renamed) == 1 and renamed[0].source_id == line.source_id
    assert "'_runtime' is reserved in W&B history" in renamed[0].message
    assert plan.notices == []
