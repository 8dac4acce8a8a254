"""End to end: MLflow → MLflow copies (sqlite → sqlite, sqlite → server on PostgreSQL)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import start_mlflow_server, stop_mlflow_server
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bridge import api

pytestmark = pytest.mark.e2e

T0 = 1_650_000_000_000


def _make_source(uri: str, tmp: Path) -> dict[str, str]:
    """Two experiments; a parent with a nested child; odd metric histories; artifacts."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("vision", tags={"team": "cv"})
    other = client.create_experiment("nlp")
    parent = client.create_run(exp, start_time=T0, run_name="sweep", tags={"team": "cv"})
    pid = parent.info.run_id
    client.log_batch(
        pid,
        params=[Param("lr", "0.01"), Param("opt", "adam")],
        tags=[RunTag("mlflow.note.content", "the sweep")],
    )
    metrics = [Metric("loss", 1.0 / (i + 1), T0 + i * 10, i) for i in range(1500)]
    metrics += [
        Metric("acc", v, T0 + i, s)
        for i, (s, v) in enumerate(
            [(0, 0.1), (1, 0.2), (1, 0.25), (0, 0.3), (5, math.nan)]  # repeated/backwards/NaN
        )
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(pid, metrics=metrics[i : i + 1000])
    art = tmp / "art"
    (art / "nested" / "deep").mkdir(parents=True)
    (art / "model.txt").write_text("weights")
    (art / "nested" / "deep" / "data.csv").write_text("a,b\n1,2\n")
    client.log_artifacts(pid, str(art))
    # The fluent API needs the global tracking URI; MLflow's own context manager restores
    # it to "unset" afterwards (later tests resolve models:/ URIs through it).
    with _use_tracking_uri(uri), mlflow.start_run(run_id=pid):
        ds = mlflow.data.from_numpy(
            np.arange(6).reshape(3, 2), source="s3://bucket/x.npy", name="train"
        )
        mlflow.log_input(ds, context="training")
    client.set_terminated(pid, "FINISHED", end_time=T0 + 60_000)
    child = client.create_run(
        exp, start_time=T0 + 1000, run_name="trial-1", tags={"mlflow.parentRunId": pid}
    )
    client.log_metric(child.info.run_id, "loss", 0.5, timestamp=T0 + 2000, step=3)
    client.set_terminated(child.info.run_id, "FAILED", end_time=T0 + 5000)
    lone = client.create_run(other, start_time=T0 + 7, run_name="bert")
    client.log_param(lone.info.run_id, "layers", "12")
    client.set_terminated(lone.info.run_id, "KILLED", end_time=T0 + 9)
    return {"parent": pid, "child": child.info.run_id, "lone": lone.info.run_id}


def _snapshot(uri: str, tmp: Path) -> dict[str, dict[str, Any]]:
    """Per run name: what an MLflow → MLflow copy promises to keep."""
    client = MlflowClient(tracking_uri=uri)
    out: dict[str, dict[str, Any]] = {}
    ids: dict[str, str] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=100):
            ids[run.info.run_id] = run.info.run_name
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=100):
            rid = run.info.run_id
            files: dict[str, bytes] = {}
            stack = [""]
            while stack:
                for f in client.list_artifacts(rid, stack.pop() or None):
                    if f.is_dir:
                        stack.append(f.path)
                    elif not f.path.startswith("bridge/"):
                        local = client.download_artifacts(rid, f.path, str(tmp))
                        files[f.path] = Path(local).read_bytes()
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("bridge.")}
            if tags.get("mlflow.user") == run.info.user_id:
                del tags["mlflow.user"]  # the tag is how a copy sets user_id
            parent = tags.pop("mlflow.parentRunId", None)
            out[run.info.run_name] = {
                "experiment": exp.name,
                "start": run.info.start_time,
                "end": run.info.end_time,
                "status": run.info.status,
                "user": run.info.user_id,
                "params": dict(run.data.params),
                "tags": tags,
                "parent": ids.get(parent) if parent else None,
                "metrics": {
                    k: sorted(
                        (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                        for m in client.get_metric_history(rid, k)
                    )
                    for k in run.data.metrics
                },
                "files": files,
                "datasets": sorted(
                    (d.dataset.name, d.dataset.digest, d.dataset.source)
                    for d in run.inputs.dataset_inputs
                ),
            }
    return out


def _check_copy(src_uri: str, dst_uri: str, tmp: Path) -> None:
    state = str(tmp / "state.db")
    plan = api.sync(f"mlflow:{src_uri}", f"mlflow:{dst_uri}", state=state)
    assert plan.exit_code() == 0, [(r.source_id, r.error) for r in plan.runs]
    assert plan.counts() == {"create": 3}
    src, dst = _snapshot(src_uri, tmp / "a"), _snapshot(dst_uri, tmp / "b")
    assert src.keys() == dst.keys() == {"sweep", "trial-1", "bert"}
    for name in src:
        for field in src[name]:
            assert dst[name][field] == src[name][field], (name, field)
    assert dst["trial-1"]["parent"] == "sweep"
    assert dst["sweep"]["datasets"] and dst["sweep"]["metrics"]["loss"][0][1] == T0
    again = api.sync(f"mlflow:{src_uri}", f"mlflow:{dst_uri}", state=state)
    assert again.counts() == {"unchanged": 3}
    assert sum(r.points_written for r in again.runs) == 0


def test_sqlite_to_sqlite_copy_is_exact_and_idempotent(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _make_source(src, tmp_path)
    _check_copy(src, f"sqlite:///{tmp_path / 'dst.db'}", tmp_path)


def test_sqlite_to_server_on_postgres(tmp_path: Path, pg_database: str) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _make_source(src, tmp_path)
    url, proc = start_mlflow_server(tmp_path / "server", backend_uri=pg_database)
    try:
        _check_copy(src, url, tmp_path)
    finally:
        stop_mlflow_server(proc)


@pytest.mark.parametrize("on_delete", ["keep", "tag", "delete"])
def test_source_deletions_follow_on_delete(tmp_path: Path, on_delete: str) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    ids = _make_source(src, tmp_path)
    state = str(tmp_path / "state.db")
    assert api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state).exit_code() == 0
    MlflowClient(tracking_uri=src).delete_run(ids["lone"])
    plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state, on_delete=on_delete)
    assert plan.exit_code() == 0
    (line,) = [r for r in plan.runs if r.source_id.endswith("#" + ids["lone"])]
    assert line.action == "source-deleted" and "no longer exists" in (line.reason or "")
    client = MlflowClient(tracking_uri=dst)
    copy = next(
        r
        for r in client.search_runs(
            [e.experiment_id for e in client.search_experiments()], run_view_type=3
        )
        if r.info.run_name == "bert"
    )
    deleted_tag = copy.data.tags.get("bridge.source_deleted")
    if on_delete == "keep":
        assert copy.info.lifecycle_stage == "active" and deleted_tag is None
    elif on_delete == "tag":
        assert copy.info.lifecycle_stage == "active" and deleted_tag == "true"
    else:
        assert copy.info.lifecycle_stage == "deleted"
    # reported once: the next cycle is quiet
    again = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state, on_delete=on_delete)
    assert [r.action for r in again.runs] == ["unchanged", "unchanged"]


