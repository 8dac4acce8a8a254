"""``--two-way``: notes, labels and registry aliases edited on either side propagate; an
edit on both sides since the last cycle is a conflict that ``conflicts resolve`` settles.

Real MLflow sqlite stores on both sides (MLflow → MLflow), plus the refusal for a source
that cannot take edits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.cli import main
from tests.test_registry_sync import MODEL, Registry

pytestmark = pytest.mark.e2e

T0 = 1_650_000_000_000


class Pair:
    def __init__(self, tmp: Path) -> None:
        src_uri = f"sqlite:///{tmp / 'src.db'}"
        dst_uri = f"sqlite:///{tmp / 'dst.db'}"
        self.src, self.dst = f"mlflow:{src_uri}", f"mlflow:{dst_uri}"
        self.state = str(tmp / "state.db")
        self.src_client = MlflowClient(tracking_uri=src_uri)
        self.dst_client = MlflowClient(tracking_uri=dst_uri)
        exp = self.src_client.create_experiment("vision", artifact_location=str(tmp / "src-art"))
        run = self.src_client.create_run(
            exp, start_time=T0, run_name="r1", tags={"team": "cv", "mlflow.note.content": "n1"}
        )
        self.src_run = run.info.run_id
        self.src_client.log_batch(self.src_run, metrics=[Metric("loss", 1.0, T0, 0)])
        self.src_client.set_terminated(self.src_run, "FINISHED", end_time=T0 + 1000)

    def sync(self, **kw: Any) -> Any:
        return api.sync(self.src, self.dst, state=self.state, two_way=True, **kw)

    @property
    def dst_run(self) -> str:
        [run] = self.dst_client.search_runs(
            [self.dst_client.get_experiment_by_name("vision").experiment_id]
        )
        return run.info.run_id

    def src_tags(self) -> dict[str, str]:
        return dict(self.src_client.get_run(self.src_run).data.tags)

    def dst_tags(self) -> dict[str, str]:
        return dict(self.dst_client.get_run(self.dst_run).data.tags)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    p = Pair(tmp_path)
    first = p.sync()
    assert first.exit_code() == 0, first
    return p


def _line(plan: Any) -> Any:
    [run] = plan.runs
    return run


def test_edits_flow_both_ways(pair: Pair) -> None:
    # a label edited and one added in the destination go back to the source
    pair.dst_client.set_tag(pair.dst_run, "team", "nlp")
    pair.dst_client.set_tag(pair.dst_run, "reviewed", "yes")
    plan = pair.sync()
    assert plan.exit_code() == 0, plan
    assert _line(plan).edits_to_source == {"label:reviewed": "yes", "label:team": "nlp"}
    src = pair.src_tags()
    assert src["team"] == "nlp" and src["reviewed"] == "yes"

    # a note edited at the source goes to the destination; the label stays agreed
    pair.src_client.set_tag(pair.src_run, "mlflow.note.content", "n2")
    plan = pair.sync()
    assert _line(plan).edits_to_dest == {"notes": "n2"}
    assert pair.dst_tags()["mlflow.note.content"] == "n2"
    assert pair.dst_tags()["team"] == "nlp"

    # a label removed in the destination is removed at the source
    pair.dst_client.delete_tag(pair.dst_run, "reviewed")
    pair.sync()
    assert "reviewed" not in pair.src_tags()

    # an idle cycle carries nothing
    idle = pair.sync()
    assert not _line(idle).edits_to_dest and not _line(idle).edits_to_source


def test_both_sides_edit_is_a_conflict_that_resolve_settles(pair: Pair) -> None:
    pair.src_client.set_tag(pair.src_run, "team", "a")
    pair.dst_client.set_tag(pair.dst_run, "team", "b")
    plan = pair.sync()
    assert plan.exit_code() == 3
    [conflict] = plan.conflicts
    assert (conflict.field, conflict.source_value, conflict.dest_value, conflict.synced_value) == (
        "edit:label:team",
        "a",
        "b",
        "cv",
    )
    assert pair.src_tags()["team"] == "a" and pair.dst_tags()["team"] == "b"  # untouched

    [row] = api.conflicts(state=pair.state)
    api.resolve_conflict(row["id"], "dest", state=pair.state)
    settled = pair.sync()
    assert settled.exit_code() == 0, settled
    assert pair.src_tags()["team"] == "b"
    assert api.conflicts(state=pair.state) == []


def test_source_wins_policy_settles_at_once(pair: Pair) -> None:
    pair.src_client.set_tag(pair.src_run, "team", "a")
    pair.dst_client.set_tag(pair.dst_run, "team", "b")
    plan = pair.sync(on_conflict="source-wins")
    assert plan.exit_code() == 0
    assert [c.field for c in plan.resolved] == ["edit:label:team"]
    assert pair.dst_tags()["team"] == "a"


def test_without_two_way_a_destination_edit_is_not_carried_back(pair: Pair) -> None:
    pair.dst_client.set_tag(pair.dst_run, "reviewed", "yes")
    api.sync(pair.src, pair.dst, state=pair.state)
    assert "reviewed" not in pair.src_tags()


def test_alias_moved_in_the_destination_moves_at_the_source(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.sync(two_way=True).exit_code() == 0
    reg.dst_client.set_registered_model_alias(MODEL, "prod", "1")
    plan = reg.sync(two_way=True)
    assert plan.exit_code() == 0, plan
    [model] = plan.models
    assert [(a.alias, a.action) for a in model.aliases] == [("prod", "back")]
    assert str(reg.client.get_registered_model(MODEL).aliases["prod"]) == "1"
    idle = reg.sync(two_way=True)
    assert idle.models[0].aliases == []


def test_two_way_refused_for_a_source_that_cannot_take_edits(tmp_path: Path) -> None:
    (tmp_path / "wandb").mkdir()
    result = CliRunner().invoke(
        main,
        [
            "sync",
            f"wandb-offline:{tmp_path / 'wandb'}",
            f"mlflow:sqlite:///{tmp_path / 'm.db'}",
            "--state",
            str(tmp_path / "s.db"),
            "--two-way",
        ],
    )
    assert result.exit_code == 2
    assert "--two-way" in result.output and "wandb-offline" in result.output
