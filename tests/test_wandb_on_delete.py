"""``--on-delete tag|delete`` into a W&B server: a real MLflow sqlite source, the real SDK and
``wandb.Api`` against the loopback fake; ``wandb-offline:`` folders keep refusing both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakes.wandb_server import FakeWandbServer
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.wandb import sdk as sdk_module
from bridge.adapters.wandb.mapping import WandbMapping
from bridge.adapters.wandb.writer import WandbWriter, wandb_label
from bridge.cli import main
from bridge.errors import BridgeError, RunError

ENTITY, PROJECT = "acme", "mirror"
T0 = 1_700_000_000_000
DELETED_TAG = "bridge-source-deleted"


class Pair:
    """An MLflow store with two runs ("keep", "gone") synced into a fake W&B server."""

    def __init__(self, tmp: Path, srv: FakeWandbServer) -> None:
        self.srv = srv
        self.uri = f"sqlite:///{tmp / 'src.db'}"
        self.state = str(tmp / "state.db")
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.create_experiment("vision", artifact_location=(tmp / "art").as_uri())
        self.ids: dict[str, str] = {}
        for i, name in enumerate(("keep", "gone")):
            run = self.client.create_run(
                exp, start_time=T0 + i, run_name=name, tags={"baseline": "true"}
            )
            rid = run.info.run_id
            self.client.log_param(rid, "lr", "0.01")
            for step in range(3):
                self.client.log_metric(rid, "loss", 1.0 / (step + 1), T0 + step, step)
            self.client.set_terminated(rid, "FINISHED", T0 + 60_000)
            self.ids[name] = rid

    @property
    def dest(self) -> str:
        return f"wandb:{ENTITY}/{PROJECT}?base_url={self.srv.url}"

    def sync(self, **kw: Any) -> Any:
        return api.sync(f"mlflow:{self.uri}", self.dest, state=self.state, workers=2, **kw)

    def path(self, name: str) -> str:
        """ENTITY/PROJECT/RUN_ID of a source run's W&B copy."""
        sid = f"mlflow:{self.uri}#{self.ids[name]}"
        return f"{ENTITY}/{PROJECT}/{WandbMapping().run_id_for(sid)}"

    def api(self) -> Any:
        """A new ``wandb.Api`` each time: ``Api.run`` caches run objects per path."""
        import wandb

        return wandb.Api(api_key=self.srv.api_key, overrides={"base_url": self.srv.url})

    def deletion_lines(self, plan: Any) -> list[Any]:
        return [r for r in plan.runs if r.action == "source-deleted"]


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    with FakeWandbServer() as srv:
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        p = Pair(tmp_path, srv)
        first = p.sync()
        assert [(r.action, r.outcome) for r in first.runs] == [("create", "done")] * 2, srv.errors
        yield p


def test_wandb_labels_follow_wandb_tag_rules() -> None:
    assert wandb_label("bridge.source_deleted", "true") == DELETED_TAG
    assert wandb_label("wandb.tag.baseline", "") == "baseline"
    with pytest.raises(RunError, match="no values"):
        wandb_label("team", "vision")
    with pytest.raises(RunError, match="no valid W&B run tag"):
        wandb_label("...", "true")


@pytest.mark.e2e
def test_on_delete_tag_labels_the_copy_and_keeps_the_rest(pair: Pair) -> None:
    a = pair.api()
    gone = a.run(pair.path("gone"))
    gone.tags = [*gone.tags, "reviewed"]  # a W&B user's own tag on the copy
    gone.update()
    before = pair.api().run(pair.path("gone"))
    config, summary = dict(before.config), before.summary_metrics
    assert config["_bridge.source_id"].endswith(pair.ids["gone"])

    pair.client.delete_run(pair.ids["gone"])
    plan = pair.sync(on_delete="tag")
    assert plan.exit_code() == 0
    [line] = pair.deletion_lines(plan)
    assert (line.outcome, line.dest_id) == ("done", pair.path("gone")), line
    assert "tagged bridge.source_deleted=true" in (line.reason or "")

    after = pair.api().run(pair.path("gone"))
    assert after.tags == ["baseline", "reviewed", DELETED_TAG]
    assert dict(after.config) == config and after.summary_metrics == summary
    assert [len(list(after.scan_history()))] == [3]
    assert DELETED_TAG not in pair.api().run(pair.path("keep")).tags
    # What a W&B user filters on: the tag.
    tagged = pair.api().runs(f"{ENTITY}/{PROJECT}", filters={"tags": {"$in": [DELETED_TAG]}})
    assert [r.id for r in tagged] == [pair.path("gone").rsplit("/", 1)[1]]

    again = pair.sync(on_delete="tag")  # handled once: the next pass is quiet
    assert [r.action for r in again.runs] == ["unchanged"]
    assert pair.api().run(pair.path("gone")).tags.count(DELETED_TAG) == 1