@pytest.mark.parametrize("answer", ["present", "unknown", "raises"])
def test_an_unlisted_run_the_source_still_has_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """A complete-looking listing that misses a run (a server hiding an experiment from
    these credentials) must not make ``--on-delete delete`` delete its copy: the reader is
    asked first, and only a run it says is gone counts as deleted."""
    from bridge.adapters.mlflow.presence import MlflowPresence
    from bridge.adapters.mlflow.reader import MlflowReader

    src = f"sqlite:///{tmp_path / 'src.db'}"
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    ids = _make_source(src, tmp_path)
    state = str(tmp_path / "state.db")
    assert api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state).exit_code() == 0
    listed = MlflowReader.list_runs
    monkeypatch.setattr(  # the run is there, but the listing does not show it
        MlflowReader,
        "list_runs",
        lambda self: (h for h in listed(self) if not h.source_id.endswith("#" + ids["lone"])),
    )
    if answer != "present":

        def ask(self: MlflowPresence, source_id: str) -> str:
            if answer == "raises":
                raise RuntimeError("connection reset")
            return answer

        monkeypatch.setattr(MlflowPresence, "run_presence", ask)
    for _ in range(2):  # not marked deleted: asked again, kept again
        plan = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state, on_delete="delete")
        (line,) = [r for r in plan.runs if r.source_id.endswith("#" + ids["lone"])]
        assert line.outcome == "skipped" and "copy kept" in (line.reason or "")
        assert [w.code for w in line.warnings] == ["source-unlisted"]
    client = MlflowClient(tracking_uri=dst)
    copies = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], run_view_type=3
    )
    bert = [r for r in copies if r.info.run_name == "bert"]
    assert len(bert) == 1 and bert[0].info.lifecycle_stage == "active"
    monkeypatch.undo()  # listed again: nothing was lost, nothing to re-create
    again = api.sync(f"mlflow:{src}", f"mlflow:{dst}", state=state, on_delete="delete")
    assert sorted(r.action for r in again.runs) == ["unchanged"] * 3
