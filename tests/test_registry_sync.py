"""Registered models through the sync engine: MLflow registry → MLflow registry.

Real MLflow sqlite stores on both sides. Versions arrive in order with their run links,
aliases on the right versions; a re-sync writes nothing; an alias moved at the source is
the only thing written next time; an alias moved on both sides is a conflict that
`bridge conflicts resolve` settles; a dry run lists versions, bytes and alias moves.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.state import StateStore

pytestmark = pytest.mark.e2e

T0 = 1_650_000_000_000
MODEL = "clf"


class Registry:
    """A source MLflow store with two runs, each logging a model folder, registered as
    versions 1 and 2 of ``clf`` (staging → 1, prod → 2), and an empty destination."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src_uri = f"sqlite:///{tmp / 'src.db'}"
        self.dst_uri = f"sqlite:///{tmp / 'dst.db'}"
        self.src = f"mlflow:{self.src_uri}"
        self.dst = f"mlflow:{self.dst_uri}"
        self.state = str(tmp / "state.db")
        self.client = MlflowClient(tracking_uri=self.src_uri)
        exp = self.client.create_experiment("vision", artifact_location=str(tmp / "src-art"))
        self.runs: list[str] = []
        self.weights: list[bytes] = []
        for i in range(2):
            run = self.client.create_run(exp, start_time=T0 + i, run_name=f"train-{i}")
            folder = tmp / f"model-{i}"
            folder.mkdir()
            data = hashlib.sha256(str(i).encode()).digest() * 1000
            (folder / "weights.bin").write_bytes(data)
            (folder / "MLmodel").write_text(f"flavors: {{}}\nrun: {i}\n")
            self.client.log_artifacts(run.info.run_id, str(folder), "model")
            self.client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 60_000)
            self.runs.append(run.info.run_id)
            self.weights.append(data)
        self.client.create_registered_model(MODEL, tags={"team": "cv"}, description="classifier")
        for run_id in self.runs:
            self.client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id)
        self.client.set_registered_model_alias(MODEL, "staging", "1")
        self.client.set_registered_model_alias(MODEL, "prod", "2")
        self.dst_client = MlflowClient(tracking_uri=self.dst_uri)

    def sync(self, **kw: Any) -> Any:
        return api.sync(self.src, self.dst, state=self.state, **kw)

    def dest_versions(self) -> list[Any]:
        found = self.dst_client.search_model_versions(f"name='{MODEL}'")
        return sorted(found, key=lambda v: int(v.version))

    def dest_aliases(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.dst_client.get_registered_model(MODEL).aliases.items()}


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path)


def _model_plan(plan: Any) -> Any:
    [model] = [m for m in plan.models if m.name == MODEL]
    return model


def test_registry_copied_in_order_with_aliases_and_run_links(reg: Registry) -> None:
    plan = reg.sync()
    assert plan.exit_code() == 0, plan
    model = _model_plan(plan)
    assert model.action == "create" and model.outcome == "done"
    assert [(v.source_version, v.dest_version) for v in model.versions] == [
        ("v1", "1"),
        ("v2", "2"),
    ]

    versions = reg.dest_versions()
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert reg.dest_aliases() == {"staging": "1", "prod": "2"}
    rm = reg.dst_client.get_registered_model(MODEL)
    assert rm.description == "classifier" and rm.tags.get("team") == "cv"
    # Each version links to the copy of its run, and its content is that copy's folder.
    by_source = {r.source_id.rsplit("#", 1)[-1]: r.dest_id for r in plan.runs}
    for v, src_run, data in zip(versions, reg.runs, reg.weights, strict=True):
        assert v.run_id == by_source[src_run]
        assert v.tags["bridge.source_version"] in ("1", "2")
        local = reg.dst_client.download_artifacts(v.run_id, "model", str(reg.tmp / f"v{v.version}"))
        assert (Path(local) / "weights.bin").read_bytes() == data

    again = reg.sync()
    assert _model_plan(again).action == "unchanged"
    assert len(reg.dest_versions()) == 2


def test_alias_moved_at_source_is_the_only_write(reg: Registry) -> None:
    reg.sync()
    reg.client.set_registered_model_alias(MODEL, "prod", "1")
    plan = reg.sync()
    model = _model_plan(plan)
    assert model.versions == []
    assert [(a.alias, a.action, a.dest_from, a.dest_to) for a in model.aliases] == [
        ("prod", "set", "2", "1")
    ]
    assert reg.dest_aliases() == {"staging": "1", "prod": "1"}
    assert [r.outcome for r in plan.runs] == ["unchanged", "unchanged"]


