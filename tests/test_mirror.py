"""`bridge mirror`: cycles over a growing source, idle cycles, config files, status, and a
process killed mid-cycle."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_conflicts import Pair

from bridge import api
from bridge.cli import main
from bridge.config_file import MirrorConfig, PairConfig, load_config
from bridge.mirror import mirror

ENTITY, PROJECT = "acme", "demo"


def _snapshot(db: Path) -> dict[str, Any]:
    """Everything MLflow stores about runs, to prove an idle cycle writes nothing."""
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("runs", "params", "tags", "latest_metrics")
        } | {"metrics": conn.execute("SELECT count(*) FROM metrics").fetchone()}


@pytest.mark.e2e
def test_mirror_follows_a_growing_source(tmp_path: Path) -> None:
    from sdk_runs import append_to_run, make_big_run, make_offline_corpus, run_id_of
    from test_sync_offline_mlflow import _history, _runs_by_source, _same_points, _source_points

    runs = make_offline_corpus(tmp_path / "corpus", entity=ENTITY, project=PROJECT)
    wdir = runs["basic"].parent
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    cfg = MirrorConfig(
        state=str(tmp_path / "state.db"),
        every=0.2,
        pairs=[PairConfig(name="demo", source=f"wandb-offline:{wdir}", dest=f"mlflow:{uri}")],
    )
    lines: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []

    def grow(line: dict[str, Any]) -> None:
        lines.append(line)
        dest = _runs_by_source(uri)  # asserts zero duplicates after every cycle
        snaps.append(_snapshot(db))
        assert line["result"] == 0, line
        if line["cycle"] == 1:
            append_to_run(wdir, run_id_of(runs["resumed"]), ENTITY, PROJECT, steps=6)
            make_big_run(tmp_path / "corpus", 60, n_metrics=3, run_id="fresh",
                         entity=ENTITY, project=PROJECT)  # fmt: skip
        lines[-1]["dest_runs"] = len(dest)

    assert mirror(cfg, cycles=3, emit=grow) == 0
    first, second, idle = lines
    assert first["actions"].get("create", 0) >= 5 and first["points_written"] > 0
    assert second["actions"].get("create") == 1 and second["actions"].get("update") == 1
    assert second["dest_runs"] == first["dest_runs"] + 1
    assert idle["points_written"] == 0 and set(idle["actions"]) <= {"unchanged", "skip"}
    assert snaps[2] == snaps[1], "an idle cycle must write nothing"
    # the destination matches the grown source exactly
    dest = _runs_by_source(uri)
    for role, run_id in (("resumed", run_id_of(runs["resumed"])), ("fresh", "fresh")):
        mlrun = dest[f"wandb:{ENTITY}/{PROJECT}/{run_id}"]
        src = _source_points(wdir, run_id)
        assert src, role
        for key, points in src.items():
            assert _same_points(_history(uri, mlrun.info.run_id, key), points), (role, key)
    status = api.status(cfg.state)
    assert len(status) == 1 and status[0]["last_cycle"]["result"] == 0
    assert status[0]["last_cycle"]["state"] == "done"


@pytest.mark.e2e
def test_mirror_follows_a_growing_mlflow_source(tmp_path: Path) -> None:
    """MLflow → MLflow: new runs and new points between cycles arrive; an idle cycle is idle."""
    from mlflow.tracking import MlflowClient

    src, dst_db = tmp_path / "src.db", tmp_path / "dst.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{src}")
    exp = client.create_experiment("growing")
    first = client.create_run(exp, start_time=1_000, run_name="first").info.run_id
    client.log_metric(first, "loss", 1.0, timestamp=1_001, step=0)
    cfg = MirrorConfig(
        state=str(tmp_path / "state.db"),
        every=0.2,
        pairs=[PairConfig(source=f"mlflow:sqlite:///{src}", dest=f"mlflow:sqlite:///{dst_db}")],
    )
    lines: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []

    def grow(line: dict[str, Any]) -> None:
        lines.append(line)
        snaps.append(_snapshot(dst_db))
        if line["cycle"] == 1:
            client.log_metric(first, "loss", 0.5, timestamp=1_002, step=1)
            second = client.create_run(exp, start_time=2_000, run_name="second").info.run_id
            client.log_metric(second, "acc", 0.9, timestamp=2_001, step=0)

    assert mirror(cfg, cycles=3, emit=grow) == 0
    one, two, idle = lines
    assert one["actions"] == {"create": 1}
    assert two["actions"] == {"create": 1, "update": 1} and two["points_written"] == 2
    assert idle["points_written"] == 0 and set(idle["actions"]) == {"unchanged"}
    assert snaps[2] == snaps[1], "an idle cycle must write nothing"
    dest = MlflowClient(tracking_uri=f"sqlite:///{dst_db}")
    runs = {
        r.info.run_name: r
        for r in dest.search_runs([dest.get_experiment_by_name("growing").experiment_id])
    }
    assert set(runs) == {"first", "second"}  # no duplicates
    history = dest.get_metric_history(runs["first"].info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5)]


@pytest.mark.e2e
def test_mirror_killed_mid_cycle_then_next_cycle_is_exact(tmp_path: Path) -> None:
    from sdk_runs import make_big_run, run_id_of
    from test_sync_offline_mlflow import _history, _runs_by_source, _same_points, _source_points

    folder = make_big_run(tmp_path / "big", 240_000, n_metrics=3)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    state = str(tmp_path / "state.db")
    args = [sys.executable, "-m", "bridge.cli", "mirror", f"wandb-offline:{folder}",
            f"mlflow:{uri}", "--state", state, "--cycles", "1", "--log-format", "json"]  # fmt: skip
    env = dict(os.environ, CI="true")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, written = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                written = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        except sqlite3.Error:
            continue
        if written >= 5_000:
            break
    assert proc.poll() is None, "the cycle finished before it could be killed"
    proc.kill()
    proc.wait()
    (pair,) = api.status(state)
    assert pair["last_cycle"]["state"] == "interrupted" and pair["last_cycle"]["ended_at"] is None
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.splitlines()[-1])
    assert line["result"] == 0 and "skipped" not in line
    (run,) = _runs_by_source(uri).values()
    assert run.data.tags["bridge.complete"] == "true"
    for key, points in _source_points(folder.parent, run_id_of(folder)).items():
        assert _same_points(_history(uri, run.info.run_id, key), points), key
    assert api.status(state)[0]["last_cycle"]["state"] == "done"


def test_config_file_pairs_policies_and_status(tmp_path: Path) -> None:
    a = Pair(tmp_path / "a")
    b = Pair(tmp_path / "b")
    a.sync()  # pair a has run once with its own state, below it gets the shared one
    config = tmp_path / "bridge.toml"
    state = tmp_path / "shared-state.db"
    os.environ["BRIDGE_TEST_DEST_B"] = b.dst
    config.write_text(
        f'state = "{state}"\nevery = "1s"\nlog_format = "json"\n\n'
        '[defaults]\non_conflict = "dest-wins"\n\n'
        f'[[pair]]\nname = "a"\nsource = "{a.src}"\ndest = "{a.dst}"\n'
        'filters = { experiments = ["vision"] }\n\n'
        f'[[pair]]\nname = "b"\nsource = "{b.src}"\ndest = "${{BRIDGE_TEST_DEST_B}}"\n'
        'on_conflict = "source-wins"\non_delete = "keep"\n'
    )
    cfg = load_config(config)
    assert [p.on_conflict for p in cfg.pairs] == ["dest-wins", "source-wins"]
    assert cfg.pairs[1].dest == b.dst and cfg.every == 1.0
    out = CliRunner().invoke(main, ["mirror", "--config", str(config), "--cycles", "2"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in out.output.splitlines()]
    assert [(x["cycle"], x["pair"]) for x in lines] == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert lines[0]["actions"] == {"unchanged": 1}  # re-linked from identity tags
    assert lines[1]["actions"] == {"create": 1} and lines[3]["actions"] == {"unchanged": 1}
    status = json.loads(
        CliRunner().invoke(main, ["status", "--state", str(state), "--json"]).output
    )
    assert {(s["source"], s["dest"]) for s in status} == {(a.src, a.dst), (b.src, b.dst)}
    for s in status:
        assert s["last_cycle"]["result"] == 0 and s["open_conflicts"] == 0
        assert s["last_cycle"]["counts"]["actions"] == {"unchanged": 1}
    text = CliRunner().invoke(main, ["status", "--state", str(state)]).output
    assert "last cycle: done" in text and a.src in text


def test_source_deletion_is_reported_and_kept(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    assert pair.sync().exit_code() == 0
    pair.src_client.delete_run(pair.src_run)  # gone from the source's listing
    plan = pair.sync(on_delete="keep")
    (line,) = [r for r in plan.runs if r.action == "source-deleted"]
    assert line.outcome == "skipped" and "kept" in (line.reason or "")
    assert pair.dest_run().info.lifecycle_stage == "active"
    assert api.status(pair.state)[0]["source_deleted"] == 1
    # reported once; not decidable (so never acted on) with a filtered listing
    assert not [r for r in pair.sync().runs if r.action == "source-deleted"]
    out = CliRunner().invoke(
        main, ["sync", pair.src, pair.dst, "--state", pair.state, "--on-delete", "tag",
               "--experiment", "vision"],
    )  # fmt: skip
    # a filtered listing cannot tell deleted from filtered out: refused up front
    assert out.exit_code == 2 and "complete listing" in out.output


def test_bad_mirror_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[pair]]\nsource = "mlflow:sqlite:///x.db"\ndest = "mlflow:sqlite:///y.db"\n'
                      'on_conflict = "maybe"\n')  # fmt: skip
    out = CliRunner().invoke(main, ["mirror", "--config", str(config), "--cycles", "1"])
    assert out.exit_code == 2 and "pair #1.on_conflict" in out.output
    out = CliRunner().invoke(main, ["mirror", "x:y", "--cycles", "1"])
    assert out.exit_code == 2
    shutil.rmtree(tmp_path, ignore_errors=True)
