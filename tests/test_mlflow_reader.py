"""MlflowReader against real stores: sqlite (SQL path), PostgreSQL, and an `mlflow server`."""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bridge.adapters.base import ReaderOptions
from bridge.adapters.mlflow import history as history_mod
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.uri import redact_uri
from bridge.errors import BridgeError
from bridge.schema import MetricChunk, Run

Point = tuple[int, int, float]  # step, timestamp, value


@dataclass
class Source:
    """What the builder logged, to compare the reader's output against."""

    exp_a: str = ""
    exp_b: str = ""
    parent: str = ""
    child: str = ""
    killed: str = ""
    running: str = ""
    deleted: str = ""
    imported: str = ""
    other: str = ""
    model_id: str = ""
    points: dict[str, list[Point]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def _loss_points() -> list[Point]:
    # repeated steps, a backwards step, NaN, and two points sharing a timestamp
    return [
        (0, 1_000, 1.0),
        (1, 1_001, 0.9),
        (1, 1_002, 0.85),
        (2, 1_003, math.nan),
        (1, 1_004, 0.7),
        (5, 1_006, 0.4),
        (4, 1_006, 0.45),
        (6, 1_007, 0.3),
    ]


def build_source(uri: str, art_root: Path | None, tmp: Path) -> Source:
    """Experiments and runs made with MlflowClient directly."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import (
        DatasetInput,
        InputTag,
        LoggedModelInput,
        LoggedModelOutput,
        Metric,
        Param,
        RunTag,
    )

    c = MlflowClient(tracking_uri=uri)
    src = Source()

    def loc(name: str) -> str | None:
        return str(art_root / name) if art_root else None

    src.exp_a = c.create_experiment(
        "exp-a",
        artifact_location=loc("a"),
        tags={"team": "vision", "mlflow.note.content": "experiment notes"},
    )
    src.exp_b = c.create_experiment("other-b", artifact_location=loc("b"))

    parent = c.create_run(
        src.exp_a,
        start_time=1_700_000_000_000,
        run_name="parent-run",
        tags={"mlflow.user": "ann", "mlflow.note.content": "run notes", "team": "vision"},
    )
    src.parent = pid = parent.info.run_id
    params = [Param("lr", "0.01"), Param("optimizer/name", "adam"), Param("layers", "[1, 2]")]
    src.points = {
        "loss": _loss_points(),
        "acc": [(i, 2_000 + i, i / 2500) for i in range(2500)],
        "sys/gpu util": [(0, 5_000, 10.0), (0, 5_001, 20.0), (0, 5_002, 30.0)],
    }
    metrics = [Metric(k, v, ts, st) for k, pts in src.points.items() for st, ts, v in pts]
    for n in range(0, len(metrics), 1000):
        c.log_batch(pid, metrics=metrics[n : n + 1000], params=params if n == 0 else [])
    c.log_batch(pid, tags=[RunTag("bridge.source_id", "wandb:e/p/x"), RunTag("custom", "yes")])
    for rel, body in {
        "top.json": b'{"a": 1}',
        "a/b/deep.txt": b"deep",
        "a/c.bin": b"\x00\x01",
    }.items():
        local = tmp / "upload" / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(body)
        folder = str(Path(rel).parent) if "/" in rel else None
        c.log_artifact(pid, str(local), folder)
        src.files[rel] = body
    ds = mlflow.data.from_numpy(np.arange(6).reshape(3, 2), source="s3://bucket/x.npy", name="arr")
    c.log_inputs(
        pid, [DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", "train")])]
    )
    model = c.create_logged_model(src.exp_a, source_run_id=pid, name="clf", params={"depth": "3"})
    src.model_id = model.model_id
    c.log_outputs(pid, [LoggedModelOutput(model.model_id, step=3)])
    c.set_terminated(pid, "FINISHED", end_time=1_700_000_100_000)

    child = c.create_run(
        src.exp_a,
        start_time=1_700_000_001_000,
        run_name="child",
        tags={"mlflow.parentRunId": pid},
    )
    src.child = child.info.run_id
    c.log_metric(src.child, "loss", 2.0, timestamp=1_700_000_001_500, step=0)
    c.log_inputs(src.child, models=[LoggedModelInput(src.model_id)])
    c.set_terminated(src.child, "FAILED", end_time=1_700_000_002_000)

    src.killed = c.create_run(src.exp_a, start_time=1_700_000_003_000, run_name="k").info.run_id
    c.set_terminated(src.killed, "KILLED", end_time=1_700_000_004_000)
    src.running = c.create_run(src.exp_a, start_time=1_700_000_005_000, run_name="r").info.run_id
    src.deleted = c.create_run(src.exp_a, start_time=1_700_000_006_000, run_name="d").info.run_id
    c.set_terminated(src.deleted, "FINISHED", end_time=1_700_000_007_000)
    c.delete_run(src.deleted)
    src.other = c.create_run(src.exp_b, start_time=1_700_000_008_000, run_name="o").info.run_id
    return src


def expected_order(points: list[Point]) -> list[Point]:
    """Documented order: (timestamp, step, value with NaN stored as 0, is_nan)."""

    def key(p: Point) -> tuple[int, int, float, bool]:
        nan = math.isnan(p[2])
        return (p[1], p[0], 0.0 if nan else p[2], nan)

    return sorted(points, key=key)


def history(reader: MlflowReader, run: Run) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for item in reader.iter_history(run):
        assert isinstance(item, MetricChunk)
        assert 0 < len(item) <= history_mod.CHUNK_POINTS
        out.setdefault(item.key, []).extend(
            zip(item.steps, item.timestamps, item.values, strict=True)
        )
    return out


def same_points(got: list[Point], want: list[Point]) -> bool:
    if len(got) != len(want):
        return False
    for (gs, gt, gv), (ws, wt, wv) in zip(got, want, strict=True):
        if (gs, gt) != (ws, wt):
            return False
        if not (gv == wv or (math.isnan(gv) and math.isnan(wv))):
            return False
    return True


def verify_store(uri: str, src: Source) -> MlflowReader:
    """Every field, point and file the reader gives for the built source."""
    reader = MlflowReader(uri)
    reader.check()
    headers = {h.native_id: h for h in reader.list_runs()}
    assert set(headers) == {src.parent, src.child, src.killed, src.running, src.other}
    disp = reader.display_uri
    h = headers[src.parent]
    assert h.source_id == f"{disp}#{src.parent}"
    assert h.name == "parent-run"
    assert h.project.source_id == f"{disp}#experiment:{src.exp_a}"
    assert h.project.name == "exp-a"
    assert h.project.description == "experiment notes"
    assert h.project.tags == {"team": "vision"}
    assert headers[src.other].project.name == "other-b"
    assert len({x.fingerprint for x in headers.values()}) == 5

    run = reader.read_run(h)
    assert run.name == "parent-run"
    assert run.user == "ann"
    assert run.notes == "run notes"
    assert (run.start_time_ms, run.end_time_ms) == (1_700_000_000_000, 1_700_000_100_000)
    assert run.status == "FINISHED"
    assert run.config == {"lr": "0.01", "optimizer/name": "adam", "layers": "[1, 2]"}
    assert run.tags == []
    # bridge.* dropped, name/user/notes not repeated; everything else verbatim
    assert "bridge.source_id" not in run.extra_tags
    assert not {"mlflow.runName", "mlflow.user", "mlflow.note.content"} & set(run.extra_tags)
    assert run.extra_tags["custom"] == "yes"
    assert run.extra_tags["team"] == "vision"
    assert all(not k.startswith("bridge.") for k in run.extra_tags)

    files = {f.path: f for f in run.files}
    assert set(files) == set(src.files)
    for rel, body in src.files.items():
        assert files[rel].size == len(body)
        assert files[rel].locator == {"run_id": src.parent, "path": rel}
        with reader.open_file(files[rel]) as fh:
            assert fh.read() == body

    datasets = [a for a in run.artifacts if a.type == "dataset"]
    assert len(datasets) == 1
    ds = datasets[0]
    assert (ds.name, ds.direction) == ("arr", "used")
    assert ds.digest and len(ds.digest) >= 8
    assert ds.metadata["source_type"] == "s3"
    assert "s3://bucket/x.npy" in ds.metadata["source"]
    assert "int64" in ds.metadata["schema"]
    assert '"features_shape": [3, 2]' in ds.metadata["profile"]
    assert ds.metadata["tags"] == {"mlflow.data.context": "train"}
    models = [a for a in run.artifacts if a.type == "model"]
    assert len(models) == 1
    m = models[0]
    assert (m.name, m.direction, m.version) == ("clf", "logged", src.model_id)
    assert m.metadata["model_id"] == src.model_id
    assert m.metadata["params"] == {"depth": "3"}
    assert m.metadata["source_run_id"] == src.parent
    assert m.metadata["step"] == 3  # from the run's model outputs
    assert m.metadata["status"]
    assert src.model_id in m.metadata["artifact_location"]

    got = history(reader, run)
    assert set(got) == set(src.points)
    for key, pts in src.points.items():
        assert same_points(got[key], expected_order(pts)), key

    child = reader.read_run(headers[src.child])
    assert child.status == "FAILED"
    # the parent link travels as a source identity; the engine maps it to a destination id
    assert "mlflow.parentRunId" not in child.extra_tags
    assert child.parent_source_id == f"{reader.display_uri}#{src.parent}"
    # no mlflow.user tag: MLflow records the OS user, or its placeholder "unknown" (= no user)
    info_user = reader.client.get_run(src.child).info.user_id
    assert child.user == (None if info_user == "unknown" else info_user)
    assert child.notes is None and child.files == [] and child.config == {}
    assert [(a.type, a.direction, a.metadata["model_id"]) for a in child.artifacts] == [
        ("model", "used", src.model_id)
    ]
    assert history(reader, child) == {"loss": [(0, 1_700_000_001_500, 2.0)]}
    assert reader.read_run(headers[src.killed]).status == "KILLED"
    running = reader.read_run(headers[src.running])
    assert running.status == "RUNNING" and running.end_time_ms is None
    assert history(reader, running) == {}
    return reader


# ---------------------------------------------------------------- sqlite (SQL path)


@pytest.fixture
def sqlite_source(sqlite_uri: str, tmp_path: Path) -> tuple[str, Source]:
    return sqlite_uri, build_source(sqlite_uri, tmp_path / "art", tmp_path)


def test_sqlite_every_field_and_point(sqlite_source: tuple[str, Source]) -> None:
    uri, src = sqlite_source
    reader = verify_store(uri, src)
    assert reader.display_uri == f"mlflow:{uri}"
    reader.close()


def test_sql_path_matches_mlflow_api(sqlite_source: tuple[str, Source]) -> None:
    """The direct SQL read gives exactly what MLflow's own get_metric_history gives."""
    uri, src = sqlite_source
    from mlflow import MlflowClient

    reader = MlflowReader(uri)
    header = next(h for h in reader.list_runs() if h.native_id == src.parent)
    run = reader.read_run(header)
    via_sql = history(reader, run)
    via_api: dict[str, list[Point]] = {}
    for item in reader._api_history(src.parent):
        via_api.setdefault(item.key, []).extend(
            zip(item.steps, item.timestamps, item.values, strict=True)
        )
    client = MlflowClient(uri)
    for key in src.points:
        mlflow_order = [
            (m.step, m.timestamp, m.value) for m in client.get_metric_history(src.parent, key)
        ]
        assert same_points(via_sql[key], mlflow_order), key
        assert same_points(via_api[key], mlflow_order), key
    reader.close()


def test_scope_deleted_experiments_and_run_ids(sqlite_source: tuple[str, Source]) -> None:
    uri, src = sqlite_source
    ids = lambda **kw: {h.native_id for h in MlflowReader(uri, ReaderOptions(**kw)).list_runs()}  # noqa: E731
    assert src.deleted not in ids()
    with_deleted = ids(include_deleted=True)
    assert src.deleted in with_deleted and src.parent in with_deleted
    assert ids(experiments=["other-*"]) == {src.other}
    assert ids(experiments=["exp-a"]) == {src.parent, src.child, src.killed, src.running}
    assert ids(experiments=["nomatch*"]) == set()
    with pytest.raises(BridgeError, match="no experiment matches nomatch.*exp-a, other-b"):
        MlflowReader(uri, ReaderOptions(experiments=["nomatch*"])).check()
    MlflowReader(uri, ReaderOptions(experiments=["exp-?"])).check()
    assert ids(run_ids=[src.child, src.other]) == {src.child, src.other}
    assert ids(run_ids=[src.deleted]) == set()
    assert ids(run_ids=[src.deleted], include_deleted=True) == {src.deleted}
    deleted = next(
        h
        for h in MlflowReader(uri, ReaderOptions(include_deleted=True)).list_runs()
        if h.native_id == src.deleted
    )
    assert deleted.locator["lifecycle_stage"] == "deleted"


def test_imported_run_drops_bridge_artifacts(sqlite_uri: str, tmp_path: Path) -> None:
    """A run made by an earlier bridge import: its bridge/ metadata folder is not re-exported."""
    from mlflow import MlflowClient

    c = MlflowClient(sqlite_uri)
    exp = c.create_experiment("imp", artifact_location=str(tmp_path / "art"))
    rid = c.create_run(
        exp, tags={"bridge.source_id": "wandb:e/p/1", "bridge.complete": "true"}
    ).info.run_id
    for rel in ("bridge/config.json", "bridge/summary.json", "model/weights.bin"):
        p = tmp_path / "up" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        c.log_artifact(rid, str(p), rel.rsplit("/", 1)[0])
    reader = MlflowReader(sqlite_uri)
    run = reader.read_run(next(iter(reader.list_runs())))
    assert [f.path for f in run.files] == ["model/weights.bin"]
    assert run.extra_tags == {}


def test_fingerprint_changes_only_with_the_run(sqlite_source: tuple[str, Source]) -> None:
    uri, src = sqlite_source
    from mlflow import MlflowClient

    c = MlflowClient(uri)

    def prints() -> dict[str, str]:
        return {h.native_id: h.fingerprint for h in MlflowReader(uri).list_runs()}

    base = prints()
    assert prints() == base  # equal when nothing changed
    steps = [
        lambda: c.log_metric(src.parent, "loss", 0.1, timestamp=9_000, step=7),  # new point
        lambda: c.set_tag(src.parent, "custom", "edited"),  # edited tag
        lambda: c.set_terminated(src.running, "FINISHED", end_time=1_700_000_009_000),  # status
        lambda: c.log_param(src.child, "late", "1"),  # new param
    ]
    touched = [src.parent, src.parent, src.running, src.child]
    for change, rid in zip(steps, touched, strict=True):
        change()
        now = prints()
        assert now[rid] != base[rid]
        assert {k: v for k, v in now.items() if k != rid} == {
            k: v for k, v in base.items() if k != rid
        }
        base = now
    # a new artifact on a local artifact store changes the fingerprint too
    p = Path(uri.removeprefix("sqlite:///")).parent / "late.txt"
    p.write_text("late")
    c.log_artifact(src.killed, str(p))
    assert prints()[src.killed] != base[src.killed]
    # ...unless artifact hashing is switched off
    off = {
        h.native_id: h.fingerprint
        for h in MlflowReader(uri, fingerprint_artifacts=False).list_runs()
    }
    p.write_text("later")
    c.log_artifact(src.killed, str(p), "more")
    off2 = {
        h.native_id: h.fingerprint
        for h in MlflowReader(uri, fingerprint_artifacts=False).list_runs()
    }
    assert off2 == off


# ---------------------------------------------------------------- check() and URIs


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_errors_are_one_line_and_do_not_create_stores(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(BridgeError) as err:
        MlflowReader(f"sqlite:///{missing}").check()
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    assert not missing.exists()

    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(BridgeError, match="not an MLflow tracking database"):
        MlflowReader(f"sqlite:///{other}").check()

    port = _dead_port()
    t0 = time.monotonic()
    with pytest.raises(BridgeError) as err:
        MlflowReader(f"http://bob:hunter2@127.0.0.1:{port}").check()
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "unreachable" in msg and f"127.0.0.1:{port}" in msg and "hunter2" not in msg

    with pytest.raises(BridgeError, match="unsupported tracking URI scheme"):
        MlflowReader("ftp://x/y")
    with pytest.raises(BridgeError) as err:
        MlflowReader("postgresql://u:topsecret@127.0.0.1:1/db").check()
    assert "topsecret" not in str(err.value) and "cannot connect" in str(err.value)


def test_redact_uri() -> None:
    assert redact_uri("postgresql://u:pw@h:5432/db") == "postgresql://h:5432/db"
    assert redact_uri("https://tok@host/mlflow") == "https://host/mlflow"
    assert (
        redact_uri("http://h:5000/?access_token=abc&region=eu&X-Sig=1")
        == "http://h:5000/?region=eu"
    )
    assert redact_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert redact_uri("sqlite:///rel.db") == "sqlite:///rel.db"
    assert redact_uri("http://h/?token=1#frag") == "http://h/#frag"
    assert redact_uri("postgresql://u:p@h/db?sslmode=require&password=x") == (
        "postgresql://h/db?sslmode=require"
    )


# ---------------------------------------------------------------- PostgreSQL (SQL path)


def test_postgresql_with_credentials(pg_database: str, tmp_path: Path) -> None:
    src = build_source(pg_database, tmp_path / "art", tmp_path)
    # trust auth ignores the password: the URI carries a secret that must never leak
    host = pg_database.split("://", 1)[1].split("@", 1)[1]
    secret_uri = f"postgresql://postgres:s3cr3t-pw@{host}"
    reader = verify_store(secret_uri, src)
    assert reader.display_uri == f"mlflow:postgresql://{host}"
    for h in reader.list_runs():
        for text in (h.source_id, h.project.source_id, h.model_dump_json()):
            assert "s3cr3t" not in text and "postgres:" not in text
    reader.close()


# ---------------------------------------------------------------- REST server


@pytest.mark.e2e
def test_rest_server_every_field_and_point(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = build_source(mlflow_server, None, tmp_path)
    monkeypatch.setattr(history_mod, "REST_PAGE_POINTS", 700)  # several pages for "acc"
    reader = verify_store(mlflow_server, src)
    assert reader.display_uri == f"mlflow:{mlflow_server}"
    # remote artifacts come through a temp download that is gone once the file is closed
    header = next(h for h in reader.list_runs() if h.native_id == src.parent)
    ref = next(f for f in reader.read_run(header).files if f.path == "a/b/deep.txt")
    fh = reader.open_file(ref)
    tmp_copy = Path(str(fh.name))
    assert tmp_copy.is_file() and "bridge-mlflow-" in str(tmp_copy)
    assert fh.read() == b"deep"
    fh.close()
    assert not tmp_copy.exists() and not tmp_copy.parent.exists()
    # remote artifacts: not hashed unless asked; asked, a new file changes the fingerprint
    from mlflow import MlflowClient

    before = {h.native_id: h.fingerprint for h in MlflowReader(mlflow_server).list_runs()}
    listed = MlflowReader(mlflow_server, fingerprint_artifacts=True)
    with_art = {h.native_id: h.fingerprint for h in listed.list_runs()}
    p = tmp_path / "new.txt"
    p.write_text("n")
    MlflowClient(mlflow_server).log_artifact(src.killed, str(p))
    assert {h.native_id: h.fingerprint for h in MlflowReader(mlflow_server).list_runs()} == before
    after = {h.native_id: h.fingerprint for h in listed.list_runs()}
    assert after[src.killed] != with_art[src.killed] and after[src.parent] == with_art[src.parent]
