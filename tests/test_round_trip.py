"""Round trip: SDK-made W&B offline runs → MLflow → ``wandb-offline:`` → read back.

The runs read back from the second W&B copy must equal the originals (both read with
``WandbOfflineReader``) on every field the mappings promise. What cannot round-trip is
asserted as such below, so a change in it shows up here:

* (±inf history values DO round-trip: MLflow stores ±1.797e308, but the engine records
  each inf in ``bridge/history-extras.jsonl`` and the MLflow reader puts it back);
* non-numeric history values (strings, media, tables): MLflow keeps them in
  ``bridge/history-extras.jsonl`` and their files as artifacts, not as metrics; the second
  W&B copy has the media files but no such history values;
* ``define_metric`` definitions (MLflow has none) and summaries derived from them
  (``{"max": ...}`` becomes the last logged value), booleans in the summary (the history
  point is a number), media summary values (the W&B writer writes no typed values);
* logged artifacts: the W&B writer stores them as files ``artifacts/<name>/<digest>/``
  (content + ``manifest.json``), not as W&B artifacts;
* a run without a display name is named by its W&B run id (both writers need a name);
* the entity (an MLflow experiment has none) and the W&B run id (MLflow chooses run ids;
  the copy is named by the bridge's deterministic id).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from sdk_runs import BASIC, cached_corpus

from bridge import api
from bridge.adapters.mlflow import MlflowWriter
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.schema import ArtifactVersion, ExtraValue, MetricChunk, Project, Run, RunHeader

ROLES = ("basic", "artifact", "crashed", "resumed")
Point = tuple[int, int, float]


def _points(reader: Any, run: Run) -> tuple[dict[str, list[Point]], list[ExtraValue]]:
    """Every metric point per key (sorted) and every non-numeric value of a run."""
    points: dict[str, list[Point]] = {}
    extras: list[ExtraValue] = []
    for item in reader.iter_history(run):
        if isinstance(item, MetricChunk):
            points.setdefault(item.key, []).extend(
                zip(item.steps, item.timestamps, item.values, strict=True)
            )
        else:
            extras.append(item)
    return {k: sorted(v, key=lambda p: (p[0], p[1])) for k, v in points.items()}, extras


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _files(reader: Any, run: Run) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for ref in run.files:
        with reader.open_file(ref) as fh:
            out[ref.path] = fh.read()
    return out


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Originals, the MLflow store and the W&B copy after one sync each way."""
    corpus = cached_corpus(tmp_path_factory.getbasetemp())
    base = tmp_path_factory.mktemp("round-trip")
    src = base / "src" / "wandb"
    src.mkdir(parents=True)
    for role in ROLES:
        for folder in corpus[role].parent.glob(f"*-{role}"):
            shutil.copytree(folder, src / folder.name, symlinks=True)
    db = f"sqlite:///{base / 'mlflow.db'}"
    out = base / "out"
    states = (str(base / "state1.db"), str(base / "state2.db"))
    first = api.sync(f"wandb-offline:{src}", f"mlflow:{db}", state=states[0])
    assert [(p.outcome, p.error) for p in first.runs] == [("done", None)] * len(ROLES)
    second = api.sync(f"mlflow:{db}", f"wandb-offline:{out}", state=states[1])
    assert [(p.outcome, p.error) for p in second.runs] == [("done", None)] * len(ROLES)
    return {"src": src, "db": db, "out": out, "states": states}


def _by_origin(trip: dict[str, Any]) -> dict[str, tuple[Run, Run, Any, Any]]:
    """W&B run id of each original → (original, copy, original reader, copy reader).

    The copy is linked to its original through the chain of identities: the copy's raw
    ``_bridge.source_id`` names the MLflow run, whose ``bridge.source_id`` names the original.
    """
    client = MlflowClient(tracking_uri=trip["db"])
    src_reader = WandbOfflineReader(str(trip["src"]))
    originals = {h.native_id: src_reader.read_run(h) for h in src_reader.list_runs()}
    raw = WandbOfflineReader(str(trip["out"]), restore_bridge=False)
    back = WandbOfflineReader(str(trip["out"]))
    out: dict[str, tuple[Run, Run, Any, Any]] = {}
    for header in back.list_runs():
        mlflow_sid = raw.read_run(header).config["_bridge.source_id"]
        mlflow_run_id = mlflow_sid.rsplit("#", 1)[1]
        wandb_sid = client.get_run(mlflow_run_id).data.tags["bridge.source_id"]
        origin = wandb_sid.rsplit("/", 1)[1]
        out[origin] = (originals[origin], back.read_run(header), src_reader, back)
    assert sorted(out) == sorted(ROLES)
    return out


