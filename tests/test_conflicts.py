"""Conflicts: recorded with both values, listed, settled by `resolve` and by policies.

Real MLflow sqlite stores on both sides (MLflow → MLflow keeps these tests fast): a tag is
edited in the destination while the source changes it too, and a source param changes
(written straight into the source store's params table: MLflow's API refuses to change a
param, but a W&B config edit does exactly this to the bridge).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.cli import main

T0 = 1_650_000_000_000


class Pair:
    def __init__(self, tmp: Path) -> None:
        self.src_db = tmp / "src.db"
        self.src = f"mlflow:sqlite:///{self.src_db}"
        self.dst_uri = f"sqlite:///{tmp / 'dst.db'}"
        self.dst = f"mlflow:{self.dst_uri}"
        self.state = str(tmp / "state.db")
        client = MlflowClient(tracking_uri=f"sqlite:///{self.src_db}")
        exp = client.create_experiment("vision")
        run = client.create_run(exp, start_time=T0, run_name="r1", tags={"team": "cv"})
        self.src_run = run.info.run_id
        client.log_batch(
            self.src_run,
            params=[Param("lr", "0.1")],
            metrics=[Metric("loss", 1.0 / (i + 1), T0 + i, i) for i in range(10)],
        )
        client.set_terminated(self.src_run, "FINISHED", end_time=T0 + 60_000)
        self.src_client = client
        self.dst_client = MlflowClient(tracking_uri=self.dst_uri)

    def sync(self, **kw: Any) -> Any:
        return api.sync(self.src, self.dst, state=self.state, **kw)

    def dest_run(self) -> Any:
        runs = []
        for exp in self.dst_client.search_experiments():
            runs += self.dst_client.search_runs([exp.experiment_id])
        assert len(runs) == 1, "exactly one destination run (no duplicates)"
        return runs[0]

    def make_conflicts(self) -> None:
        """Dest edits tag `team`; the source changes `team` and param `lr`."""
        self.dst_client.set_tag(self.dest_run().info.run_id, "team", "edited-in-dest")
        self.src_client.set_tag(self.src_run, "team", "cv2")
        with sqlite3.connect(self.src_db) as conn:
            conn.execute("UPDATE params SET value = '0.2' WHERE key = 'lr'")


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    p = Pair(tmp_path)
    assert p.sync().exit_code() == 0
    return p


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_skip_records_both_values_and_resolve_settles(pair: Pair) -> None:
    pair.make_conflicts()
    plan = pair.sync()
    assert plan.exit_code() == 3
    listed = json.loads(_cli("conflicts", "--state", pair.state, "--json").output)
    by_field = {c["field"]: c for c in listed}
    assert set(by_field) == {"tag:team", "param:lr"}
    tag = by_field["tag:team"]
    assert (tag["source_value"], tag["dest_value"], tag["synced_value"]) == (
        "cv2",
        "edited-in-dest",
        "cv",
    )
    assert by_field["param:lr"]["source_value"] == "0.2"
    assert by_field["param:lr"]["dest_value"] == "0.1"
    # left untouched
    run = pair.dest_run()
    assert run.data.tags["team"] == "edited-in-dest" and run.data.params["lr"] == "0.1"
    # a second skip-sync does not record the same conflicts again
    assert pair.sync().exit_code() == 3
    assert len(api.conflicts(pair.state)) == 2

    out = _cli("conflicts", "resolve", str(tag["id"]), "--take", "source", "--state", pair.state)
    assert out.exit_code == 0 and "settled" in out.output
    out = _cli(
        "conflicts", "resolve", str(by_field["param:lr"]["id"]), "--take", "source",
        "--state", pair.state, "--json",
    )  # fmt: skip
    done = json.loads(out.output)
    assert "bridge.param_override.lr" in done["effect"]
    assert api.conflicts(pair.state) == []
    # resolving twice is a usage error
    again = _cli("conflicts", "resolve", str(tag["id"]), "--take", "dest", "--state", pair.state)
    assert again.exit_code == 2 and "already settled" in again.output

    plan = pair.sync()
    assert plan.exit_code() == 0, plan.conflicts
    run = pair.dest_run()
    assert run.data.tags["team"] == "cv2"
    assert run.data.params["lr"] == "0.1"  # immutable: kept, never silently overwritten
    assert run.data.tags["bridge.param_override.lr"] == "0.2"
    assert pair.sync().exit_code() == 0 and api.conflicts(pair.state) == []
    # the audit trail: who settled what
    settled = json.loads(_cli("conflicts", "--state", pair.state, "--all", "--json").output)
    choices = {c["field"]: c["resolution"]["choice"] for c in settled}
    assert choices == {"tag:team": "source", "param:lr": "source"}
    assert all("@" in c["resolution"]["resolved_by"] for c in settled)


def test_resolve_take_dest_keeps_destination_value(pair: Pair) -> None:
    pair.make_conflicts()
    assert pair.sync().exit_code() == 3
    for c in api.conflicts(pair.state):
        api.resolve_conflict(c["id"], "dest", pair.state, by="tester")
    plan = pair.sync()
    assert plan.exit_code() == 0, plan.conflicts
    run = pair.dest_run()
    assert run.data.tags["team"] == "edited-in-dest" and run.data.params["lr"] == "0.1"
    assert "bridge.param_override.lr" not in run.data.tags
    # not reported again on a later change of something else at the source
    pair.src_client.set_tag(pair.src_run, "other", "x")
    plan = pair.sync()
    assert plan.exit_code() == 0 and api.conflicts(pair.state) == []
    assert pair.dest_run().data.tags["team"] == "edited-in-dest"
    # the destination's value is the new baseline: a NEW source value is synced normally
    pair.src_client.set_tag(pair.src_run, "team", "cv3")
    assert pair.sync().exit_code() == 0
    assert pair.dest_run().data.tags["team"] == "cv3"


def test_source_wins_policy(pair: Pair) -> None:
    pair.make_conflicts()
    plan = pair.sync(on_conflict="source-wins")
    assert plan.exit_code() == 0
    assert {c.field for c in plan.resolved} == {"tag:team", "param:lr"}
    run = pair.dest_run()
    assert run.data.tags["team"] == "cv2"
    assert run.data.params["lr"] == "0.1"
    assert run.data.tags["bridge.param_override.lr"] == "0.2"
    settled = api.conflicts(pair.state, include_resolved=True)
    assert {c["resolution"]["resolved_by"] for c in settled} == {"policy:source-wins"}
    assert all(c["resolved"] for c in settled)
    # idle afterwards
    again = pair.sync(on_conflict="source-wins")
    assert again.exit_code() == 0 and again.counts() == {"unchanged": 1}


def test_dest_wins_policy(pair: Pair) -> None:
    pair.make_conflicts()
    plan = pair.sync(on_conflict="dest-wins")
    assert plan.exit_code() == 0 and plan.resolved
    run = pair.dest_run()
    assert run.data.tags["team"] == "edited-in-dest" and run.data.params["lr"] == "0.1"
    pair.src_client.set_tag(pair.src_run, "other", "y")
    plan = pair.sync()  # default skip policy: the settlement holds, nothing to report
    assert plan.exit_code() == 0 and plan.conflicts == []
    assert pair.dest_run().data.tags["team"] == "edited-in-dest"


def test_fail_policy_writes_nothing(pair: Pair) -> None:
    pair.make_conflicts()
    pair.src_client.log_metric(pair.src_run, "loss", 0.01, timestamp=T0 + 99, step=99)
    plan = pair.sync(on_conflict="fail")
    assert plan.exit_code() == 3
    run = pair.dest_run()
    assert len(pair.dst_client.get_metric_history(run.info.run_id, "loss")) == 10
    assert run.data.tags["team"] == "edited-in-dest"


def test_deleted_destination_run_policies(pair: Pair) -> None:
    first = pair.dest_run().info.run_id
    pair.dst_client.delete_run(first)
    pair.src_client.set_tag(pair.src_run, "touched", "1")  # the source moves on
    plan = pair.sync()
    assert plan.exit_code() == 3 and [c.field for c in plan.conflicts] == ["run"]
    plan = pair.sync(on_conflict="dest-wins")
    assert plan.exit_code() == 0 and plan.runs[0].action == "skip"
    with pytest.raises(AssertionError):
        pair.dest_run()  # still deleted
    assert pair.sync().exit_code() == 0  # the settlement holds under the default policy
    # the pair switches to source-wins: written again, as a new destination run
    pair.src_client.set_tag(pair.src_run, "touched", "2")
    plan = pair.sync(on_conflict="source-wins")
    assert plan.exit_code() == 0, plan.runs
    again = pair.dest_run()
    assert again.info.run_id != first and again.data.tags["touched"] == "2"
    assert len(pair.dst_client.get_metric_history(again.info.run_id, "loss")) == 10
