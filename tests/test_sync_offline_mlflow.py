"""End to end: SDK-made W&B offline runs → real MLflow stores, through the CLI and the API."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sdk_runs import make_offline_corpus, run_id_of

from bridge import api
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.schema import MetricChunk

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "demo"


@pytest.fixture(scope="module")
def corpus_master(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("corpus")
    runs = make_offline_corpus(root, entity=ENTITY, project=PROJECT)
    return root, runs


@pytest.fixture
def corpus(tmp_path: Path, corpus_master: tuple[Path, dict[str, Path]]) -> tuple[Path, dict]:
    """A private copy of the corpus (some tests append to it)."""
    root, runs = corpus_master
    copy = tmp_path / "corpus"
    shutil.copytree(root, copy, symlinks=True)
    return copy, {role: copy / p.relative_to(root) for role, p in runs.items()}


def _wandb_dir(runs: dict[str, Path]) -> Path:
    parents = {p.parent for p in runs.values()}
    assert len(parents) == 1, parents
    return parents.pop()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="true")
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _runs_by_source(uri: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri=uri)
    out = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            sid = run.data.tags.get("bridge.source_id")
            assert sid not in out, f"duplicate destination run for {sid}"
            out[sid] = run
    return out


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, int, float]]:
    client = MlflowClient(tracking_uri=uri)
    points = client.get_metric_history(run_id, key)
    return sorted((m.step, m.timestamp, m.value) for m in points)


def _source_points(folder: Path, run_id: str) -> dict[str, list[tuple[int, int, float]]]:
    """Every metric point of one run, as the offline reader gives it."""
    reader = WandbOfflineReader(str(folder))
    out: dict[str, list[tuple[int, int, float]]] = {}
    for header in reader.list_runs():
        if header.native_id != run_id:
            continue
        run = reader.read_run(header)
        for item in reader.iter_history(run):
            if isinstance(item, MetricChunk):
                out.setdefault(item.key, []).extend(
                    zip(item.steps, item.timestamps, item.values, strict=True)
                )
    return out


def _same_points(a: list[tuple[int, int, float]], b: list[tuple[int, int, float]]) -> bool:
    if len(a) != len(b):
        return False
    for (s1, t1, v1), (s2, t2, v2) in zip(sorted(a), sorted(b), strict=True):
        if (s1, t1) != (s2, t2):
            return False
        if math.isnan(v1) and math.isnan(v2):
            continue
        if math.isinf(v1) or math.isinf(v2):
            # MLflow stores ±inf as ±1.797e308 (reported; raw value kept in an artifact)
            if not (min(abs(v1), abs(v2)) > 1e300 and (v2 > 0) == (v1 > 0)):
                return False
            continue
        if v1 != v2:
            return False
    return True


def test_sync_fidelity_idempotency_and_dry_run(tmp_path: Path, corpus: tuple[Path, dict]) -> None:
    _, runs = corpus
    wdir = _wandb_dir(runs)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = tmp_path / "state.db"

    # Dry run: a plan, nothing written anywhere.
    dry = _cli(
        "sync",
        f"wandb-offline:{wdir}",
        f"mlflow:{uri}",
        "--state",
        str(state),
        "--dry-run",
        "--json",
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True
    assert plan["counts"].get("create", 0) >= 4
    basic_id = f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['basic'])}"
    basic_plan = next(r for r in plan["runs"] if r["source_id"] == basic_id)
    assert basic_plan["action"] == "create" and basic_plan["points_new"] > 0
    assert not state.exists()
    assert not (tmp_path / "mlflow.db").exists()  # not even an empty store

    first = _cli("sync", f"wandb-offline:{wdir}", f"mlflow:{uri}", "--state", str(state), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    summary = json.loads(first.stdout)
    by_id = {r["source_id"]: r for r in summary["runs"]}
    # a header-only log records no entity/project: it is listed, reported and skipped
    (killed_id,) = [sid for sid in by_id if sid.endswith("/" + run_id_of(runs["killed"]))]
    assert by_id[killed_id]["outcome"] == "skipped"
    assert any(w["source_id"] == killed_id for w in summary["warnings"])

    dest = _runs_by_source(uri)
    client = MlflowClient(tracking_uri=uri)
    src_reader = WandbOfflineReader(str(wdir))
    headers = {h.source_id: h for h in src_reader.list_runs()}

    # --- the basic run, field by field
    run = dest[basic_id]
    src = src_reader.read_run(headers[basic_id])
    assert run.info.run_name == src.name
    assert run.info.start_time == src.start_time_ms
    assert run.info.end_time == src.end_time_ms
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["mlflow.note.content"] == src.notes
    assert json.loads(tags["wandb.tags"]) == src.tags
    assert tags["wandb.group"] == src.group and tags["wandb.job_type"] == src.job_type
    assert tags["bridge.complete"] == "true"
    for key, value in src.config.items():
        if isinstance(value, dict):
            for sub, subval in value.items():
                if not isinstance(subval, dict):
                    assert f"{key}.{sub}" in params
        elif isinstance(value, str):
            assert params[key] == value
        else:
            assert json.loads(params[key]) == value
    # every metric point, exact step/timestamp/value (NaN kept, inf reported)
    src_points = _source_points(runs["basic"], "basic")
    assert src_points, "the basic run has history"
    for key, points in src_points.items():
        assert _same_points(_history(uri, run.info.run_id, key), points), key
    assert any(k.startswith("system/") for k in run.data.metrics)
    warnings = [w for w in summary["warnings"] if w["source_id"] == basic_id]
    assert any(w["code"] == "non-finite" for w in warnings)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bridge")}
    assert {"bridge/config.json", "bridge/summary.json", "bridge/history-extras.jsonl"} <= artifacts
    config_path = client.download_artifacts(run.info.run_id, "bridge/config.json", str(tmp_path))
    assert json.loads(Path(config_path).read_text()) == src.config
    # the results, folded by the history pass for a new copy (engine/plan.py): the string
    # summary value as a tag, numeric summary-only values as points, the whole summary file
    assert tags["wandb.summary.final_note"] == "done"
    assert run.data.metrics["best_epoch"] == 42 and run.data.metrics["score"] == 0.875
    summary_path = client.download_artifacts(run.info.run_id, "bridge/summary.json", str(tmp_path))
    assert json.loads(Path(summary_path).read_text()) == json.loads(json.dumps(src.results))
    # ... and counted in the report as the dry run (which reads the results first) planned
    assert by_id[basic_id]["tags_to_write"] == basic_plan["tags_to_write"]
    extras_path = client.download_artifacts(
        run.info.run_id, "bridge/history-extras.jsonl", str(tmp_path)
    )
    extras = [json.loads(line) for line in Path(extras_path).read_text().splitlines()]
    assert any(e["kind"] == "non-finite" for e in extras)
    assert any(e["kind"] == "image-file" for e in extras)
    media = [e for e in extras if e["kind"] == "image-file"]
    media_path = json.loads(media[0]["value_json"])["path"]
    listed = client.list_artifacts(run.info.run_id, "files/" + str(Path(media_path).parent))
    assert any(a.path.endswith(Path(media_path).name) for a in listed)

    # --- crashed, resumed, truncated runs
    crashed = dest[f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['crashed'])}"]
    assert crashed.info.status == "FAILED"
    assert crashed.data.tags.get("wandb.exit_code") == "1"
    resumed_id = f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['resumed'])}"
    resumed = dest[resumed_id]
    resumed_src = src_reader.read_run(headers[resumed_id])
    n_res = sum(len(c) for c in src_reader.iter_history(resumed_src) if isinstance(c, MetricChunk))
    n_dest = sum(
        len(client.get_metric_history(resumed.info.run_id, k)) for k in resumed.data.metrics
    )
    assert n_res == n_dest and n_res > 0
    truncated = dest[f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['truncated'])}"]
    assert "bridge.incomplete" in truncated.data.tags
    assert "byte" in truncated.data.tags["bridge.incomplete"]

    # --- second sync: nothing written, no duplicates
    second = _cli("sync", f"wandb-offline:{wdir}", f"mlflow:{uri}", "--state", str(state), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["points_written"] == 0
    assert set(again["counts"]) <= {"unchanged", "skip"}
    assert len(_runs_by_source(uri)) == len(dest)

    # --- a full comparison (fingerprints ignored) also finds nothing to write
    full = _cli(
        "sync", f"wandb-offline:{wdir}", f"mlflow:{uri}", "--state", str(state), "--full", "--json"
    )
    assert full.returncode == 0, full.stderr
    full_summary = json.loads(full.stdout)
    assert full_summary["points_written"] == 0
    assert set(full_summary["counts"]) <= {"unchanged", "skip"}

    # --- state lost: rebuilt from identity tags, still no duplicates and nothing written
    lost = _cli(
        "sync",
        f"wandb-offline:{wdir}",
        f"mlflow:{uri}",
        "--state",
        str(tmp_path / "fresh-state.db"),
        "--json",
    )
    assert lost.returncode == 0, lost.stderr
    rebuilt = json.loads(lost.stdout)
    assert rebuilt["points_written"] == 0
    assert len(_runs_by_source(uri)) == len(dest)


def test_appended_history_lands_as_new_points_only(
    tmp_path: Path, corpus: tuple[Path, dict]
) -> None:
    from sdk_runs import append_to_run

    _, runs = corpus
    wdir = _wandb_dir(runs)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = str(tmp_path / "state.db")
    first = api.sync(f"wandb-offline:{wdir}", f"mlflow:{uri}", state=state)
    assert first.exit_code() == 0
    before = _runs_by_source(uri)
    run_id = run_id_of(runs["resumed"])
    append_to_run(runs["resumed"].parent, run_id, entity=ENTITY, project=PROJECT, steps=7)
    second = api.sync(f"wandb-offline:{wdir}", f"mlflow:{uri}", state=state)
    sid = f"wandb:{ENTITY}/{PROJECT}/{run_id}"
    line = next(r for r in second.runs if r.source_id == sid)
    assert line.action == "update" and line.outcome == "done"
    n_metrics = len(
        [
            k
            for k in _source_points(runs["resumed"].parent, "resumed")
            if not k.startswith("system/")
        ]
    )
    assert line.points_written >= 7 * n_metrics
    others = [r for r in second.runs if r.source_id != sid]
    assert all(r.points_written == 0 for r in others)
    after = _runs_by_source(uri)
    assert set(after) == set(before)
    dest = after[sid]
    for key, points in _source_points(runs["resumed"].parent, "resumed").items():
        if key.startswith("system/"):
            continue
        assert _same_points(_history(uri, dest.info.run_id, key), points), key


def test_rest_server_path(mlflow_server: str, tmp_path: Path, corpus: tuple[Path, dict]) -> None:
    _, runs = corpus
    wdir = _wandb_dir(runs)
    plan = api.sync(
        f"wandb-offline:{wdir}", f"mlflow:{mlflow_server}", state=str(tmp_path / "s.db")
    )
    assert plan.exit_code() == 0
    dest = _runs_by_source(mlflow_server)
    basic_id = f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['basic'])}"
    for key, points in _source_points(runs["basic"], "basic").items():
        assert _same_points(_history(mlflow_server, dest[basic_id].info.run_id, key), points)
    again = api.sync(
        f"wandb-offline:{wdir}", f"mlflow:{mlflow_server}", state=str(tmp_path / "s.db")
    )
    assert all(r.action in ("unchanged", "skip") for r in again.runs)


def test_postgres_backend_store(
    pg_database: str, tmp_path: Path, corpus: tuple[Path, dict]
) -> None:
    _, runs = corpus
    wdir = _wandb_dir(runs)
    plan = api.sync(
        f"wandb-offline:{runs['basic']}", f"mlflow:{pg_database}", state=str(tmp_path / "s.db")
    )
    assert plan.exit_code() == 0, plan.runs
    dest = _runs_by_source(pg_database)
    basic_id = f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['basic'])}"
    assert list(dest) == [basic_id]
    for key, points in _source_points(runs["basic"], "basic").items():
        assert _same_points(_history(pg_database, dest[basic_id].info.run_id, key), points)
    assert wdir.exists()


def test_conflicts_are_reported_and_left_untouched(
    tmp_path: Path, corpus: tuple[Path, dict]
) -> None:
    from sdk_runs import append_to_run

    _, runs = corpus
    folder = runs["resumed"].parent
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = str(tmp_path / "state.db")
    assert api.sync(f"wandb-offline:{folder}", f"mlflow:{uri}", state=state).exit_code() == 0
    sid = f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['resumed'])}"
    dest = _runs_by_source(uri)[sid]
    client = MlflowClient(tracking_uri=uri)
    # someone edits a tag the bridge wrote, in MLflow
    edited_key = next(k for k in dest.data.tags if k.startswith("wandb.") and k != "wandb.tags")
    client.set_tag(dest.info.run_id, edited_key, "edited in mlflow")
    # ...and the source changes too (new history + a changed config value)
    append_to_run(
        folder,
        run_id_of(runs["resumed"]),
        entity=ENTITY,
        project=PROJECT,
        steps=3,
        config={"part": 99},
    )
    result = _cli("sync", f"wandb-offline:{folder}", f"mlflow:{uri}", "--state", state, "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    fields = {c["field"] for c in report["conflicts"]}
    assert f"tag:{edited_key}" in fields
    assert "param:part" in fields
    after = client.get_run(dest.info.run_id)
    assert after.data.tags[edited_key] == "edited in mlflow"
    assert after.data.params["part"] == dest.data.params["part"]


def test_killed_sync_then_rerun_is_exact(tmp_path: Path) -> None:
    from sdk_runs import make_big_run

    folder = make_big_run(
        tmp_path / "big", 300_000, n_metrics=3
    )  # big enough to kill mid-way at bulk-insert speed
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    state = str(tmp_path / "state.db")
    env = dict(os.environ, CI="true")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "sync",
            f"wandb-offline:{folder}",
            f"mlflow:{uri}",
            "--state",
            state,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    written = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    written = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
            except sqlite3.Error:
                continue
            if written >= 5_000:
                break
    assert proc.poll() is None, "the sync finished before it could be killed; use a bigger run"
    proc.kill()
    proc.wait()
    assert 0 < written < 300_000
    result = _cli("sync", f"wandb-offline:{folder}", f"mlflow:{uri}", "--state", state, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    dest = _runs_by_source(uri)
    assert len(dest) == 1
    (run,) = dest.values()
    assert run.data.tags["bridge.complete"] == "true"
    for key, points in _source_points(folder.parent, run_id_of(folder)).items():
        assert _same_points(_history(uri, run.info.run_id, key), points), key


@pytest.mark.parametrize(
    ("source", "dest", "needle"),
    [
        ("wandb-offline:/nonexistent/folder", "mlflow:sqlite:///x.db", "/nonexistent/folder"),
        ("nosuch:thing", "mlflow:sqlite:///x.db", "unknown URI"),
        ("wandb-offline:.", "mlflow:http://127.0.0.1:9", "127.0.0.1:9"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2(
    tmp_path: Path, corpus: tuple[Path, dict], source: str, dest: str, needle: str
) -> None:
    _, runs = corpus
    if source == "wandb-offline:.":
        source = f"wandb-offline:{_wandb_dir(runs)}"
    result = _cli("sync", source, dest, "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and lines[0].startswith("bridge: error:")


def test_results_written_when_bodies_are_read_again_for_the_apply(
    tmp_path: Path, corpus: tuple[Path, dict]
) -> None:
    """``--on-conflict fail`` plans every run before writing any and reads each body again
    for the apply (engine/pipeline.py): a new copy planned without its results still gets
    what they render to (the string summary value's tag, the summary file)."""
    root, runs = corpus
    uri = f"sqlite:///{tmp_path / 'held.db'}"
    wdir = _wandb_dir(runs)
    out = _cli(
        "sync", f"wandb-offline:{wdir}", f"mlflow:{uri}", "--state", str(tmp_path / "s.db"),
        "--on-conflict", "fail", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    basic = _runs_by_source(uri)[f"wandb:{ENTITY}/{PROJECT}/{run_id_of(runs['basic'])}"]
    assert basic.data.tags["wandb.summary.final_note"] == "done"  # type: ignore[attr-defined]
    assert basic.data.metrics["score"] == 0.875  # type: ignore[attr-defined]