@pytest.mark.e2e
def test_mlflow_reader_gives_back_the_wandb_run(trip: dict[str, Any]) -> None:
    """The MLflow copy reads as the W&B run (typed config, fields) under its MLflow identity."""
    src_reader = WandbOfflineReader(str(trip["src"]))
    originals = {h.source_id: src_reader.read_run(h) for h in src_reader.list_runs()}
    reader = MlflowReader(trip["db"])
    client = MlflowClient(tracking_uri=trip["db"])
    for header in reader.list_runs():
        run = reader.read_run(header)
        assert header.source_id == f"mlflow:{trip['db']}#{header.native_id}"
        orig = originals[client.get_run(header.native_id).data.tags["bridge.source_id"]]
        assert run.name == (orig.name or orig.header.native_id)  # unnamed: named by its id
        for field in ("user", "notes", "tags", "group", "job_type", "host"):
            assert getattr(run, field) == getattr(orig, field), field
        assert (run.git_remote, run.git_commit) == (orig.git_remote, orig.git_commit)
        assert (run.status, run.exit_code, run.status_reason) == (
            orig.status,
            orig.exit_code,
            orig.status_reason,
        )
        assert run.config == orig.config and run.summary.keys() == orig.summary.keys()
        assert run.extra_tags == orig.extra_tags
        assert not any(f.path.startswith("bridge/") for f in run.files)
        assert run.warnings == []
    basic = next(r for r in originals.values() if r.header.native_id == "basic")
    assert basic.config["optimizer"] == BASIC["config"]["optimizer"]  # nested, typed


@pytest.mark.e2e
def test_round_trip_keeps_every_promised_field(trip: dict[str, Any]) -> None:
    for origin, (orig, back, src_reader, back_reader) in _by_origin(trip).items():
        where = f"run {origin}"
        assert back.name == (orig.name or orig.header.native_id), where
        for field in ("user", "notes", "tags", "group", "job_type", "host"):
            assert getattr(back, field) == getattr(orig, field), (where, field)
        assert (back.git_remote, back.git_commit) == (orig.git_remote, orig.git_commit), where
        assert back.config == orig.config, where  # typed and nested, no _bridge.* keys
        assert not any(k.startswith("_bridge") or k == "mlflow_tags" for k in back.config)
        assert back.extra_tags == orig.extra_tags, where
        assert (back.status, back.exit_code, back.status_reason) == (
            orig.status,
            orig.exit_code,
            orig.status_reason,
        ), where
        assert back.incomplete_reason == orig.incomplete_reason, where
        assert (back.start_time_ms, back.end_time_ms) == (orig.start_time_ms, orig.end_time_ms)
        assert back.header.source_id != orig.header.source_id  # a different W&B run

        want, extras = _points(src_reader, orig)

        # Summary: everything but W&B internals, aggregates, booleans and media values.
        for key, value in orig.summary.items():
            if key.startswith("_"):
                continue
            if isinstance(value, bool):
                assert back.summary[key] == int(value), (where, key)
            elif isinstance(value, dict) and "_type" in value:
                assert key not in back.summary, (where, key)  # media: not written
            elif isinstance(value, dict) and set(value) <= {"min", "max", "mean", "last"}:
                last = want[key][-1][2]  # a define_metric aggregate: the last value
                assert back.summary[key] == last, (where, key)
            else:
                assert back.summary[key] == value, (where, key)
        assert "mlflow_step" not in back.summary

        # Every metric point, system metrics included, at its original step and time.
        got, got_extras = _points(back_reader, back)
        assert sorted(got) == sorted(want), where
        for key, points in want.items():
            assert len(got[key]) == len(points), (where, key)
            for (s1, t1, v1), (s2, t2, v2) in zip(points, got[key], strict=True):
                assert (s1, t1) == (s2, t2) and _same(v1, v2), (where, key, s1)
        assert got_extras == []  # strings and media values do not come back as history
        assert any(k.startswith("system/") for k in got), where

        # Files: same paths and bytes; artifacts arrive as files under artifacts/.
        want_files = _files(src_reader, orig)
        got_files = _files(back_reader, back)
        plain = {p: b for p, b in got_files.items() if not p.startswith("artifacts/")}
        assert plain == want_files, where
        logged = [a for a in orig.artifacts if a.direction == "logged"]
        assert back.artifacts == []
        for art in logged:
            folder = f"artifacts/{art.name}/{art.digest}"
            record = ArtifactVersion.model_validate(
                json.loads(got_files[f"{folder}/manifest.json"])
            )
            assert (record.name, record.type, record.digest) == (art.name, art.type, art.digest)
            assert [(e.path, e.digest, e.size) for e in record.manifest] == [
                (e.path, e.digest, e.size) for e in art.manifest
            ]
            for entry in art.manifest:
                assert entry.local_path is not None
                content = Path(entry.local_path).read_bytes()
                assert got_files[f"{folder}/files/{entry.path}"] == content, (where, entry.path)
        if origin == "basic":
            assert {e.key for e in extras} == {"phase", "sample"}  # what is documented lost
            assert any(isinstance(v, float) and math.isinf(v) for k, v in _flat(want))
        if origin == "artifact":
            assert logged, "the artifact run logs an artifact"


