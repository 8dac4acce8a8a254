"""MlflowWriter against real MLflow stores: sqlite for most, an `mlflow server` and
PostgreSQL for a smaller round trip. Runs are built by hand (the reader is separate)."""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.adapters.mlflow import MlflowWriter
from bridge.adapters.mlflow.uri import redact_uri
from bridge.errors import BridgeError, RunError
from bridge.schema import MetricChunk, Project, Run, RunHeader

T0 = 1_600_000_000_123


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_project(name: str = "proj", entity: str = "team") -> Project:
    return Project(source_id=f"wandb:{entity}/{name}", name=name, entity=entity)


def make_run(run_id: str = "abc123", project: Project | None = None, **kw: Any) -> Run:
    project = project or make_project()
    fields: dict[str, Any] = dict(
        name=f"run-{run_id}",
        user="alice",
        notes="first try",
        tags=["baseline", "big model"],
        group="g1",
        job_type="train",
        host="node-7",
        git_remote="https://example.invalid/repo.git",
        git_commit="deadbeef",
        start_time_ms=T0,
        end_time_ms=T0 + 98_765,
        status="FAILED",
        status_reason="exit code 1",
        exit_code=1,
        config={"lr": 0.001, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "_wandb": {"x": 1}},
        summary={"acc": 0.91, "best_note": "epoch 3", "flag": True},
    )
    fields.update(kw)
    header = RunHeader(
        source_id=f"{project.source_id}/{run_id}",
        native_id=run_id,
        project=project,
        name=fields["name"],
        fingerprint="fp-" + run_id,
    )
    return Run(header=header, **fields)


@pytest.fixture
def writer(sqlite_uri: str) -> Iterator[MlflowWriter]:
    w = MlflowWriter(sqlite_uri)
    w.source_uri = "wandb-offline:/data/wandb"
    yield w
    w.close()


class CallLog:
    """Wraps client methods (the real ones run) to record the calls made."""

    def __init__(self, client: MlflowClient, *names: str) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        for name in names:
            real = getattr(client, name)
            setattr(client, name, self._wrap(name, real))

    def _wrap(self, name: str, real: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return real(*args, **kwargs)

        return wrapper

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]


def import_run(w: MlflowWriter, run: Run, chunks: Sequence[MetricChunk] = ()) -> str:
    pid = w.ensure_project(run.header.project)
    rendered = w.render(run)
    rid = w.create_run(pid, run, rendered)
    w.write_metadata(rid, run, rendered.params, rendered.tags)
    sink = w.metric_sink(rid)
    for c in chunks:
        sink.add(c)
    sink.flush()
    w.finish_run(rid, run, run.header.fingerprint)
    return rid


def artifact_json(client: MlflowClient, rid: str, path: str, tmp: Path) -> Any:
    local = client.download_artifacts(rid, path, str(tmp))
    return json.loads(Path(local).read_text())


# ---------------------------------------------------------------------------- render


def test_render_maps_fields_params_and_tags(writer: MlflowWriter) -> None:
    run = make_run(
        extra_tags={"wandb.sweep_id": "sw1"},
        incomplete_reason="log truncated at byte 100",
    )
    r = writer.render(run)
    assert r.params == {
        "lr": "0.001",
        "opt.name": "adam",
        "opt.betas": "[0.9,0.999]",
    }
    assert r.tags == {
        "bridge.source_id": "wandb:team/proj/abc123",
        "bridge.source_uri": "wandb-offline:/data/wandb",
        "mlflow.user": "alice",
        "mlflow.runName": "run-abc123",
        "mlflow.note.content": "first try",
        "mlflow.source.git.commit": "deadbeef",
        "mlflow.source.git.repoURL": "https://example.invalid/repo.git",
        "wandb.run_id": "abc123",
        "wandb.group": "g1",
        "wandb.job_type": "train",
        "wandb.host": "node-7",
        "wandb.exit_code": "1",
        "wandb.tags": '["baseline","big model"]',
        "bridge.status_reason": "exit code 1",
        "bridge.incomplete": "log truncated at byte 100",
        "wandb.tag.baseline": "true",
        "wandb.tag.big model": "true",
        "wandb.sweep_id": "sw1",
        "wandb.summary.best_note": "epoch 3",
        "wandb.summary.flag": "true",
    }
    assert "bridge.complete" not in r.tags and "bridge.fingerprint" not in r.tags
    assert r.warnings == []
    assert writer.render(run) == r  # pure and deterministic


