"""``--two-way`` with a W&B server as the source: notes, tags and registry aliases edited
in the MLflow copy go back to W&B (written through the real ``wandb.Api``, read back with
it), and W&B edits come to MLflow.

The W&B data is made by the real SDK online against the loopback fake
(:mod:`sdk_registry`): runs reg-a/b/c and the registry collection ``clf-registry``
(v0 staging, v1 prod).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer
from mlflow.tracking import MlflowClient
from sdk_registry import COLLECTION, make_registry_corpus

from bridge import api
from bridge.adapters.wandb.api_reader import WandbApiReader

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "reg"


class World:
    def __init__(self, srv: FakeWandbServer, made: dict[str, Any], tmp: Path) -> None:
        self.srv, self.made = srv, made
        self.uri = f"sqlite:///{tmp / 'dst.db'}"
        self.state = str(tmp / "state.db")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.source = f"wandb:{ENTITY}/{PROJECT}?base_url={srv.url}"

    def sync(self, **kw: Any) -> Any:
        return api.sync(self.source, f"mlflow:{self.uri}", state=self.state, two_way=True, **kw)

    def wapi(self) -> Any:
        import wandb

        return wandb.Api(
            api_key=self.srv.api_key,
            overrides={"base_url": self.srv.url, "entity": ENTITY},
            timeout=20,
        )

    def copy_of(self, run_id: str) -> str:
        """MLflow run id of the copy of W&B run ``run_id``."""
        sid = f"wandb:{ENTITY}/{PROJECT}/{run_id}"
        exp = self.client.get_experiment_by_name(PROJECT)
        [run] = self.client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`bridge.source_id` = '{sid}'"
        )
        return str(run.info.run_id)

    def tags(self, mlflow_run: str) -> dict[str, str]:
        return dict(self.client.get_run(mlflow_run).data.tags)

    def registry_aliases(self) -> dict[str, list[str]]:
        """vN -> aliases of the W&B Registry collection, from the real client."""
        coll = self.wapi().artifact_collection("model", self.made["registry"]["path"])
        return {a.version: sorted(a.aliases) for a in coll.artifacts()}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "read-cache"))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        made = make_registry_corpus(srv.url, ENTITY, PROJECT, tmp_path / "sdk", srv.api_key)
        w = World(srv, made, tmp_path)
        first = w.sync()
        assert first.exit_code() == 0, (first, srv.errors)
        yield w


def _line(plan: Any, run_id: str) -> Any:
    [line] = [r for r in plan.runs if r.source_id == f"wandb:{ENTITY}/{PROJECT}/{run_id}"]
    return line


def test_run_edits_flow_both_ways(world: World) -> None:
    run_c = world.made["runs"]["c"]
    copy = world.copy_of(run_c)
    # Edited in MLflow: the note and a W&B tag (one tag per W&B tag in the mapping).
    world.client.set_tag(copy, "mlflow.note.content", "checked by QA")
    world.client.set_tag(copy, "wandb.tag.reviewed", "true")
    plan = world.sync()
    assert plan.exit_code() == 0, plan
    line = _line(plan, run_c)
    assert line.edits_to_source == {"notes": "checked by QA", "tags": json.dumps(["reviewed"])}
    assert line.edits_to_dest == {} and line.conflicts == []
    run = world.wapi().run(f"{ENTITY}/{PROJECT}/{run_c}")
    assert run.notes == "checked by QA" and list(run.tags) == ["reviewed"]
    # nothing else on the W&B run changed
    assert world.srv.get_run(ENTITY, PROJECT, run_c).state == "finished"
    assert (ENTITY, "uncategorized") not in world.srv.projects  # updated, not created

    # Edited at the W&B source with the public API: MLflow gets it.
    run.notes = "retrained"
    run.tags = ["reviewed", "gold"]
    run.update()
    plan = world.sync()
    assert plan.exit_code() == 0, plan
    line = _line(plan, run_c)
    assert line.edits_to_dest == {"notes": "retrained", "tags": json.dumps(["gold", "reviewed"])}
    tags = world.tags(copy)
    assert tags["mlflow.note.content"] == "retrained"
    assert tags["wandb.tag.gold"] == tags["wandb.tag.reviewed"] == "true"

    # Removing a tag in MLflow removes it in W&B; order of the others is kept.
    world.client.delete_tag(copy, "wandb.tag.reviewed")
    assert world.sync().exit_code() == 0
    assert list(world.wapi().run(f"{ENTITY}/{PROJECT}/{run_c}").tags) == ["gold"]

    idle = world.sync()
    assert all(not r.edits_to_source and not r.edits_to_dest for r in idle.runs), idle

    # The reader compares what it listed; a header from elsewhere is read from the server.
    reader = WandbApiReader(f"{ENTITY}/{PROJECT}?base_url={world.srv.url}")
    try:
        [header] = [h for h in reader.list_runs() if h.native_id == run_c]
        listed = reader.editable(header)
        header.locator.pop("editable")
        assert reader.editable(header) == listed
        assert (listed.notes, listed.tags) == ("retrained", ["gold"])
    finally:
        reader.close()


def test_both_sides_edit_is_a_conflict(world: World) -> None:
    run_a = world.made["runs"]["a"]
    copy = world.copy_of(run_a)
    world.client.set_tag(copy, "mlflow.note.content", "mlflow side")
    run = world.wapi().run(f"{ENTITY}/{PROJECT}/{run_a}")
    run.notes = "wandb side"
    run.update()
    plan = world.sync()
    [conflict] = _line(plan, run_a).conflicts
    assert (conflict.field, conflict.source_value, conflict.dest_value) == (
        "edit:notes",
        "wandb side",
        "mlflow side",
    )
    assert world.wapi().run(f"{ENTITY}/{PROJECT}/{run_a}").notes == "wandb side"
    assert world.tags(copy)["mlflow.note.content"] == "mlflow side"


def test_registry_alias_moved_in_mlflow_moves_in_wandb(world: World) -> None:
    assert world.registry_aliases() == {"v0": ["staging"], "v1": ["latest", "prod"]}
    rm = world.client.get_registered_model(COLLECTION)
    assert {k: str(v) for k, v in rm.aliases.items()} == {"staging": "1", "prod": "2"}
    world.client.set_registered_model_alias(COLLECTION, "prod", "1")
    plan = world.sync()
    assert plan.exit_code() == 0, plan
    [model] = [m for m in plan.models if m.name == COLLECTION]
    assert [(a.alias, a.action) for a in model.aliases] == [("prod", "back")]
    assert world.registry_aliases() == {"v0": ["prod", "staging"], "v1": ["latest"]}

    # Removed in MLflow: removed from the W&B collection.
    world.client.delete_registered_model_alias(COLLECTION, "staging")
    plan = world.sync()
    [model] = [m for m in plan.models if m.name == COLLECTION]
    assert [(a.alias, a.action) for a in model.aliases] == [("staging", "back-delete")]
    assert world.registry_aliases() == {"v0": ["prod"], "v1": ["latest"]}

    idle = world.sync()
    assert all(m.aliases == [] for m in idle.models), idle.models
