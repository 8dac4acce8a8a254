"""W&B server → MLflow, registries included: the SDK-made corpus of tests/sdk_registry.py
(two dataset versions with a moved alias, a used dataset, a reference artifact, a model
linked into a Registry collection with staging/prod and into a legacy portfolio) on the
loopback W&B server, synced by the bridge into a real MLflow sqlite store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer
from mlflow.tracking import MlflowClient
from sdk_registry import make_registry_corpus, move_alias

from bridge import api

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "reg"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp, FakeWandbServer() as srv:
        mp.setenv("WANDB_CACHE_DIR", str(tmp_path / "read-cache"))
        mp.setenv("WANDB_API_KEY", srv.api_key)
        mp.delenv("WANDB_BASE_URL", raising=False)
        made = make_registry_corpus(srv.url, ENTITY, PROJECT, tmp_path / "sdk", srv.api_key)
        db = f"sqlite:///{tmp_path / 'mlflow.db'}"
        yield {
            "srv": srv,
            "made": made,
            "source": f"wandb:{ENTITY}/{PROJECT}?base_url={srv.url}",
            "dest": f"mlflow:{db}",
            "client": MlflowClient(tracking_uri=db),
            "state": str(tmp_path / "state.db"),
            "tmp": tmp_path,
        }


def _sync(w: dict[str, Any]) -> Any:
    return api.sync(w["source"], w["dest"], state=w["state"])


def _versions(client: MlflowClient, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_registry_to_mlflow_then_only_the_moved_alias(world: dict[str, Any]) -> None:
    client: MlflowClient = world["client"]
    made = world["made"]
    plan = _sync(world)
    assert plan.exit_code() == 0, (plan.errors, [m.error for m in plan.models])
    runs = {r.source_id.rsplit("/", 1)[-1]: r.dest_id for r in plan.runs}
    assert set(runs) == {"reg-a", "reg-b", "reg-c"}

    # Registry collection -> registered model; versions in W&B order, aliases on them.
    reg = made["registry"]
    versions = _versions(client, reg["collection"])
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert [v.tags["bridge.source_version"] for v in versions] == ["0", "1"]
    assert [v.run_id for v in versions] == [runs["reg-a"], runs["reg-c"]]
    assert all(v.source.startswith("models:/") for v in versions)
    assert _aliases(client, reg["collection"]) == {"staging": "1", "prod": "2"}
    rm = client.get_registered_model(reg["collection"])
    assert rm.description == reg["description"]
    # "latest" is W&B's own and reserved in MLflow: reported by name, not copied
    assert any(w.code == "alias-not-copied" and "'latest'" in w.message for w in plan.warnings)

    # The legacy portfolio too; its versions reuse the same model copies (no second upload).
    legacy = made["legacy"]
    assert [str(v.version) for v in _versions(client, legacy["collection"])] == ["1", "2"]
    assert _aliases(client, legacy["collection"]) == {"champion": "2"}
    portfolio_sources = [v.source for v in _versions(client, legacy["collection"])]
    assert portfolio_sources == [v.source for v in versions]
    experiment = client.get_run(runs["reg-a"]).info.experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert sorted(m.tags["bridge.artifact.version"] for m in models) == ["v0", "v1"]

    # The dataset reg-c used -> an MLflow dataset input with its digest.
    inputs = client.get_run(runs["reg-c"]).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [
        ("train-data", made["digests"]["train-data:v1"][: len(inputs[0].dataset.digest)])
    ]
    # Content verified while copying; verify agrees.
    assert not [w for w in plan.warnings if w.code == "checksum-mismatch"]
    check = api.verify(world["source"], world["dest"], state=world["state"])
    assert check.exit_code() == 0, [m.model_dump() for m in check.mismatches]

    # Move prod back to v0 at the source: the only write of the next sync.
    move_alias(world["srv"].url, f"{reg['path']}:v0", "prod", world["tmp"] / "mv", made_key(world))
    again = _sync(world)
    assert again.exit_code() == 0
    [changed] = [m for m in again.models if m.name == reg["collection"]]
    assert changed.versions == []
    assert [(a.alias, a.action, a.dest_from, a.dest_to) for a in changed.aliases] == [
        ("prod", "set", "2", "1")
    ]
    assert all(m.action == "unchanged" for m in again.models if m is not changed)
    assert all(r.outcome == "unchanged" for r in again.runs)
    assert _aliases(client, reg["collection"]) == {"staging": "1", "prod": "1"}
    assert len(_versions(client, reg["collection"])) == 2


def made_key(world: dict[str, Any]) -> str:
    return str(world["srv"].api_key)


def test_dry_run_lists_artifacts_bytes_and_registry_changes(world: dict[str, Any]) -> None:
    plan = api.diff(world["source"], world["dest"], state=world["state"])
    by_run = {r.source_id.rsplit("/", 1)[-1]: r for r in plan.runs}
    assert any(a.startswith("train-data:v1") for a in by_run["reg-b"].artifacts_new)
    assert any("references kept" in a for a in by_run["reg-b"].artifacts_new)
    assert (by_run["reg-a"].bytes_new or 0) > 0
    [model] = [m for m in plan.models if m.name == world["made"]["registry"]["collection"]]
    assert [v.source_version for v in model.versions] == ["v0", "v1"]
    assert {(a.alias, a.dest_to) for a in model.aliases if a.action == "set"} == {
        ("staging", "+v0"),
        ("prod", "+v1"),
    }
    assert world["client"].search_registered_models() == []
    assert not Path(world["state"]).exists()


def test_registry_version_of_a_run_out_of_scope(world: dict[str, Any]) -> None:
    """Only reg-a is synced: clf v1 (logged by reg-c) is still migrated, without a run link."""
    from bridge.adapters.base import ReaderOptions

    plan = api.sync(
        world["source"],
        world["dest"],
        state=world["state"],
        reader_options=ReaderOptions(run_ids=["reg-a"], registries=["clf-registry"]),
    )
    assert plan.exit_code() == 0, (plan.errors, [m.error for m in plan.models])
    assert [r.source_id.rsplit("/", 1)[-1] for r in plan.runs] == ["reg-a"]
    [model] = plan.models  # --models-style filter: the portfolio is not listed
    notes = {v.source_version: v.note for v in model.versions}
    assert notes["v0"] is None and "not in this sync's scope" in (notes["v1"] or "")
    client: MlflowClient = world["client"]
    v1, v2 = _versions(client, "clf-registry")
    assert v1.run_id == plan.runs[0].dest_id and not v2.run_id
    # v2's content lives in a logged model of the registry's own experiment
    [lm] = [
        m
        for m in client.search_logged_models(
            experiment_ids=[client.get_experiment_by_name("wandb-registry-model").experiment_id]
        )
    ]
    assert v2.source == f"models:/{lm.model_id}"