def test_alias_moved_on_both_sides_is_a_conflict_resolve_settles(reg: Registry) -> None:
    reg.sync()
    reg.client.set_registered_model_alias(MODEL, "staging", "2")
    reg.dst_client.create_model_version(MODEL, f"runs:/{reg.runs[0]}/model")  # dest v3
    reg.dst_client.set_registered_model_alias(MODEL, "staging", "3")

    plan = reg.sync()
    assert plan.exit_code() == 3
    [conflict] = plan.conflicts
    assert conflict.field == "alias:staging"
    assert (conflict.source_value, conflict.dest_value, conflict.synced_value) == ("2", "3", "1")
    assert reg.dest_aliases()["staging"] == "3"  # left untouched

    [open_conflict] = api.conflicts(state=reg.state)
    api.resolve_conflict(open_conflict["id"], "source", state=reg.state)
    settled = reg.sync()
    assert settled.exit_code() == 0
    assert reg.dest_aliases()["staging"] == "2"
    assert api.conflicts(state=reg.state) == []


def _state_rows(path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the state store (a dry run must change none)."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(map(tuple, conn.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables
        }


@pytest.mark.parametrize("policy", ["dest-wins", "source-wins"])
def test_alias_conflict_settled_by_policy_is_recorded(reg: Registry, policy: str) -> None:
    """A policy settles an alias moved on both sides; the settlement is recorded by a real
    sync only (planning decides, the sync records: a dry run leaves the state as it was)."""
    reg.sync()
    reg.client.set_registered_model_alias(MODEL, "staging", "2")
    reg.dst_client.create_model_version(MODEL, f"runs:/{reg.runs[0]}/model")  # dest v3
    reg.dst_client.set_registered_model_alias(MODEL, "staging", "3")

    def recorded(plan: Any) -> dict[str, Any]:
        store = StateStore(reg.state)
        try:
            return dict(store.resolutions(plan.dest, _model_plan(plan).source_id))
        finally:
            store.close()

    before = _state_rows(reg.state)
    assert any(before.values())  # the first sync's rows are there to compare
    dry = reg.sync(dry_run=True, on_conflict=policy)
    assert _state_rows(reg.state) == before  # not a row of any state table written
    assert not dry.conflicts and [c.field for c in _model_plan(dry).resolved] == ["alias:staging"]
    assert recorded(dry) == {} and api.conflicts(state=reg.state) == []
    assert reg.dest_aliases()["staging"] == "3"

    settled = reg.sync(on_conflict=policy)
    assert settled.exit_code() == 0 and not settled.conflicts
    assert reg.dest_aliases()["staging"] == ("3" if policy == "dest-wins" else "2")
    resolution = recorded(settled)["alias:staging"]
    assert (resolution.choice, resolution.resolved_by) == (policy.split("-")[0], f"policy:{policy}")


def test_dest_only_move_is_kept_and_reported(reg: Registry) -> None:
    reg.sync()
    reg.dst_client.set_registered_model_alias(MODEL, "prod", "1")
    plan = reg.sync()
    assert plan.exit_code() == 0
    assert reg.dest_aliases()["prod"] == "1"
    assert any(w.code == "alias-moved-in-dest" for w in plan.warnings)


def test_dry_run_lists_versions_bytes_and_aliases(reg: Registry) -> None:
    plan = api.diff(reg.src, reg.dst, state=reg.state)
    model = _model_plan(plan)
    assert [v.source_version for v in model.versions] == ["v1", "v2"]
    assert model.bytes_new >= sum(len(w) for w in reg.weights)
    assert {(a.alias, a.dest_to) for a in model.aliases} == {("staging", "+v1"), ("prod", "+v2")}
    assert not (reg.tmp / "dst.db").exists() or reg.dst_client.search_registered_models() == []
    assert not Path(reg.state).exists()


def test_version_of_an_out_of_scope_run_is_still_migrated(reg: Registry) -> None:
    other = reg.client.create_experiment("other", artifact_location=str(reg.tmp / "other-art"))
    run = reg.client.create_run(other, start_time=T0, run_name="elsewhere")
    folder = reg.tmp / "model-x"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * 100)
    reg.client.log_artifacts(run.info.run_id, str(folder), "model")
    reg.client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)

    from bridge.adapters.base import ReaderOptions

    plan = reg.sync(reader_options=ReaderOptions(experiments=["vision"]))
    model = _model_plan(plan)
    assert plan.exit_code() == 0, plan
    v3 = model.versions[-1]
    assert v3.dest_version == "3" and v3.note and "not in this sync's scope" in v3.note
    copy = reg.dest_versions()[-1]
    assert not copy.run_id
    # The content was copied (as a model object), not left pointing at the source store.
    assert reg.dst_uri not in (copy.source or "") and "src-art" not in (copy.source or "")


