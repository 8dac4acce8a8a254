"""WandbWriter against the real SDK: offline run folders read back with WandbOfflineReader,
and full engine passes from a real MLflow sqlite store."""

from __future__ import annotations

import io
import math
import os
import string
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.wandb.mapping import (
    DEFAULT_WANDB_MAPPING_PATH,
    WandbMapping,
    load_wandb_mapping,
)
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.writer import WandbOfflineWriter
from bridge.engine.sync import run_sync
from bridge.errors import BridgeError
from bridge.schema import MetricChunk, Project, Run, RunHeader
from bridge.state import StateStore

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")

Point = tuple[int, int, float]  # source step, timestamp ms, value
T0 = 1_700_000_000_000

LOSS: list[Point] = [  # repeated steps, a backwards step, NaN, +inf, a shared timestamp
    (0, T0 + 1, 1.0),
    (1, T0 + 2, 0.9),
    (1, T0 + 3, 0.85),
    (2, T0 + 4, math.nan),
    (1, T0 + 5, 0.7),
    (5, T0 + 7, math.inf),
    (4, T0 + 7, 0.45),
    (6, T0 + 8, 0.3),
]
ACC: list[Point] = [(0, T0 + 1, 0.1), (1, T0 + 2, 0.2), (10, T0 + 9, -math.inf)]


# --------------------------------------------------------------------------- helpers


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_points(got: list[Point], want: list[Point]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0] and g[1] == w[1] and same(g[2], w[2]), (g, w)


def read_back(root: Path) -> dict[str, tuple[Run, dict[str, list[Point]]]]:
    """source id -> (run as the offline reader sees it, points per key with SOURCE steps).

    The writer's history rows carry the source step under the step key; the reader reports
    the row counter as step, so points are re-joined with the step key by row.
    """
    reader = WandbOfflineReader(str(root), restore_bridge=False)  # the raw layout
    out: dict[str, tuple[Run, dict[str, list[Point]]]] = {}
    for header in reader.list_runs():
        run = reader.read_run(header)
        step_key = run.config["_bridge.step_key"]
        rows: dict[str, dict[int, tuple[int, float]]] = {}
        for item in reader.iter_history(run):
            assert isinstance(item, MetricChunk), item
            per = rows.setdefault(item.key, {})
            for step, ts, value in zip(item.steps, item.timestamps, item.values, strict=True):
                assert step not in per, f"{item.key}: row {step} twice"
                per[step] = (ts, value)
        source_steps = rows.pop(step_key, {})
        points: dict[str, list[Point]] = {}
        for key, per in rows.items():
            points[key] = [
                (int(source_steps[row][1]), ts, value) for row, (ts, value) in sorted(per.items())
            ]
        out[str(run.config["_bridge.source_id"])] = (run, points)
    return out


def folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "wandb").glob("offline-run-*") if p.is_dir())


def neutral_run(source_id: str = "mlflow:sqlite:///x.db#run1", **kw: Any) -> Run:
    project = Project(source_id="mlflow:sqlite:///x.db#experiment:1", name="exp/one")
    fields: dict[str, Any] = {
        "name": "first-run",
        "notes": "some notes",
        "config": {"lr": "0.01", "opt.name": "adam", "--weird": "x"},
        "extra_tags": {
            "baseline": "true",
            "team": "vision",
            "empty": "",
            "mlflow.source.name": "train.py",
        },
        "parent_source_id": "mlflow:sqlite:///x.db#parent123",
        "user": "alice",
        "start_time_ms": T0,
        "end_time_ms": T0 + 60_000,
        "status": "KILLED",
    }
    fields.update(kw)
    header = RunHeader(
        source_id=source_id, native_id="run1", project=project, name="first-run", fingerprint="fp1"
    )
    return Run(header=header, **fields)


def write_whole(
    writer: WandbOfflineWriter, run: Run, chunks: list[MetricChunk], files: dict[str, bytes]
) -> str:
    """What the engine does for a new run, through the public Writer methods."""
    project_id = writer.ensure_project(run.header.project)
    rendered = writer.render(run)
    dest = writer.create_run(project_id, run, rendered)
    writer.write_metadata(dest, run, rendered.params, rendered.tags)
    sink = writer.metric_sink(dest)
    for chunk in chunks:
        sink.add(chunk)
    sink.flush()
    for path, data in files.items():
        writer.put_file(dest, path, io.BytesIO(data))
    writer.finish_run(dest, run, run.header.fingerprint)
    return dest