def test_render_sanitizes_truncates_and_reports(writer: MlflowWriter) -> None:
    run = make_run(
        config={"acc@1": 1, "ok": "x" * 6000, "long": "y" * 7000, "a": {"b": 1}, "a.b": 2},
        notes="n" * 9000,
        tags=["needs review?"],
    )
    r = writer.render(run)
    codes = sorted(w.code for w in r.warnings)
    assert codes == ["key-collision", "sanitized-key", "sanitized-key", "truncated", "truncated"]
    assert r.params["acc:401"] == "1"
    assert r.params["ok"] == "x" * 6000  # exactly at the limit: untouched
    assert len(r.params["long"]) <= 6000
    assert r.params["long"].startswith("y" * 5900)
    assert r.params["long"].endswith(
        "…[truncated from 7000 chars; full value in bridge/config.json]"
    )
    assert r.params["a.b"] == "1"  # first wins, collision reported
    note = r.tags["mlflow.note.content"]
    assert len(note) <= 8000 and "truncated from 9000 chars" in note
    assert r.tags["wandb.tag.needs review:3F"] == "true"
    msgs = " | ".join(w.message for w in r.warnings)
    assert "'acc@1'" in msgs and "'acc:401'" in msgs and "7000 chars" in msgs
    assert all(w.source_id == run.header.source_id for w in r.warnings)


def test_mapping_overrides_apply(sqlite_uri: str) -> None:
    from bridge.mapping import Mapping

    w = MlflowWriter(
        sqlite_uri,
        mapping=Mapping(
            experiment_name="{entity}-{project}", per_tag_tags=False, source_tag_prefix="wb."
        ),
    )
    r = w.render(make_run())
    assert "wb.group" in r.tags and not any(k.startswith("wandb.tag.") for k in r.tags)
    pid = w.ensure_project(make_project())
    assert w.client.get_experiment(pid).name == "team-proj"


# ---------------------------------------------------------------------------- round trip


def test_round_trip_sqlite_field_by_field(writer: MlflowWriter, tmp_path: Path) -> None:
    run = make_run(
        config={"lr": 0.1, "big": "z" * 7000, "acc@1": True, "nan": math.nan},
        summary={"acc": 0.5, "long": "q" * 9000, "inf": math.inf},
        extra_tags={"wandb.long": "t" * 9000},
    )
    chunks = [
        MetricChunk(
            key="loss",
            steps=[0, 5, 10],
            timestamps=[T0 + 1, T0 + 2, T0 + 3],
            values=[1.5, math.nan, 0.25],
        ),
        MetricChunk(key="acc@1", steps=[0, 1], timestamps=[T0 + 4, T0 + 5], values=[0.1, math.inf]),
    ]
    rid = import_run(writer, run, chunks)
    c = writer.client
    ml = c.get_run(rid)
    assert ml.info.start_time == T0
    assert ml.info.end_time == T0 + 98_765
    assert ml.info.status == "FAILED"
    assert ml.info.user_id == "alice"
    assert ml.info.run_name == "run-abc123"
    assert ml.data.params["lr"] == "0.1"
    assert ml.data.params["nan"] == "NaN"
    assert ml.data.params["acc:401"] == "true"
    assert len(ml.data.params["big"]) <= 6000 and "truncated from 7000" in ml.data.params["big"]
    assert len(ml.data.tags["wandb.long"]) <= 8000
    assert len(ml.data.tags["wandb.summary.long"]) <= 8000
    assert ml.data.tags["bridge.complete"] == "true"
    assert ml.data.tags["bridge.fingerprint"] == "fp-abc123"
    assert ml.data.tags["bridge.source_id"] == "wandb:team/proj/abc123"

    loss = c.get_metric_history(rid, "loss")
    assert [(m.step, m.timestamp) for m in loss] == [(0, T0 + 1), (5, T0 + 2), (10, T0 + 3)]
    assert loss[0].value == 1.5 and math.isnan(loss[1].value) and loss[2].value == 0.25
    acc = c.get_metric_history(rid, "acc:401")
    assert [m.value for m in acc] == [0.1, 1.7976931348623157e308]  # MLflow's +inf stand-in

    # Full values kept beside: config/summary JSON (NaN/Infinity tokens), long values, key map.
    cfg = artifact_json(c, rid, "bridge/config.json", tmp_path / "a")
    assert cfg["big"] == "z" * 7000 and math.isnan(cfg["nan"]) and cfg["acc@1"] is True
    summ = artifact_json(c, rid, "bridge/summary.json", tmp_path / "b")
    assert summ["long"] == "q" * 9000 and summ["inf"] == math.inf
    longv = artifact_json(c, rid, "bridge/long-values.json", tmp_path / "c")
    assert longv["tags"]["wandb.long"] == "t" * 9000
    assert longv["params"]["big"] == "z" * 7000
    km = artifact_json(c, rid, "bridge/key-map.json", tmp_path / "d")
    assert km["params"] == {"acc@1": "acc:401"}
    assert km["metrics"] == {"acc@1": "acc:401"}

    assert writer.metric_counts(rid) == {"loss": 3, "acc@1": 2}