def _flat(points: dict[str, list[Point]]) -> list[tuple[str, float]]:
    return [(k, v) for k, pts in points.items() for _, _, v in pts]


@pytest.mark.e2e
def test_second_pass_writes_nothing(trip: dict[str, Any]) -> None:
    folders = sorted(p.name for p in (trip["out"] / "wandb").iterdir())
    again = api.sync(
        f"wandb-offline:{trip['src']}", f"mlflow:{trip['db']}", state=trip["states"][0]
    )
    assert {p.action for p in again.runs} == {"unchanged"}
    back = api.sync(f"mlflow:{trip['db']}", f"wandb-offline:{trip['out']}", state=trip["states"][1])
    assert {p.action for p in back.runs} == {"unchanged"}
    assert sum(p.points_written + p.files_written for p in [*again.runs, *back.runs]) == 0
    assert sorted(p.name for p in (trip["out"] / "wandb").iterdir()) == folders
    client = MlflowClient(tracking_uri=trip["db"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == len(ROLES)


def test_mlflow_reader_undoes_encoded_keys_cut_values_and_inf(sqlite_uri: str) -> None:
    """A W&B run whose keys MLflow rejects and whose values MLflow cuts reads back whole."""
    t0 = 1_700_000_000_000
    project = Project(source_id="wandb:team/proj", name="proj", entity="team")
    run = Run(
        header=RunHeader(
            source_id="wandb:team/proj/r1", native_id="r1", project=project, fingerprint="f"
        ),
        name="r1-name",
        user="ann",
        notes="n" * 9000,  # over MLflow's 8000-char tag limit
        tags=["odd@tag", "t2"],
        group="g",
        job_type="train",
        host="h",
        git_commit="abc",
        status="FAILED",
        exit_code=3,
        start_time_ms=t0,
        end_time_ms=t0 + 5000,
        config={"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "w@key": {"x": None}, "big": "v" * 7000},
        summary={"best": 0.5, "note": "ok", "nested": {"a": [1, 2]}},
        extra_tags={"wandb.os": "Linux", "odd key?": "x"},
    )
    writer = MlflowWriter(sqlite_uri)
    exp = writer.ensure_project(project)
    rendered = writer.render(run)
    rid = writer.create_run(exp, run, rendered)
    writer.write_metadata(rid, run, rendered.params, rendered.tags)
    sink = writer.metric_sink(rid)
    values = [1.0, math.inf, -math.inf, math.nan]
    steps, stamps = [0, 1, 2, 3], [t0, t0 + 1, t0 + 2, t0 + 3]
    sink.add(MetricChunk(key="loss@val", steps=steps, timestamps=stamps, values=values))
    sink.flush()
    extras = "".join(  # what the engine writes for the two infinities
        ExtraValue(
            key="loss@val", step=s, timestamp=t, value_json=raw, kind="non-finite"
        ).model_dump_json()
        + "\n"
        for s, t, raw in ((1, t0 + 1, "Infinity"), (2, t0 + 2, "-Infinity"))
    )
    writer.put_file(rid, "bridge/history-extras.jsonl", io.BytesIO(extras.encode()))
    writer.finish_run(rid, run, "fp")
    assert len(MlflowClient(sqlite_uri).get_run(rid).data.tags["mlflow.note.content"]) < 9000

    reader = MlflowReader(sqlite_uri)
    (header,) = reader.list_runs()
    back = reader.read_run(header)
    assert back.header.source_id == f"mlflow:{sqlite_uri}#{rid}"  # its own identity
    for field in ("name", "user", "notes", "tags", "group", "job_type", "host", "git_commit"):
        assert getattr(back, field) == getattr(run, field), field
    assert (back.status, back.exit_code) == ("FAILED", 3)
    assert (back.start_time_ms, back.end_time_ms) == (t0, t0 + 5000)
    assert back.config == run.config and back.summary == run.summary
    assert back.extra_tags == run.extra_tags
    assert back.files == [] and back.warnings == []
    (chunk,) = list(reader.iter_history(back))
    assert chunk.key == "loss@val" and (chunk.steps, chunk.timestamps) == (steps, stamps)
    assert chunk.values[:3] == values[:3] and math.isnan(chunk.values[3])


@pytest.mark.e2e
def test_online_reader_restores_like_the_offline_one(
    trip: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow → a W&B server (the loopback fake, through the real SDK) read back with the
    API reader gives the same runs as the offline copy: both undo the bridge layout."""
    from fakes.wandb_server import FakeWandbServer

    from bridge.adapters.wandb.api_reader import WandbApiReader

    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    offline = WandbOfflineReader(str(trip["out"]))
    copies = {r.name: r for r in (offline.read_run(h) for h in offline.list_runs())}
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        plan = api.sync(
            f"mlflow:{trip['db']}",
            f"wandb:acme?base_url={srv.url}",
            state=str(tmp_path / "state.db"),
        )
        assert [(p.outcome, p.error) for p in plan.runs] == [("done", None)] * len(ROLES)
        reader = WandbApiReader(f"acme/demo?base_url={srv.url}")
        heads = list(reader.list_runs())
        assert len(heads) == len(ROLES)
        for header in heads:
            on = reader.read_run(header)
            off = copies[on.name]
            for field in ("user", "notes", "tags", "group", "job_type", "host", "status"):
                assert getattr(on, field) == getattr(off, field), (on.name, field)
            assert (on.start_time_ms, on.end_time_ms) == (off.start_time_ms, off.end_time_ms)
            assert on.config == off.config and on.extra_tags == off.extra_tags, on.name
            assert "mlflow_step" not in on.summary
            assert {f.path for f in on.files} == {f.path for f in off.files}, on.name
            got, _ = _points(reader, on)
            want, _ = _points(offline, off)
            assert sorted(got) == sorted(want), on.name
            for key, points in want.items():
                assert len(got[key]) == len(points), (on.name, key)
                for (s1, t1, v1), (s2, t2, v2) in zip(points, got[key], strict=True):
                    assert (s1, t1) == (s2, t2) and _same(v1, v2), (on.name, key, s1)
        reader.close()


def test_bridged_layout_is_undone_exactly() -> None:
    """The W&B writer's renames and bookkeeping, undone without touching source keys."""
    from bridge.adapters.wandb.bridged import layout_of, restore_run, split_row
    from bridge.schema import FileRef

    project = Project(source_id="wandb:/p", name="p")
    config = {
        "lr": "0.1",
        "_--weird_": "dash-edged source key",
        "mlflow_tags_": {"x": 1},  # a source key named like the extra-tags key
        "_bridge.mine_": "a source key in the bridge namespace",
        "mlflow_tags": {"team": "vision", "baseline": "true"},
        "_bridge.source_id": "mlflow:sqlite:///x.db#r1",
        "_bridge.step_key": "mlflow_step",
        "_bridge.start_time_ms": 5,
        "_bridge.end_time_ms": 9,
        "_bridge.status": "KILLED",
        "_bridge.user": "ann",
        "_bridge.complete": True,
    }
    run = Run(
        header=RunHeader(
            source_id="wandb:/p/abc", native_id="abc", project=project, fingerprint=""
        ),
        tags=["baseline", "own"],
        config=config,
        summary={"mlflow_step": 3, "metric:_step": 1.0, "loss": 0.5},
        files=[
            FileRef(path="files/config.yaml"),
            FileRef(path="files/model/w.bin"),
            FileRef(path="files/bridge/source-files/config.yaml"),
        ],
    )
    assert layout_of({"lr": 1}) is None
    layout = layout_of(config)
    assert layout is not None
    restore_run(run, layout)
    assert run.config == {
        "lr": "0.1",
        "--weird": "dash-edged source key",
        "mlflow_tags": {"x": 1},
        "_bridge.mine": "a source key in the bridge namespace",
    }
    assert run.extra_tags == {"team": "vision", "baseline": "true"}
    assert run.tags == ["own"]  # "baseline" came from a backend tag, kept in extra_tags
    assert (run.start_time_ms, run.end_time_ms, run.status, run.user) == (5, 9, "KILLED", "ann")
    assert run.summary == {"_step": 1.0, "loss": 0.5}
    assert [f.path for f in run.files] == ["model/w.bin", "config.yaml"]
    assert split_row([("mlflow_step", 7.0), ("metric:_step", 2.0), ("a", 1.0)], "mlflow_step") == (
        7,
        [("_step", 2.0), ("a", 1.0)],
    )
