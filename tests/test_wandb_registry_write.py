"""MLflow registry → W&B Registry, online through the real SDK against the loopback fake,
read back with the real ``wandb.Api``.

The source is a real MLflow sqlite store: two runs logging model folders (versions 1 and 2
from ``runs:/`` sources) and a logged model with no run (version 3 from ``models:/``),
aliases staging → 1 and prod → 2, a description and tags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeWandbServer
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.wandb.mapping import WandbMapping
from bridge.adapters.wandb.registry_writer import alias_problem, artifact_name

pytestmark = pytest.mark.e2e

ENTITY, PROJECT = "acme", "mirror"
MODEL = "clf"
T0 = 1_700_000_000_000
ORG_PATH = f"acme-org/wandb-registry-model/{MODEL}"
LEGACY_PATH = f"{ENTITY}/model-registry/{MODEL}"


class Source:
    """The MLflow store, the fake W&B server and how to sync one into the other."""

    def __init__(self, tmp: Path, srv: FakeWandbServer, mp: pytest.MonkeyPatch) -> None:
        self.tmp, self.srv = tmp, srv
        self.uri = f"sqlite:///{tmp / 'src.db'}"
        self.state = str(tmp / "state.db")
        # MLflow resolves "models:/<id>" sources with the global tracking URI.
        mp.setenv("MLFLOW_TRACKING_URI", self.uri)
        # ... unless another test left a process-global URI set (it outranks the variable)
        mp.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
        c = self.client = MlflowClient(tracking_uri=self.uri)
        exp = c.create_experiment("vision", artifact_location=(tmp / "src-art").as_uri())
        self.runs: list[str] = []
        #: version number -> {path inside the version: bytes}
        self.content: dict[int, dict[str, bytes]] = {}
        for i in range(2):
            run = c.create_run(exp, start_time=T0 + i, run_name=f"train-{i}")
            folder = tmp / f"model-{i}"
            (folder / "data").mkdir(parents=True)
            files = {
                "MLmodel": f"flavors: {{}}\nrun: {i}\n".encode(),
                "data/weights.bin": hashlib.sha256(str(i).encode()).digest() * 3000,
            }
            for path, data in files.items():
                (folder / path).write_bytes(data)
            c.log_artifacts(run.info.run_id, str(folder), "model")
            c.set_terminated(run.info.run_id, "FINISHED" if i == 0 else "FAILED", T0 + 60_000)
            self.runs.append(run.info.run_id)
            self.content[i + 1] = files
        lm = c.create_logged_model(exp, name="net", params={"depth": "4"})
        net = tmp / "net"
        net.mkdir()
        (net / "MLmodel").write_text("flavors: {}\nnet: true\n")
        c.log_model_artifact(lm.model_id, str(net / "MLmodel"))
        c.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
        self.content[3] = {"MLmodel": b"flavors: {}\nnet: true\n"}
        c.create_registered_model(
            MODEL, tags={"team": "cv", "baseline": ""}, description="classifier"
        )
        c.create_model_version(
            MODEL, f"runs:/{self.runs[0]}/model", self.runs[0], tags={"stage": "a"}
        )
        c.create_model_version(MODEL, f"runs:/{self.runs[1]}/model", self.runs[1])
        c.create_model_version(MODEL, f"models:/{lm.model_id}", model_id=lm.model_id)
        c.set_registered_model_alias(MODEL, "staging", "1")
        c.set_registered_model_alias(MODEL, "prod", "2")

    @property
    def dest(self) -> str:
        return f"wandb:{ENTITY}/{PROJECT}?base_url={self.srv.url}"

    def sync(self, state: str | None = None, **kw: Any) -> Any:
        return api.sync(f"mlflow:{self.uri}", self.dest, state=state or self.state, **kw)

    def api(self) -> Any:
        import wandb

        return wandb.Api(
            api_key=self.srv.api_key,
            overrides={"base_url": self.srv.url, "entity": ENTITY},
            timeout=20,
        )

    def run_id(self, mlflow_run: str) -> str:
        return WandbMapping().run_id_for(f"mlflow:{self.uri}#{mlflow_run}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield monkeypatch


@pytest.fixture
def source(tmp_path: Path, env: pytest.MonkeyPatch) -> Iterator[Source]:
    with FakeWandbServer() as srv:
        env.setenv("WANDB_API_KEY", srv.api_key)
        yield Source(tmp_path, srv, env)


def _model(plan: Any) -> Any:
    [model] = plan.models
    return model


def _links(api_: Any, path: str) -> dict[str, Any]:
    """vN -> linked artifact, from the real client."""
    coll = api_.artifact_collection("model", path)
    return {a.version: a for a in coll.artifacts()}


def _content(art: Any, root: Path) -> dict[str, bytes]:
    folder = Path(art.download(root=str(root)))
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_registry_written_read_back_and_idempotent(source: Source, tmp_path: Path) -> None:
    plan = source.sync()
    assert plan.exit_code() == 0, (plan, source.srv.errors)
    model = _model(plan)
    assert (model.dest_name, model.action, model.outcome) == (MODEL, "create", "done")
    assert [(v.source_version, v.dest_version) for v in model.versions] == [
        ("v1", "v0"),
        ("v2", "v1"),
        ("v3", "v2"),
    ]
    assert {(a.alias, a.dest_to) for a in model.aliases} == {("staging", "v0"), ("prod", "v1")}
    warned = " ".join(w.message for w in model.warnings)
    assert "'team'" in warned and "not copied" in warned  # a key=value tag W&B cannot hold

    wapi = source.api()
    coll = wapi.artifact_collection("model", ORG_PATH)
    assert not coll.is_sequence() and coll.description == "classifier"
    assert coll.tags == ["baseline"]
    links = _links(wapi, ORG_PATH)
    assert sorted(links) == ["v0", "v1", "v2"]
    assert sorted(links["v0"].aliases) == ["staging"]
    assert sorted(links["v1"].aliases) == ["prod"]
    assert sorted(links["v2"].aliases) == ["latest"]
    for n, label in ((1, "v0"), (2, "v1"), (3, "v2")):
        got = _content(wapi.artifact(f"{ORG_PATH}:{label}"), tmp_path / "dl" / label)
        assert got == source.content[n], label
    # Each version's content was logged by the W&B copy of its run (resumed for it, its
    # state kept); the run-less version by the project's uploader run.
    for n, label in ((0, "v0"), (1, "v1")):
        assert links[label].logged_by().id == source.run_id(source.runs[n])
        assert links[label].source_project == PROJECT
    assert wapi.run(f"{ENTITY}/{PROJECT}/{source.run_id(source.runs[0])}").state == "finished"
    assert wapi.run(f"{ENTITY}/{PROJECT}/{source.run_id(source.runs[1])}").state == "failed"
    uploader = links["v2"].logged_by()
    assert uploader.job_type == "bridge-model-upload" and uploader.project == PROJECT
    meta = links["v0"].metadata
    assert meta["bridge.source_id"].endswith(f"#version-source/runs:/{source.runs[0]}/model")
    [link_id] = meta["bridge.registry_links"][ORG_PATH]["versions"]
    assert link_id["source_id"].endswith(f"#registered-model/{MODEL}/1")
    assert link_id["index"] == 1 and link_id["tags"] == {"stage": "a"}

    # A re-sync writes nothing; a lost state store is rebuilt from the identities.
    counts = dict(source.srv.counts)
    again = source.sync()
    assert again.exit_code() == 0 and _model(again).action == "unchanged"
    rebuilt = source.sync(state=str(tmp_path / "fresh-state.db"))
    assert rebuilt.exit_code() == 0, rebuilt
    assert _model(rebuilt).action == "unchanged" and {r.action for r in rebuilt.runs} == {
        "unchanged"
    }
    for op in ("LinkArtifact", "CreateArtifact", "AddAliases", "UpsertBucket"):
        assert source.srv.counts[op] == counts.get(op, 0), op
    assert sorted(_links(wapi, ORG_PATH)) == ["v0", "v1", "v2"]
    report = api.verify(f"mlflow:{source.uri}", source.dest, state=source.state)
    assert report.exit_code() == 0, report

    # prod moved at the source: only that alias moves.
    source.client.set_registered_model_alias(MODEL, "prod", "1")
    moved = source.sync()
    assert moved.exit_code() == 0, moved
    model = _model(moved)
    assert model.versions == []
    assert [(a.alias, a.action, a.dest_from, a.dest_to) for a in model.aliases] == [
        ("prod", "set", "v1", "v0")
    ]
    links = _links(wapi, ORG_PATH)
    assert sorted(links["v0"].aliases) == ["prod", "staging"]
    assert links["v1"].aliases == []
    assert source.srv.counts["LinkArtifact"] == counts["LinkArtifact"]

    # An alias removed at the source is removed in W&B.
    source.client.delete_registered_model_alias(MODEL, "staging")
    dropped = source.sync()
    assert [(a.alias, a.action) for a in _model(dropped).aliases] == [("staging", "delete")]
    assert sorted(_links(wapi, ORG_PATH)["v0"].aliases) == ["prod"]


def test_new_source_version_is_the_only_write(source: Source) -> None:
    assert source.sync().exit_code() == 0
    counts = dict(source.srv.counts)
    source.client.create_model_version(MODEL, f"runs:/{source.runs[1]}/model/data", source.runs[1])
    plan = source.sync()
    assert plan.exit_code() == 0, plan
    model = _model(plan)
    assert [(v.source_version, v.dest_version) for v in model.versions] == [("v4", "v3")]
    assert source.srv.counts["LinkArtifact"] == counts["LinkArtifact"] + 1
    assert source.srv.counts["CommitArtifact"] == counts["CommitArtifact"] + 1
    links = _links(source.api(), ORG_PATH)
    assert sorted(links) == ["v0", "v1", "v2", "v3"] and links["v3"].aliases == ["latest"]


def test_identical_content_maps_to_one_wandb_version(source: Source, tmp_path: Path) -> None:
    """W&B holds an artifact version in a collection once: a source version with the same
    content as an earlier one (the same ``runs:/`` source; another logged model with
    byte-identical files) maps to that link, and is still recognised without state."""
    assert source.sync().exit_code() == 0
    c = source.client
    c.create_model_version(MODEL, f"runs:/{source.runs[0]}/model", source.runs[0])
    exp = c.get_experiment_by_name("vision").experiment_id
    twin = c.create_logged_model(exp, name="net-twin")
    c.log_model_artifact(twin.model_id, str(source.tmp / "net" / "MLmodel"))
    c.finalize_logged_model(twin.model_id, LoggedModelStatus.READY)
    c.create_model_version(MODEL, f"models:/{twin.model_id}", model_id=twin.model_id)
    c.set_registered_model_alias(MODEL, "twin", "5")
    plan = source.sync()
    assert plan.exit_code() == 0, plan
    model = _model(plan)
    assert [(v.source_version, v.dest_version) for v in model.versions] == [
        ("v4", "v0"),
        ("v5", "v2"),
    ]
    links = _links(source.api(), ORG_PATH)
    assert sorted(links) == ["v0", "v1", "v2"] and sorted(links["v2"].aliases) == [
        "latest",
        "twin",
    ]
    held = links["v2"].metadata["bridge.registry_links"][ORG_PATH]["versions"]
    assert [h["index"] for h in held] == [3, 5]
    assert links["v2"].metadata["bridge.other_source_ids"] == [
        f"mlflow:{source.uri}#model/{twin.model_id}"
    ]
    fresh = str(tmp_path / "fresh.db")
    rebuilt = source.sync(state=fresh)
    assert rebuilt.exit_code() == 0 and _model(rebuilt).action == "unchanged", rebuilt
    assert api.verify(f"mlflow:{source.uri}", source.dest, state=fresh).exit_code() == 0


def test_server_without_registry_uses_the_legacy_portfolio(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    with FakeWandbServer(registry=False) as srv:
        env.setenv("WANDB_API_KEY", srv.api_key)
        source = Source(tmp_path, srv, env)
        plan = source.sync()
        assert plan.exit_code() == 0, (plan, srv.errors)
        assert [v.dest_version for v in _model(plan).versions] == ["v0", "v1", "v2"]
        wapi = source.api()
        links = _links(wapi, LEGACY_PATH)
        assert sorted(links) == ["v0", "v1", "v2"]
        assert sorted(links["v0"].aliases) == ["staging"]
        assert sorted(links["v1"].aliases) == ["prod"]
        assert wapi.artifact_collection("model", LEGACY_PATH).description == "classifier"
        assert _content(links["v1"], tmp_path / "dl") == source.content[2]
        assert _model(source.sync()).action == "unchanged"


def test_mapping_names_registry_and_collection(source: Source, tmp_path: Path) -> None:
    """``[registry]`` of the mapping: a registry the organization lacks is created, and
    the collection is named by the template (made W&B-legal, reported)."""
    from bridge.adapters.mlflow.reader import MlflowReader
    from bridge.adapters.wandb.mapping import WandbRegistryRules
    from bridge.adapters.wandb.writer import WandbWriter
    from bridge.engine.sync import run_sync
    from bridge.state import StateStore

    mapping = WandbMapping(
        registry=WandbRegistryRules(registry="vision", collection_name="team/{name}")
    )
    writer = WandbWriter(f"{ENTITY}/{PROJECT}?base_url={source.srv.url}", mapping=mapping)
    try:
        plan = run_sync(MlflowReader(source.uri), writer, StateStore(source.state))
    finally:
        writer.close()
    model = _model(plan)
    assert (model.dest_name, model.outcome) == ("team-clf", "done"), model
    assert any("'team/clf' is stored as 'team-clf'" in w.message for w in model.warnings)
    wapi = source.api()
    assert "vision" in {r.name for r in wapi.registries()}
    links = _links(wapi, "acme-org/wandb-registry-vision/team-clf")
    assert sorted(links) == ["v0", "v1", "v2"] and sorted(links["v1"].aliases) == ["prod"]


def test_offline_writer_reports_no_registry(source: Source, tmp_path: Path) -> None:
    plan = api.sync(f"mlflow:{source.uri}", f"wandb-offline:{tmp_path / 'off'}", state=source.state)
    [model] = plan.models
    assert model.outcome == "skipped" and [w.code for w in model.warnings] == ["no-registry"]


def test_names_and_aliases_follow_wandb_rules() -> None:
    assert artifact_name("team/clf: v2") == "team-clf--v2"
    long = artifact_name("m" * 300)
    assert len(long) == 128 and long != artifact_name("m" * 301)
    assert alias_problem("prod") is None
    for bad in ("latest", "v3", "a/b", "a:b", ""):
        assert alias_problem(bad) is not None, bad