def test_no_key_map_or_long_values_when_not_needed(writer: MlflowWriter) -> None:
    rid = import_run(writer, make_run())
    names = {f.path for f in writer.client.list_artifacts(rid, "bridge")}
    assert names == {"bridge/config.json", "bridge/summary.json"}


def test_running_source_stays_running(writer: MlflowWriter) -> None:
    run = make_run(status="RUNNING", end_time_ms=None)
    rid = import_run(writer, run)
    ml = writer.client.get_run(rid)
    assert ml.info.status == "RUNNING" and ml.info.end_time is None
    assert ml.data.tags["bridge.complete"] == "true"


# ---------------------------------------------------------------------------- batching


def test_metric_sink_batches_across_keys(writer: MlflowWriter) -> None:
    writer.bulk_metrics = False  # the log_batch path (what servers get)
    pid = writer.ensure_project(make_project())
    run = make_run()
    rid = writer.create_run(pid, run, writer.render(run))
    log = CallLog(writer.client, "log_batch")
    sink = writer.metric_sink(rid)
    for key, n in (("a", 700), ("b", 1100), ("c", 700)):  # 2500 points
        sink.add(
            MetricChunk(
                key=key,
                steps=list(range(n)),
                timestamps=[T0 + i for i in range(n)],
                values=[float(i) for i in range(n)],
            )
        )
    assert [len(k["metrics"]) for _, k in log.named("log_batch")] == [1000, 1000]
    sink.flush()
    sizes = [len(k["metrics"]) for _, k in log.named("log_batch")]
    assert sizes == [1000, 1000, 500]
    assert writer.metric_counts(rid) == {"a": 700, "b": 1100, "c": 700}
    hist = writer.client.get_metric_history(rid, "b")
    assert [(m.step, m.timestamp, m.value) for m in hist] == [
        (i, T0 + i, float(i)) for i in range(1100)
    ]