def chunk(key: str, points: list[Point]) -> MetricChunk:
    return MetricChunk(
        key=key,
        steps=[p[0] for p in points],
        timestamps=[p[1] for p in points],
        values=[p[2] for p in points],
    )


# --------------------------------------------------------------------------- mapping


def test_mapping_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_wandb_mapping(DEFAULT_WANDB_MAPPING_PATH) == WandbMapping()
    bad = tmp_path / "bad.toml"
    bad.write_text('project_nam = "x"\n')
    with pytest.raises(BridgeError, match="project_nam"):
        load_wandb_mapping(bad)


def test_run_ids_are_deterministic_and_valid() -> None:
    m = WandbMapping()
    a = m.run_id_for("mlflow:sqlite:///x.db#abc")
    assert a == m.run_id_for("mlflow:sqlite:///x.db#abc")
    assert a != m.run_id_for("mlflow:sqlite:///x.db#abd")
    assert len(a) == 12 and set(a) <= set(string.ascii_lowercase + string.digits)
    assert WandbMapping(run_id_salt="2").run_id_for("mlflow:sqlite:///x.db#abc") != a
    assert m.project_for("/Users/me/exp:1", None) == "Users-me-exp-1"


# --------------------------------------------------------------------------- writer


def test_hand_built_run_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "out"
    writer = WandbOfflineWriter(str(root))
    writer.source_uri = "mlflow:sqlite:///x.db"
    run = neutral_run()
    files = {"model/weights.bin": b"\x00\x01w", "config.yaml": b"a: 1\n"}
    rendered = writer.render(run)
    assert any(w.code == "sanitized-key" for w in rendered.warnings)  # "--weird"
    dest = write_whole(
        writer, run, [chunk("loss", LOSS), chunk("acc", ACC), chunk("_step", [(3, T0, 9.0)])], files
    )
    assert dest == f"exp-one/{WandbMapping().run_id_for(run.header.source_id)}"
    assert len(folders(root)) == 1

    got = read_back(root)
    back, points = got[run.header.source_id]
    assert back.header.native_id == dest.split("/")[1]
    assert back.name == "first-run" and back.notes == "some notes"
    assert back.group == WandbMapping().run_id_for("mlflow:sqlite:///x.db#parent123")
    assert sorted(back.tags) == ["baseline", "empty"]
    cfg = back.config
    assert cfg["lr"] == "0.01" and cfg["opt.name"] == "adam" and cfg["_--weird_"] == "x"
    assert cfg["mlflow_tags"] == run.extra_tags  # every tag kept verbatim
    assert cfg["_bridge.start_time_ms"] == T0 and cfg["_bridge.end_time_ms"] == T0 + 60_000
    assert cfg["_bridge.status"] == "KILLED" and cfg["_bridge.user"] == "alice"
    assert cfg["_bridge.source_uri"] == "mlflow:sqlite:///x.db"
    assert cfg["_bridge.complete"] is True and cfg["_bridge.fingerprint"] == "fp1"
    assert back.exit_code == 255  # KILLED
    assert_points(points["loss"], LOSS)
    assert_points(points["acc"], ACC)
    assert_points(points["metric:_step"], [(3, T0, 9.0)])  # a reserved key, renamed
    reader = WandbOfflineReader(str(root), restore_bridge=False)  # the raw layout
    by_path = {f.path: f for f in back.files}
    with reader.open_file(by_path["files/model/weights.bin"]) as fh:
        assert fh.read() == b"\x00\x01w"
    with reader.open_file(by_path["files/bridge/source-files/config.yaml"]) as fh:
        assert fh.read() == b"a: 1\n"

    # What get_run reports equals what render produces: an unchanged run diffs empty.
    dest_run = writer.get_run(dest)
    assert dest_run is not None and dest_run.complete and dest_run.fingerprint == "fp1"
    assert dest_run.source_id == run.header.source_id
    assert {k: dest_run.params.get(k) for k in rendered.params} == rendered.params
    assert {k: dest_run.tags.get(k) for k in rendered.tags} == rendered.tags
    assert writer.get_run("exp-one/doesnotexist") is None
    assert writer.metric_counts(dest) == {"loss": len(LOSS), "acc": len(ACC), "_step": 1}