def test_verify_checks_registry_versions_and_aliases(reg: Registry) -> None:
    reg.sync()
    clean = api.verify(reg.src, reg.dst, state=reg.state)
    assert clean.exit_code() == 0, [m.model_dump() for m in clean.mismatches]
    [checked] = [r for r in clean.runs if r.project == "(registry)"]
    assert checked.status == "ok" and checked.tags_checked == 4  # 2 versions + 2 aliases

    reg.dst_client.set_registered_model_alias(MODEL, "prod", "1")
    reg.dst_client.delete_model_version(MODEL, "1")
    bad = api.verify(reg.src, reg.dst, state=reg.state)
    assert bad.exit_code() == 1
    fields = {(m.field, m.source_value, m.dest_value) for m in bad.mismatches}
    # version 1 is gone (and with it the alias moved onto it): both named
    assert ("alias:prod", "2", None) in fields
    assert any(f[0] == "version:v1" and f[2] is None for f in fields)


def test_registry_that_cannot_be_listed_keeps_the_runs_report(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.adapters.mlflow.reader import MlflowReader

    def broken(self: Any) -> Any:
        raise RuntimeError("registry endpoint down")

    monkeypatch.setattr(MlflowReader, "list_registered_models", broken)
    plan = reg.sync()
    assert plan.exit_code() == 1
    assert [r.outcome for r in plan.runs] == ["done", "done"]
    assert any("registry endpoint down" in e for e in plan.errors)


@pytest.mark.parametrize("how", ["policy", "resolve"])
def test_alias_kept_in_dest_holds_until_a_side_moves(reg: Registry, how: str) -> None:
    """A settled "take dest" on an alias (dest-wins, or `resolve --take dest`) holds: the
    next plain sync leaves the kept alias where it is (neither side moved since), verify
    does not report it as a mismatch; a later move at the source is written again."""
    reg.sync()
    reg.client.set_registered_model_alias(MODEL, "staging", "2")
    reg.dst_client.create_model_version(MODEL, f"runs:/{reg.runs[0]}/model")  # dest v3
    reg.dst_client.set_registered_model_alias(MODEL, "staging", "3")
    if how == "policy":
        assert reg.sync(on_conflict="dest-wins").exit_code() == 0
    else:
        assert reg.sync().exit_code() == 3
        [open_conflict] = api.conflicts(state=reg.state)
        api.resolve_conflict(open_conflict["id"], "dest", state=reg.state)
        assert reg.sync().exit_code() == 0
    assert reg.dest_aliases()["staging"] == "3"

    plain = reg.sync()
    assert plain.exit_code() == 0 and not plain.conflicts
    assert _model_plan(plain).action == "unchanged", _model_plan(plain).aliases
    assert reg.dest_aliases()["staging"] == "3"
    checked = api.verify(reg.src, reg.dst, state=reg.state)
    assert checked.exit_code() == 0, [m.model_dump() for m in checked.mismatches]

    reg.client.set_registered_model_alias(MODEL, "staging", "1")  # the source moves again
    moved = reg.sync()
    assert moved.exit_code() == 0 and not moved.conflicts
    assert reg.dest_aliases()["staging"] == "1"


def test_alias_kept_by_dest_wins_follows_the_source_when_the_pair_runs_source_wins(
    reg: Registry,
) -> None:
    """A policy's settlement yields to the other policy (as for runs): an alias kept by
    dest-wins moves to the source's version once the pair syncs with source-wins."""
    reg.sync()
    reg.client.set_registered_model_alias(MODEL, "staging", "2")
    reg.dst_client.create_model_version(MODEL, f"runs:/{reg.runs[0]}/model")  # dest v3
    reg.dst_client.set_registered_model_alias(MODEL, "staging", "3")
    assert reg.sync(on_conflict="dest-wins").exit_code() == 0
    assert _model_plan(reg.sync(on_conflict="dest-wins")).action == "unchanged"
    assert reg.dest_aliases()["staging"] == "3"

    switched = reg.sync(on_conflict="source-wins")
    assert switched.exit_code() == 0 and not switched.conflicts
    assert [c.field for c in _model_plan(switched).resolved] == ["alias:staging"]
    assert reg.dest_aliases()["staging"] == "2"
    assert _model_plan(reg.sync()).action == "unchanged"
    assert reg.dest_aliases()["staging"] == "2"
    assert api.verify(reg.src, reg.dst, state=reg.state).exit_code() == 0