def test_metric_sink_respects_request_bytes(writer: MlflowWriter) -> None:
    writer.bulk_metrics = False  # the log_batch path (what servers get)
    pid = writer.ensure_project(make_project())
    run = make_run()
    rid = writer.create_run(pid, run, writer.render(run))
    log = CallLog(writer.client, "log_batch")
    sink = writer.metric_sink(rid)
    key = "é" * 240  # JSON-escaped to 6 bytes a char: ~1.5 KB per point
    sink.add(
        MetricChunk(key=key, steps=list(range(1000)), timestamps=[T0] * 1000, values=[1.0] * 1000)
    )
    sink.flush()
    sizes = [len(k["metrics"]) for _, k in log.named("log_batch")]
    assert sum(sizes) == 1000 and len(sizes) == 2
    for _, k in log.named("log_batch"):
        payload = json.dumps(
            [
                {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                for m in k["metrics"]
            ]
        )
        assert len(payload) < 1_000_000


def test_bulk_sink_stores_what_log_batch_stores(writer: MlflowWriter, tmp_path: Path) -> None:
    """The SQL bulk sink against MLflow's own log_batch on the same points: identical metric
    rows, identical latest values (what the UI shows), duplicates skipped, NaN/±inf as MLflow."""
    other = MlflowWriter(f"sqlite:///{tmp_path / 'plain.db'}")
    other.bulk_metrics = False
    pts = [
        (0, T0, 1.0),
        (1, T0 + 1, float("nan")),
        (1, T0 + 2, 0.5),
        (0, T0 + 3, 2.0),
        (2, T0 + 4, float("inf")),
        (2, T0 + 5, float("-inf")),
        (5, T0 + 6, 0.25),
    ]
    chunks = [
        MetricChunk(
            key=k,
            steps=[p[0] for p in pts],
            timestamps=[p[1] + i for p in pts],
            values=[p[2] for p in pts],
        )
        for i, k in enumerate(("loss", "acc/top 1", "a@b"))
    ]
    results = []
    for w in (writer, other):
        pid = w.ensure_project(make_project())
        run = make_run()
        rid = w.create_run(pid, run, w.render(run))
        for _ in range(2):  # the second time everything is a duplicate
            sink = w.metric_sink(rid)
            for c in chunks:
                sink.add(c)
            sink.flush()
        mlrun = w.client.get_run(rid)
        history = {
            k: sorted(
                (m.step, m.timestamp, repr(m.value)) for m in w.client.get_metric_history(rid, k)
            )
            for k in mlrun.data.metrics
        }
        latest = {k: repr(v) for k, v in mlrun.data.metrics.items()}
        results.append((history, latest, w.metric_counts(rid)))
    other.close()
    assert type(writer.metric_sink(rid)).__name__ == "SqlBulkMetricSink"
    assert results[0] == results[1]
    history, latest, counts = results[0]
    assert counts == {"loss": 7, "acc/top 1": 7, "a@b": 7}
    assert (1, T0 + 1, "nan") in history["loss"]
    assert (2, T0 + 4, "1.7976931348623157e+308") in history["loss"]
    assert latest["loss"] == "0.25"


def test_metadata_batches_of_100(writer: MlflowWriter) -> None:
    config = {f"p{i:03d}": i for i in range(250)}
    run = make_run(config=config, extra_tags={f"x.t{i:03d}": str(i) for i in range(120)})
    pid = writer.ensure_project(run.header.project)
    r = writer.render(run)
    rid = writer.create_run(pid, run, r)
    log = CallLog(writer.client, "log_batch")
    writer.write_metadata(rid, run, r.params, r.tags)
    calls = log.named("log_batch")
    n_tags = len(r.tags)
    assert n_tags > 100
    assert [(len(k["params"]), len(k["tags"])) for _, k in calls] == [
        (100, 100),
        (100, n_tags - 100),
        (50, 0),
    ]
    assert writer.client.get_run(rid).data.params == r.params


def test_metadata_batches_split_by_size(writer: MlflowWriter) -> None:
    config = {f"p{i:03d}": "v" * 5990 for i in range(100)}  # 100 params ≈ 600 KB
    run = make_run(config=config)
    pid = writer.ensure_project(run.header.project)
    r = writer.render(run)
    rid = writer.create_run(pid, run, r)
    log = CallLog(writer.client, "log_batch")
    writer.write_metadata(rid, run, r.params, {})
    assert [len(k["params"]) for _, k in log.named("log_batch")] == [74, 26]
    assert len(writer.client.get_run(rid).data.params) == 100


def test_changed_param_is_a_run_error(writer: MlflowWriter) -> None:
    run = make_run()
    rid = import_run(writer, run)
    with pytest.raises(RunError, match="lr"):
        writer.write_metadata(rid, run, {"lr": "0.5"}, {})


# ---------------------------------------------------------------------------- lifecycle


def test_create_run_writes_identity_in_the_create_call(writer: MlflowWriter) -> None:
    pid = writer.ensure_project(make_project())
    run = make_run()
    log = CallLog(writer.client, "create_run", "log_batch", "set_tag")
    rid = writer.create_run(pid, run, writer.render(run))
    assert [n for n, _, _ in log.calls] == ["create_run"]
    ((_, kwargs),) = log.named("create_run")
    assert kwargs["tags"]["bridge.source_id"] == "wandb:team/proj/abc123"
    assert kwargs["start_time"] == T0
    ml = writer.client.get_run(rid)
    assert ml.info.start_time == T0
    assert ml.data.tags["bridge.complete"] == "false"
    assert ml.data.tags["bridge.source_uri"] == "wandb-offline:/data/wandb"


def test_finish_run_order_and_begin_update(writer: MlflowWriter) -> None:
    pid = writer.ensure_project(make_project())
    run = make_run(status="FINISHED")
    rid = writer.create_run(pid, run, writer.render(run))
    log = CallLog(writer.client, "set_terminated", "set_tag")
    writer.finish_run(rid, run, "fp-1")
    assert [(n, a[1:] if n == "set_tag" else k.get("status")) for n, a, k in log.calls] == [
        ("set_terminated", "FINISHED"),
        ("set_tag", ("bridge.fingerprint", "fp-1")),
        ("set_tag", ("bridge.complete", "true")),
    ]
    writer.begin_update(rid)
    assert writer.get_run(rid).complete is False  # type: ignore[union-attr]
    sink = writer.metric_sink(rid)
    sink.add(MetricChunk(key="late", steps=[1], timestamps=[T0], values=[2.0]))
    sink.flush()  # appending to a FINISHED run works
    writer.finish_run(rid, run, "fp-2")
    got = writer.get_run(rid)
    assert got is not None and got.complete and got.fingerprint == "fp-2"
    assert writer.client.get_run(rid).info.end_time == run.end_time_ms


def test_find_runs_by_source_after_lost_state(sqlite_uri: str) -> None:
    w1 = MlflowWriter(sqlite_uri)
    done = import_run(w1, make_run("r1"))
    pid = w1.ensure_project(make_project())
    half = w1.create_run(pid, make_run("r2"), w1.render(make_run("r2")))  # "crash" after create
    gone = import_run(w1, make_run("r3"))
    w1.client.delete_run(gone)
    w1.client.create_run(pid, tags={"other": "x"})  # a user's own run: not ours
    w1.close()

    w2 = MlflowWriter(sqlite_uri)  # a fresh process: nothing in memory
    assert w2.find_project(make_project()) == pid
    found = w2.find_runs_by_source(pid)
    assert set(found) == {"wandb:team/proj/r1", "wandb:team/proj/r2"}
    assert found["wandb:team/proj/r1"].dest_id == done and found["wandb:team/proj/r1"].complete
    assert found["wandb:team/proj/r1"].fingerprint == "fp-r1"
    assert found["wandb:team/proj/r1"].params["lr"] == "0.001"
    assert found["wandb:team/proj/r2"].dest_id == half and not found["wandb:team/proj/r2"].complete
    assert w2.get_run(gone) is None
    assert w2.get_run("0" * 32) is None
    assert w2.duplicate_runs == {}


def test_find_runs_by_source_paginates_and_prefers_complete(writer: MlflowWriter) -> None:
    pid = writer.ensure_project(make_project())
    client = writer.client
    for i in range(1005):
        client.create_run(
            pid, start_time=T0 + i, tags={"bridge.source_id": f"wandb:team/proj/x{i}"}
        )
    dup = make_run("x7")
    complete_id = writer.create_run(pid, dup, writer.render(dup))
    writer.finish_run(complete_id, dup, "fp")
    found = writer.find_runs_by_source(pid)
    assert len(found) == 1005
    assert found["wandb:team/proj/x7"].dest_id == complete_id
    assert len(writer.duplicate_runs["wandb:team/proj/x7"]) == 2


def test_put_file_streams_and_overwrites(writer: MlflowWriter, tmp_path: Path) -> None:
    rid = import_run(writer, make_run())
    writer.put_file(rid, "files/out.log", io.BytesIO(b"first"))
    writer.put_file(rid, "files/out.log", io.BytesIO(b"second" * 1000))
    writer.put_file(rid, "top.txt", io.BytesIO(b"top"))
    local = writer.client.download_artifacts(rid, "files/out.log", str(tmp_path))
    assert Path(local).read_bytes() == b"second" * 1000
    assert {f.path for f in writer.client.list_artifacts(rid)} >= {"files", "top.txt", "bridge"}
    with pytest.raises(RunError):
        writer.put_file(rid, "../escape.txt", io.BytesIO(b"x"))


def test_ensure_project_is_race_safe_and_tagged(sqlite_uri: str) -> None:
    MlflowWriter(sqlite_uri).client.search_experiments()  # create tables once
    project = make_project("raced")
    ids: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            ids.append(MlflowWriter(sqlite_uri).ensure_project(project))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1
    exp = MlflowClient(sqlite_uri).get_experiment(ids[0])
    assert exp.name == "raced"
    assert exp.tags["bridge.source_id"] == "wandb:team/raced"
    assert exp.tags["wandb.entity"] == "team"
    assert exp.artifact_location.startswith(Path(sqlite_uri[len("sqlite:///") :]).parent.as_uri())


def test_deleted_experiment_is_a_clear_error(writer: MlflowWriter) -> None:
    pid = writer.ensure_project(make_project())
    writer.client.delete_experiment(pid)
    assert writer.find_project(make_project()) is None
    with pytest.raises(BridgeError, match="deleted"):
        writer.ensure_project(make_project())


def test_sql_store_dedupes_resent_points(writer: MlflowWriter) -> None:
    """The capability claim: re-sending identical points (after a crash) adds nothing."""
    assert writer.capabilities.dedupes_metric_points
    pid = writer.ensure_project(make_project())
    run = make_run()
    rid = writer.create_run(pid, run, writer.render(run))
    chunk = MetricChunk(
        key="m", steps=[0, 1, 2], timestamps=[T0, T0, T0], values=[1.0, math.nan, 3.0]
    )
    for _ in range(2):
        sink = writer.metric_sink(rid)
        sink.add(chunk)
        sink.flush()
    assert writer.metric_counts(rid) == {"m": 3}


def test_parallel_runs_share_one_writer(writer: MlflowWriter) -> None:
    pid = writer.ensure_project(make_project())
    errors: list[BaseException] = []
    ids: dict[str, str] = {}

    def go(i: int) -> None:
        try:
            run = make_run(f"par{i}")
            rid = writer.create_run(pid, run, writer.render(run))
            ids[run.header.source_id] = rid
            sink = writer.metric_sink(rid)
            for k in range(3):
                sink.add(
                    MetricChunk(
                        key=f"k{k}",
                        steps=list(range(800)),
                        timestamps=[T0 + s for s in range(800)],
                        values=[float(i)] * 800,
                    )
                )
            sink.flush()
            writer.finish_run(rid, run, "fp")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    found = writer.find_runs_by_source(pid)
    assert {s: d.dest_id for s, d in found.items()} == ids
    for rid in ids.values():
        assert writer.metric_counts(rid) == {"k0": 800, "k1": 800, "k2": 800}


# ---------------------------------------------------------------------------- check / URIs


def test_display_uri_has_no_credentials() -> None:
    w = MlflowWriter("postgresql://bob:s3cret@db.example:5432/ml?sslmode=require&password=p2")
    # one rule for reader and writer: secret query parameters are dropped, not masked
    assert w.display_uri == "mlflow:postgresql://db.example:5432/ml?sslmode=require"
    assert "s3cret" not in w.display_uri and "p2" not in w.display_uri
    assert redact_uri("https://u:p@host:5000") == "https://host:5000"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_capabilities(writer: MlflowWriter) -> None:
    caps = writer.capabilities
    assert caps.can_set_start_time and caps.immutable_params and not caps.stores_infinity
    assert caps.dedupes_metric_points
    assert (caps.max_param_len, caps.max_tag_len, caps.max_key_len) == (6000, 8000, 250)
    assert (caps.metrics_per_batch, caps.params_per_batch, caps.tags_per_batch) == (1000, 100, 100)
    assert MlflowWriter("http://127.0.0.1:5000").capabilities.dedupes_metric_points


def test_check_ok_on_sqlite(writer: MlflowWriter) -> None:
    writer.check()


def test_check_bad_scheme() -> None:
    with pytest.raises(BridgeError, match="unsupported tracking URI scheme 'ftp'"):
        MlflowWriter("ftp://u:pw@host/x")


def test_check_unwritable_sqlite(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    w = MlflowWriter(f"sqlite:///{blocker}/sub/m.db")
    with pytest.raises(BridgeError) as err:
        w.check()
    assert "not writable" in str(err.value) and "\n" not in str(err.value)


def test_check_unreachable_server_is_quick() -> None:
    w = MlflowWriter(f"http://user:hunter2@127.0.0.1:{free_port()}")
    start = time.time()
    with pytest.raises(BridgeError) as err:
        w.check()
    assert time.time() - start < 10
    msg = str(err.value)
    assert "unreachable" in msg and "hunter2" not in msg and "user" not in msg


def test_check_bad_postgres_hides_password() -> None:
    w = MlflowWriter(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nodb")
    with pytest.raises(BridgeError) as err:
        w.check()
    msg = str(err.value)
    assert "cannot connect" in msg and "hunter2" not in msg and "\n" not in msg


# ---------------------------------------------------------------------------- e2e


def small_round_trip(w: MlflowWriter, tmp_path: Path) -> None:
    w.check()
    run = make_run("e2e", config={"lr": 0.1, "acc@1": 1, "long": "l" * 7000})
    chunk = MetricChunk(
        key="loss", steps=[0, 1, 2], timestamps=[T0, T0 + 1, T0 + 2], values=[1.0, math.nan, 0.5]
    )
    rid = import_run(w, run, [chunk])
    w.put_file(rid, "files/a.txt", io.BytesIO(b"hello"))
    ml = w.client.get_run(rid)
    assert (ml.info.start_time, ml.info.end_time, ml.info.status) == (T0, T0 + 98_765, "FAILED")
    assert ml.data.params["acc:401"] == "1"
    assert ml.data.tags["bridge.complete"] == "true"
    hist = w.client.get_metric_history(rid, "loss")
    assert [(m.step, m.timestamp) for m in hist] == [(0, T0), (1, T0 + 1), (2, T0 + 2)]
    assert math.isnan(hist[1].value)
    assert artifact_json(w.client, rid, "bridge/config.json", tmp_path / "c")["long"] == "l" * 7000
    assert (
        Path(w.client.download_artifacts(rid, "files/a.txt", str(tmp_path))).read_bytes()
        == b"hello"
    )
    # Re-sent points are deduplicated by the SQL store behind.
    sink = w.metric_sink(rid)
    sink.add(chunk)
    sink.flush()
    assert w.metric_counts(rid) == {"loss": 3}
    pid = w.find_project(run.header.project)
    assert pid is not None
    assert set(MlflowWriter(w.target).find_runs_by_source(pid)) == {run.header.source_id}
    assert w.get_run("0" * 32) is None
    w.client.delete_run(rid)
    assert w.get_run(rid) is None and w.find_runs_by_source(pid) == {}


@pytest.mark.e2e
def test_round_trip_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    small_round_trip(MlflowWriter(mlflow_server), tmp_path)


@pytest.mark.e2e
def test_round_trip_postgres(pg_database: str, tmp_path: Path) -> None:
    small_round_trip(MlflowWriter(pg_database, artifact_root=(tmp_path / "art").as_uri()), tmp_path)


@pytest.mark.e2e
def test_sink_throughput_vs_plain_log_batch(tmp_path: Path) -> None:
    """The sink must run at ≥0.8× a plain 1000-metric log_batch loop into sqlite."""
    from mlflow.entities import Metric

    n = 30_000
    run = make_run()
    rids = []
    writers = []
    for name in ("plain", "sink"):  # one fresh database each: a growing table slows the 2nd
        w = MlflowWriter(f"sqlite:///{tmp_path / name}.db")
        rids.append(w.create_run(w.ensure_project(make_project()), run, w.render(run)))
        writers.append(w)
    (w, ws), (rid_plain, rid_sink) = writers, rids
    steps = list(range(n))
    stamps = [T0 + i for i in steps]
    values = [float(i) for i in steps]

    start = time.perf_counter()
    for lo in range(0, n, 1000):
        w.client.log_batch(
            rid_plain,
            [Metric("loss", values[i], stamps[i], steps[i]) for i in range(lo, lo + 1000)],
        )
    plain = time.perf_counter() - start

    start = time.perf_counter()
    sink = ws.metric_sink(rid_sink)
    for lo in range(0, n, 2500):
        sink.add(
            MetricChunk(
                key="loss",
                steps=steps[lo : lo + 2500],
                timestamps=stamps[lo : lo + 2500],
                values=values[lo : lo + 2500],
            )
        )
    sink.flush()
    ours = time.perf_counter() - start
    assert ours <= plain / 0.8, (n / ours, n / plain)