def test_update_appends_to_the_same_run(tmp_path: Path) -> None:
    root = tmp_path / "out"
    writer = WandbOfflineWriter(str(root))
    run = neutral_run(status="FINISHED")
    dest = write_whole(writer, run, [chunk("loss", LOSS[:3])], {})

    later = neutral_run(status="FINISHED", notes="edited", tags=["extra"])
    later.extra_tags["new-tag"] = "true"
    writer2 = WandbOfflineWriter(str(root))  # a new process: nothing live
    assert writer2.get_run(dest) is not None
    writer2.begin_update(dest)
    rendered = writer2.render(later)
    writer2.write_metadata(dest, later, {}, {"wandb.notes": "edited", "wandb.tag.extra": "true"})
    sink = writer2.metric_sink(dest)
    sink.add(chunk("loss", LOSS[3:]))
    sink.flush()
    writer2.finish_run(dest, later, "fp2")

    assert len(folders(root)) == 2  # a resume is a second folder for the same id
    ((back, points),) = read_back(root).values()
    assert back.header.native_id == dest.split("/")[1]
    assert_points(points["loss"], LOSS)  # first part + appended part, nothing twice
    assert back.notes == "edited" and "extra" in back.tags and "baseline" in back.tags
    assert back.exit_code == 0 and back.config["_bridge.fingerprint"] == "fp2"
    assert back.warnings == []  # rows continue the first folder's _step: no shift needed
    dest_run = writer2.get_run(dest)
    assert dest_run is not None and dest_run.complete
    assert dest_run.tags["wandb.notes"] == rendered.tags["wandb.notes"]


# --------------------------------------------------------------------------- engine