@pytest.mark.e2e
def test_on_delete_delete_removes_the_copy_from_listings(pair: Pair) -> None:
    pair.client.delete_run(pair.ids["gone"])
    plan = pair.sync(on_delete="delete")
    assert plan.exit_code() == 0
    [line] = pair.deletion_lines(plan)
    assert (line.outcome, line.reason) == (
        "done",
        "the source run no longer exists; destination run deleted",
    )
    assert "DeleteRun" in pair.srv.ops_seen()

    listed = {r.id for r in pair.api().runs(f"{ENTITY}/{PROJECT}")}
    assert listed == {pair.path("keep").rsplit("/", 1)[1]}
    with pytest.raises(Exception, match="Could not find run"):
        pair.api().run(pair.path("gone"))
    writer = WandbWriter(pair.dest.removeprefix("wandb:"))
    assert writer.get_run(pair.path("gone")) is None
    writer.delete_run(pair.path("gone"))  # already gone: nothing to do, no error
    assert writer.get_run(pair.path("keep")) is not None

    again = pair.sync(on_delete="delete")
    assert [r.action for r in again.runs] == ["unchanged"]
    assert pair.srv.counts["DeleteRun"] == 1


@pytest.mark.e2e
def test_restored_source_run_cannot_reuse_a_deleted_wandb_id(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B keeps a deleted run's id taken (HTTP 409, which wandb-core retries until the
    init timeout, 90 s by default): a source run restored after its copy was deleted fails
    to copy under its deterministic id, and says why."""
    # Settings, not WANDB_INIT_TIMEOUT: the env is read once per process (wandb.setup).
    sdk_settings = sdk_module.sdk_settings
    monkeypatch.setattr(sdk_module, "sdk_settings", lambda **kw: sdk_settings(init_timeout=8, **kw))
    pair.client.delete_run(pair.ids["gone"])
    assert pair.sync(on_delete="delete").exit_code() == 0
    pair.client.restore_run(pair.ids["gone"])
    plan = pair.sync(on_delete="delete")
    [line] = [r for r in plan.runs if r.source_id.endswith(pair.ids["gone"])]
    assert line.outcome == "failed", line
    assert "previously created and deleted" in (line.error or ""), line.error
    assert "HTTP 409" in (line.error or ""), line.error


@pytest.mark.parametrize("on_delete", ["tag", "delete"])
def test_offline_destination_still_refuses(tmp_path: Path, on_delete: str) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    MlflowClient(tracking_uri=src).create_experiment("e", artifact_location=str(tmp_path / "a"))
    out = tmp_path / "out"
    need = {"tag": "set_tags", "delete": "delete_run"}[on_delete]
    with pytest.raises(BridgeError, match=rf"\({need}\); wandb-offline: cannot"):
        api.sync(
            f"mlflow:{src}",
            f"wandb-offline:{out}",
            state=str(tmp_path / "s.db"),
            on_delete=on_delete,
        )
    res = CliRunner().invoke(
        main,
        [
            "sync",
            f"mlflow:{src}",
            f"wandb-offline:{out}",
            "--state",
            str(tmp_path / "s.db"),
            "--on-delete",
            on_delete,
        ],
    )
    assert res.exit_code == 2 and f"--on-delete {on_delete}" in res.output, res.output
    assert not out.exists()  # refused before any work