def build_mlflow(uri: str, tmp: Path) -> dict[str, str]:
    """Two experiments; a parent with a child, a failed and a killed run; files."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    c = MlflowClient(tracking_uri=uri)
    art = tmp / "art"
    exp_a = c.create_experiment("exp-a", artifact_location=str(art / "a"))
    exp_b = c.create_experiment("exp-b", artifact_location=str(art / "b"))
    ids: dict[str, str] = {}

    parent = c.create_run(exp_a, start_time=T0, run_name="parent", tags={"baseline": "true"})
    ids["parent"] = parent.info.run_id
    c.log_batch(
        parent.info.run_id,
        metrics=[Metric("loss", v, ts, s) for s, ts, v in LOSS]
        + [Metric("acc", v, ts, s) for s, ts, v in ACC],
        params=[Param("lr", "0.01"), Param("layers", "[64, 32]")],
        tags=[RunTag("team", "vision"), RunTag("mlflow.note.content", "parent notes")],
    )
    f = tmp / "weights.txt"
    f.write_text("w=1\n")
    c.log_artifact(parent.info.run_id, str(f), "model")
    c.set_terminated(parent.info.run_id, "FINISHED", end_time=T0 + 10_000)

    child = c.create_run(
        exp_a,
        start_time=T0 + 100,
        run_name="child",
        tags={"mlflow.parentRunId": parent.info.run_id},
    )
    ids["child"] = child.info.run_id
    c.log_metric(child.info.run_id, "x", 1.5, timestamp=T0 + 101, step=3)
    c.set_terminated(child.info.run_id, "FAILED", end_time=T0 + 200)

    killed = c.create_run(exp_b, start_time=T0 + 300, run_name="killed")
    ids["killed"] = killed.info.run_id
    c.log_metric(killed.info.run_id, "y", 2.0, timestamp=T0 + 301, step=0)
    c.set_terminated(killed.info.run_id, "KILLED", end_time=T0 + 400)
    return ids


def mlflow_points(uri: str, run_id: str) -> dict[str, list[Point]]:
    reader = MlflowReader(uri)
    header = next(h for h in reader.list_runs() if h.native_id == run_id)
    out: dict[str, list[Point]] = {}
    for item in reader.iter_history(reader.read_run(header)):
        assert isinstance(item, MetricChunk)
        out.setdefault(item.key, []).extend(
            zip(item.steps, item.timestamps, item.values, strict=True)
        )
    return out


@pytest.fixture
def mlflow_store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, build_mlflow(uri, tmp_path)


def test_engine_sync_mlflow_to_offline(
    tmp_path: Path, mlflow_store: tuple[str, dict[str, str]]
) -> None:
    uri, ids = mlflow_store
    root = tmp_path / "wandb-out"
    state = StateStore(str(tmp_path / "state.db"))
    writer = WandbOfflineWriter(str(root))
    plan = run_sync(MlflowReader(uri), writer, state, workers=3)
    assert [(p.action, p.outcome, p.error) for p in plan.runs] == [("create", "done", None)] * 3
    assert len(folders(root)) == 3

    got = read_back(root)
    by_name = {run.name: (run, points) for run, points in got.values()}
    for name in ("parent", "child", "killed"):
        run, points = by_name[name]
        sid = run.config["_bridge.source_id"]
        assert run.header.native_id == WandbMapping().run_id_for(sid)
        assert run.config["_bridge.source_run_id"] == ids[name]
        want = mlflow_points(uri, ids[name])
        assert sorted(points) == sorted(want)
        for key in want:
            assert_points(points[key], want[key])
    parent, _ = by_name["parent"]
    assert parent.header.project.name == "exp-a" and parent.notes == "parent notes"
    assert parent.config["lr"] == "0.01" and parent.config["layers"] == "[64, 32]"
    assert parent.config["mlflow_tags"]["team"] == "vision" and "baseline" in parent.tags
    assert parent.config["_bridge.start_time_ms"] == T0
    assert parent.config["_bridge.end_time_ms"] == T0 + 10_000
    files = {f.path for f in parent.files}
    assert "files/model/weights.txt" in files
    child, _ = by_name["child"]
    assert child.group == parent.header.native_id and child.exit_code == 1
    assert child.config["_bridge.parent_source_id"] == parent.config["_bridge.source_id"]
    killed, _ = by_name["killed"]
    assert killed.header.project.name == "exp-b" and killed.exit_code == 255

    # Second pass: nothing to do, nothing written.
    before = [(p, p.stat().st_mtime_ns) for p in folders(root)]
    again = run_sync(MlflowReader(uri), writer, state)
    assert {p.action for p in again.runs} == {"unchanged"}
    assert sum(p.points_written for p in again.runs) == 0
    assert [(p, p.stat().st_mtime_ns) for p in folders(root)] == before

    # Lost state: rebuilt from the identity keys in config, still nothing written.
    fresh = StateStore(str(tmp_path / "state2.db"))
    relinked = run_sync(MlflowReader(uri), WandbOfflineWriter(str(root)), fresh)
    assert {p.action for p in relinked.runs} == {"unchanged"}
    assert len(folders(root)) == 3

    # New source points and a new tag: appended to the same W&B run, nothing twice.
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    c.log_metric(ids["parent"], "loss", 0.1, timestamp=T0 + 20, step=2)
    c.set_tag(ids["parent"], "stage", "true")
    third = run_sync(MlflowReader(uri), WandbOfflineWriter(str(root)), state)
    actions = {p.name: (p.action, p.outcome, p.points_written) for p in third.runs}
    assert actions["parent"] == ("update", "done", 1), third.runs
    assert actions["child"][0] == actions["killed"][0] == "unchanged"
    assert len(folders(root)) == 4
    parent, points = {r.name: (r, p) for r, p in read_back(root).values()}["parent"]
    assert_points(points["loss"], mlflow_points(uri, ids["parent"])["loss"])
    assert "stage" in parent.tags and parent.config["mlflow_tags"]["stage"] == "true"


def test_interrupted_run_is_finished_without_duplicates(
    tmp_path: Path, mlflow_store: tuple[str, dict[str, str]]
) -> None:
    """A run left incomplete (the process died after some points) and no state at all:
    the next sync finds it by identity, counts what is stored and appends the rest."""
    uri, ids = mlflow_store
    root = tmp_path / "wandb-out"
    reader = MlflowReader(uri)
    header = next(h for h in reader.list_runs() if h.native_id == ids["parent"])
    run = reader.read_run(header)
    writer = WandbOfflineWriter(str(root))
    project_id = writer.ensure_project(run.header.project)
    rendered = writer.render(run)
    dest = writer.create_run(project_id, run, rendered)
    writer.write_metadata(dest, run, rendered.params, rendered.tags)
    sink = writer.metric_sink(dest)
    sink.add(chunk("loss", LOSS[:4]))
    sink.flush()
    writer.close()  # stops without the completion marker
    dest_run = writer.get_run(dest)
    assert dest_run is not None and not dest_run.complete

    plan = run_sync(
        MlflowReader(uri), WandbOfflineWriter(str(root)), StateStore(str(tmp_path / "state.db"))
    )
    parent_plan = next(p for p in plan.runs if p.name == "parent")
    assert (parent_plan.action, parent_plan.outcome) == ("resume", "done")
    parent, points = {r.name: (r, p) for r, p in read_back(root).values()}["parent"]
    want = mlflow_points(uri, ids["parent"])
    assert_points(points["loss"], want["loss"])
    assert_points(points["acc"], want["acc"])
    assert parent.config["_bridge.complete"] is True


def test_update_after_state_loss_appends_only(
    tmp_path: Path, mlflow_store: tuple[str, dict[str, str]]
) -> None:
    uri, ids = mlflow_store
    root = tmp_path / "wandb-out"
    run_sync(MlflowReader(uri), WandbOfflineWriter(str(root)), StateStore(str(tmp_path / "a.db")))
    fresh = StateStore(str(tmp_path / "b.db"))
    run_sync(MlflowReader(uri), WandbOfflineWriter(str(root)), fresh)  # re-links
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.log_metric(ids["parent"], "loss", 0.1, timestamp=T0 + 20, step=2)
    # a point that does not become the key's latest is not in the MLflow fingerprint; the tag is
    client.set_tag(ids["parent"], "stage", "true")
    plan = run_sync(MlflowReader(uri), WandbOfflineWriter(str(root)), fresh)
    parent = next(p for p in plan.runs if p.name == "parent")
    assert (parent.action, parent.points_written) == ("update", 1)


# --------------------------------------------------------------------------- online


@pytest.mark.e2e
def test_engine_sync_mlflow_to_fake_server(
    tmp_path: Path, mlflow_store: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online through the real SDK to the loopback fake server, read back with the
    project's own API reader; a second pass writes nothing."""
    from fakes.wandb_server import FakeWandbServer

    from bridge.adapters.base import ReaderOptions
    from bridge.adapters.wandb.api_reader import WandbApiReader
    from bridge.adapters.wandb.writer import WandbWriter

    uri, ids = mlflow_store
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        target = f"acme?base_url={srv.url}"
        state = StateStore(str(tmp_path / "state.db"))
        plan = run_sync(MlflowReader(uri), WandbWriter(target), state, workers=2)
        assert [(p.outcome, p.error) for p in plan.runs] == [("done", None)] * 3, srv.errors

        reader = WandbApiReader(
            f"acme/exp-a?base_url={srv.url}", ReaderOptions(), restore_bridge=False
        )
        heads = {h.name: h for h in reader.list_runs()}
        assert set(heads) == {"parent", "child"}
        parent = reader.read_run(heads["parent"])
        assert parent.config["_bridge.source_run_id"] == ids["parent"]
        assert parent.config["_bridge.start_time_ms"] == T0 and "baseline" in parent.tags
        assert parent.header.native_id == WandbMapping().run_id_for(
            parent.config["_bridge.source_id"]
        )
        rows: dict[str, dict[int, tuple[int, float]]] = {}
        for item in reader.iter_history(parent):
            if isinstance(item, MetricChunk):
                per = rows.setdefault(item.key, {})
                for s, ts, v in zip(item.steps, item.timestamps, item.values, strict=True):
                    per[s] = (ts, v)
        steps = rows.pop("mlflow_step")
        got = {
            k: [(int(steps[r][1]), ts, v) for r, (ts, v) in sorted(per.items())]
            for k, per in rows.items()
            if not k.startswith("system/")
        }
        want = mlflow_points(uri, ids["parent"])
        for key in want:
            assert_points(got[key], want[key])
        assert "model/weights.txt" in {f.path.split("/", 1)[-1] for f in parent.files}
        reader.close()
        writer = WandbWriter(target)
        dest = f"acme/exp-a/{parent.header.native_id}"
        assert writer.metric_counts(dest) == {k: len(v) for k, v in want.items()}
        assert writer.get_run("acme/exp-a/nosuchrun") is None
        found = writer.find_runs_by_source("acme/exp-a")
        assert {d.dest_id for d in found.values()} >= {dest} and all(
            d.complete for d in found.values()
        )

        again = run_sync(MlflowReader(uri), WandbWriter(target), state)
        assert {p.action for p in again.runs} == {"unchanged"}
        relinked = run_sync(
            MlflowReader(uri), WandbWriter(target), StateStore(str(tmp_path / "s2.db"))
        )
        assert {p.action for p in relinked.runs} == {"unchanged"}, relinked.runs
