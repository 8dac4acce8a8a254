"""Artifacts, lineage and registries: made by the real SDK online against the fake W&B
server, read back with the real ``wandb.Api`` and through ``WandbApiReader``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fakes.wandb_server import FakeArtifact, FakeRun, FakeWandbServer
from sdk_registry import make_registry_corpus, move_alias

from bridge.adapters.base import ReaderOptions
from bridge.adapters.wandb.api_reader import WandbApiReader
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.schema import ArtifactVersion, RegisteredModel, Run

os.environ.setdefault("WANDB_SILENT", "true")

ENTITY, PROJECT = "acme", "reg"


class Corpus:
    """A fake server holding the SDK-made registry corpus."""

    def __init__(self, srv: FakeWandbServer, made: dict[str, Any], root: Path) -> None:
        self.srv, self.made, self.root = srv, made, root

    def api(self) -> Any:
        import wandb

        return wandb.Api(
            api_key=self.srv.api_key,
            overrides={"base_url": self.srv.url, "entity": ENTITY},
            timeout=20,
        )

    def reader(self, **options: Any) -> WandbApiReader:
        return WandbApiReader(
            f"{ENTITY}/{PROJECT}?base_url={self.srv.url}", ReaderOptions(**options)
        )


@contextmanager
def _corpus(root: Path) -> Iterator[Corpus]:
    with pytest.MonkeyPatch.context() as mp, FakeWandbServer() as srv:
        mp.setenv("WANDB_CACHE_DIR", str(root / "read-cache"))
        mp.setenv("WANDB_API_KEY", srv.api_key)
        mp.delenv("WANDB_BASE_URL", raising=False)
        made = make_registry_corpus(srv.url, ENTITY, PROJECT, root / "sdk", srv.api_key)
        assert srv.errors == []
        yield Corpus(srv, made, root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """Read-only tests share one corpus; tests that move aliases make their own."""
    with _corpus(tmp_path_factory.mktemp("registry")) as c:
        yield c


# --------------------------------------------------------------------------- real client


@pytest.mark.e2e
def test_registry_reads_back_with_the_real_client(corpus: Corpus, tmp_path: Path) -> None:
    api, made = corpus.api(), corpus.made
    org_entity = made["org_entity"]
    assert org_entity == "acme-org" != ENTITY  # registries live in the org's entity

    regs = {r.name: r for r in api.registries()}
    assert set(regs) == {"model", "dataset"} and regs["model"].entity == org_entity
    (coll,) = list(regs["model"].collections())
    assert (coll.name, coll.type, coll.project) == ("clf-registry", "model", "wandb-registry-model")
    assert coll.description == made["registry"]["description"]
    assert sorted(coll.tags) == sorted(made["registry"]["tags"])
    assert list(regs["dataset"].collections()) == []
    listed = api.artifact_collections(f"{org_entity}/wandb-registry-model", "model")
    assert [c.name for c in listed] == ["clf-registry"]

    path = made["registry"]["path"]
    coll = api.artifact_collection("model", path)
    assert not coll.is_sequence() and sorted(coll.aliases) == ["latest", "prod", "staging"]
    versions = {a.version: a for a in coll.artifacts()}
    assert set(versions) == {"v0", "v1"}
    for label, want in made["registry"]["versions"].items():
        linked = versions[label]
        assert linked.is_link and linked.name == f"clf-registry:{label}"
        assert sorted(linked.aliases) == want["aliases"]  # the link's own aliases
        assert linked.source_name == want["source"]
        assert linked.digest == made["digests"][want["source"]]

    # Link aliases are not the source version's aliases.
    linked = api.artifact(f"{path}:prod")
    assert (linked.version, linked.source_version, linked.source_project) == ("v1", "v1", PROJECT)
    assert sorted(linked.aliases) == ["latest", "prod"]
    source = linked.source_artifact
    assert source.qualified_name == f"{ENTITY}/{PROJECT}/clf:v1" and source.aliases == ["latest"]
    assert linked.logged_by().id == made["runs"]["c"]
    links = {a.qualified_name: sorted(a.aliases) for a in source.linked_artifacts}
    assert links == {
        f"{path}:v1": ["latest", "prod", "v1"],
        f"{made['legacy']['path']}:v1": ["champion", "latest", "v1"],
    }
    folder = Path(api.artifact(f"{path}:v0").download(root=str(tmp_path / "v0")))
    assert (folder / "model" / "weights.txt").read_text() == "weights v0\n"

    # The legacy Model Registry: a portfolio in ENTITY/model-registry.
    legacy = api.artifact(f"{made['legacy']['path']}:v1")
    assert sorted(legacy.aliases) == ["champion", "latest"] and legacy.source_name == "clf:v1"
    (ptype,) = list(api.artifact_types(project=f"{ENTITY}/model-registry"))
    (portfolio,) = list(ptype.collections())
    assert portfolio.description == made["legacy"]["description"]


@pytest.mark.e2e
def test_lineage_and_aliases_of_source_versions(corpus: Corpus) -> None:
    api, made = corpus.api(), corpus.made
    runs = made["runs"]
    data = {
        a.version: sorted(a.aliases)
        for a in api.artifacts("dataset", f"{ENTITY}/{PROJECT}/train-data")
    }
    assert data == made["dataset_aliases"]  # "best" and "latest" moved from v0 to v1
    used = [a.name for a in api.run(f"{ENTITY}/{PROJECT}/{runs['c']}").used_artifacts()]
    assert used == made["used"][runs["c"]]
    v1 = api.artifact(f"{ENTITY}/{PROJECT}/train-data:v1")
    assert [r.id for r in v1.used_by()] == [runs["c"]] and v1.logged_by().id == runs["b"]
    logged = {
        key: sorted(a.name for a in api.run(f"{ENTITY}/{PROJECT}/{rid}").logged_artifacts())
        for key, rid in runs.items()
    }
    assert logged == {
        "a": ["clf:v0", "train-data:v0"],
        "b": ["raw-refs:v0", "train-data:v1"],
        "c": ["clf:v1"],
    }
    refs = api.artifact(f"{ENTITY}/{PROJECT}/raw-refs:v0").manifest.entries
    assert refs["local.csv"].ref == "file://" + made["local_ref_file"]
    assert refs["s3/part-0000.csv"].ref == made["s3_ref"]
    assert refs["s3/part-0000.csv"].digest == made["s3_ref"]  # checksum=False: digest = URI


# --------------------------------------------------------------------------- the reader


def _models(corpus: Corpus, **options: Any) -> dict[str, RegisteredModel]:
    reader = corpus.reader(**options)
    try:
        return {m.source_id: m for m in reader.list_registered_models()}
    finally:
        reader.close()


@pytest.mark.e2e
def test_reader_lists_registry_collections_and_portfolios(corpus: Corpus) -> None:
    made, runs = corpus.made, corpus.made["runs"]
    org = made["org_entity"]
    reader = corpus.reader()
    models = {m.source_id: m for m in reader.list_registered_models()}
    reg_id = f"wandb:{org}/wandb-registry-model/clf-registry"
    legacy_id = f"wandb:{ENTITY}/model-registry/clf-portfolio"
    assert set(models) == {reg_id, legacy_id}

    reg = models[reg_id]
    assert (reg.name, reg.registry, reg.entity) == ("clf-registry", "model", org)
    assert reg.description == made["registry"]["description"]
    assert reg.tags == {t: "" for t in made["registry"]["tags"]}
    assert [v.index for v in reg.versions] == [0, 1]
    assert [v.source_id for v in reg.versions] == [f"{reg_id}:v0", f"{reg_id}:v1"]
    assert [sorted(v.aliases) for v in reg.versions] == [["staging"], ["latest", "prod"]]
    producers = [f"wandb:{ENTITY}/{PROJECT}/{runs[k]}" for k in ("a", "c")]
    assert [v.run_source_id for v in reg.versions] == producers
    for n, v in enumerate(reg.versions):
        art = v.artifact
        digest = made["digests"][f"clf:v{n}"]
        assert (art.name, art.type, art.version, art.version_index) == ("clf", "model", f"v{n}", n)
        assert art.source_id == f"wandb:{ENTITY}/{PROJECT}/artifact/clf@{digest}"
        assert art.digest == digest and art.producer_source_id == producers[n]
        assert art.aliases == (["latest"] if n == 1 else [])  # the source's, not the link's
        assert v.created_at_ms and art.created_at_ms and v.created_at_ms >= art.created_at_ms
        (entry,) = art.manifest
        assert entry.path == "model/weights.txt" and entry.local_path is None  # lazy
        with reader.open_artifact_entry(art, entry) as fh:
            assert fh.read() == f"weights v{n}\n".encode()

    legacy = models[legacy_id]
    assert (legacy.registry, legacy.entity) == ("model-registry", ENTITY)
    assert legacy.description == made["legacy"]["description"]
    assert [sorted(v.aliases) for v in legacy.versions] == [[], ["champion", "latest"]]
    # The same source versions: the engine finds one copy for both registries.
    assert [v.artifact.source_id for v in legacy.versions] == [
        v.artifact.source_id for v in reg.versions
    ]
    reader.close()

    assert set(_models(corpus, registries=["model/clf-registry"])) == {reg_id}
    assert set(_models(corpus, registries=["clf-portfolio"])) == {legacy_id}
    assert set(_models(corpus, registries=["clf-*"])) == {reg_id, legacy_id}
    assert _models(corpus, registries=["dataset/*"]) == {}


def _runs(corpus: Corpus) -> dict[str, Run]:
    reader = corpus.reader()
    try:
        return {h.native_id: reader.read_run(h) for h in reader.list_runs()}
    finally:
        reader.close()


@pytest.mark.e2e
def test_reader_run_artifacts_carry_versions_lineage_and_identity(corpus: Corpus) -> None:
    made, runs = corpus.made, corpus.made["runs"]
    reader = corpus.reader()
    bodies = {h.native_id: reader.read_run(h) for h in reader.list_runs()}
    assert set(bodies) == set(runs.values())

    def arts(rid: str, direction: str) -> dict[str, ArtifactVersion]:
        return {
            f"{a.name}:{a.version}": a for a in bodies[rid].artifacts if a.direction == direction
        }

    def sid(key: str) -> str:
        name = key.split(":")[0]
        return f"wandb:{ENTITY}/{PROJECT}/artifact/{name}@{made['digests'][key]}"

    for key, producer in made["producers"].items():
        art = arts(producer, "logged")[key]
        assert art.source_id == sid(key) and art.digest == made["digests"][key]
        assert art.producer_source_id == f"wandb:{ENTITY}/{PROJECT}/{producer}"
        assert art.version_index == int(key.rsplit(":v", 1)[1]) and art.created_at_ms
    a_data = arts(runs["a"], "logged")["train-data:v0"]
    b_data = arts(runs["b"], "logged")["train-data:v1"]
    assert (a_data.aliases, sorted(b_data.aliases)) == ([], ["best", "latest"])
    assert a_data.metadata == {"rows": 2} and a_data.description == "training rows"
    with reader.open_artifact_entry(b_data, b_data.manifest[0]) as fh:  # downloaded in read_run
        assert b_data.manifest[0].local_path and fh.read() == b"x,y\n1,0\n2,1\n3,1\n"

    (used,) = arts(runs["c"], "used").values()
    assert (used.name, used.version, used.type) == ("train-data", "v1", "dataset")
    assert used.source_id == b_data.source_id  # one identity for logged and used
    assert used.producer_source_id == f"wandb:{ENTITY}/{PROJECT}/{runs['b']}"
    entry = used.manifest[0]
    assert entry.local_path is None  # used versions are not downloaded with the run
    with reader.open_artifact_entry(used, entry) as fh:
        assert fh.read() == b"x,y\n1,0\n2,1\n3,1\n"

    refs = arts(runs["b"], "logged")["raw-refs:v0"]
    by_path = {e.path: e for e in refs.manifest}
    assert by_path["local.csv"].ref == "file://" + made["local_ref_file"]
    assert by_path["s3/part-0000.csv"].ref == made["s3_ref"]
    assert all(e.local_path is None for e in refs.manifest)
    with pytest.raises(FileNotFoundError):
        reader.open_artifact_entry(refs, by_path["s3/part-0000.csv"])
    reader.close()


# --------------------------------------------------------------------------- alias moves


def _aliases_in(srv: FakeWandbServer, entity: str, project: str, name: str) -> dict[str, list[str]]:
    coll = srv.registry.collection(entity, project, name)
    assert coll is not None
    return {f"v{m.index}": sorted(m.aliases) for m in coll.members()}


def _unique(aliases: dict[str, list[str]]) -> bool:
    flat = [a for v in aliases.values() for a in v]
    return len(flat) == len(set(flat))


@pytest.mark.e2e
def test_alias_moves_keep_aliases_unique_per_collection(tmp_path: Path) -> None:
    with _corpus(tmp_path) as corpus:
        srv, made = corpus.srv, corpus.made
        path = made["registry"]["path"]
        org = made["org_entity"]
        assert _aliases_in(srv, org, "wandb-registry-model", "clf-registry") == {
            "v0": ["staging"],
            "v1": ["latest", "prod"],
        }
        moved = move_alias(srv.url, f"{path}:v0", "prod", tmp_path / "mv1", srv.api_key)
        assert sorted(moved["aliases"]) == ["prod", "staging"]
        after = _aliases_in(srv, org, "wandb-registry-model", "clf-registry")
        assert after == {"v0": ["prod", "staging"], "v1": ["latest"]} and _unique(after)
        # The source versions and the legacy portfolio are other collections: untouched.
        assert _aliases_in(srv, ENTITY, PROJECT, "clf") == {"v0": [], "v1": ["latest"]}
        assert _aliases_in(srv, ENTITY, "model-registry", "clf-portfolio")["v1"] == [
            "champion",
            "latest",
        ]
        # A source alias moved the same way (and read through the reader).
        move_alias(srv.url, f"{ENTITY}/{PROJECT}/train-data:v0", "best", api_key=srv.api_key)
        data = _aliases_in(srv, ENTITY, PROJECT, "train-data")
        assert data == {"v0": ["best"], "v1": ["latest"]}
        assert [op for op in srv.ops_seen() if "Alias" in op] == ["AddAliases"]

        models = _models(corpus)
        reg = models[f"wandb:{org}/wandb-registry-model/clf-registry"]
        assert [sorted(v.aliases) for v in reg.versions] == [["prod", "staging"], ["latest"]]
        bodies = _runs(corpus)
        (v0,) = [a for a in bodies["reg-a"].artifacts if a.name == "train-data"]
        assert v0.aliases == ["best"]

        # Removing an alias (DeleteAliases) through the SDK.
        script = textwrap.dedent(
            """
            import sys, wandb
            art = wandb.Api().artifact(sys.argv[1])
            art.aliases.remove("staging")
            art.save()
            """
        )
        env = dict(os.environ, WANDB_BASE_URL=srv.url, WANDB_API_KEY=srv.api_key)
        subprocess.run(
            [sys.executable, "-c", script, f"{path}:v0"], env=env, check=True, timeout=120
        )
        assert _aliases_in(srv, org, "wandb-registry-model", "clf-registry")["v0"] == ["prod"]


# --------------------------------------------------------------------------- raw fake


def _post(srv: FakeWandbServer, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    auth = base64.b64encode(f"api:{srv.api_key}".encode()).decode()
    req = urllib.request.Request(
        srv.url + "/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


LINK = """mutation LinkArtifact($input: LinkArtifactInput!) {
  result: linkArtifact(input: $input) { versionIndex artifactMembership { versionIndex
    aliases { alias } artifactCollection { __typename name project { name } } } } }"""
ADD = """mutation AddAliases($input: AddAliasesInput!) {
  result: addAliases(input: $input) { success } }"""
FEATURES = """query ServerFeaturesQuery { serverInfo { features { name isEnabled } } }"""


def _fixture_server(registry: bool = True) -> FakeWandbServer:
    srv = FakeWandbServer(registry=registry).start()
    arts = [
        FakeArtifact(name="m", type="model", version_index=i, files={"w": f"w{i}".encode()})
        for i in range(3)
    ]
    srv.add_run(FakeRun(name="r1", entity=ENTITY, project=PROJECT, logged_artifacts=arts))
    for a in arts:
        srv.registry.commit_aliases(a)
    return srv


def test_fake_links_and_aliases_follow_w_and_b_rules() -> None:
    srv = _fixture_server()
    try:
        arts = srv.get_run(ENTITY, PROJECT, "r1").logged_artifacts
        assert [a.aliases for a in arts] == [[], [], ["latest"]]
        target = {"entityName": ENTITY, "projectName": PROJECT, "artifactCollectionName": "m"}
        for a in (arts[0], arts[1]):  # "best" ends on the last version it was added to
            out = _post(
                srv, ADD, {"input": {"artifactID": a.id, "aliases": [{**target, "alias": "best"}]}}
            )
            assert out["data"]["result"]["success"] is True
        assert [a.aliases for a in arts] == [[], ["best"], ["latest"]]

        def link(
            a: FakeArtifact, project: str, aliases: list[str], entity: str = "acme-org"
        ) -> Any:
            inp = {
                "artifactID": a.id,
                "artifactPortfolioName": "coll",
                "entityName": entity,
                "projectName": project,
                "aliases": [{"artifactCollectionName": "coll", "alias": x} for x in aliases],
            }
            return _post(srv, LINK, {"input": inp})

        # Registry links are numbered in link order, not by source version.
        first = link(arts[2], "wandb-registry-model", ["prod"])["data"]["result"]
        assert first["versionIndex"] == 0
        assert first["artifactMembership"]["artifactCollection"] == {
            "__typename": "ArtifactPortfolio",
            "name": "coll",
            "project": {"name": "wandb-registry-model"},
        }
        second = link(arts[0], "wandb-registry-model", ["prod"])["data"]["result"]
        assert second["versionIndex"] == 1
        assert sorted(a["alias"] for a in second["artifactMembership"]["aliases"]) == [
            "latest",
            "prod",
        ]
        again = link(arts[0], "wandb-registry-model", [])["data"]["result"]
        assert again["versionIndex"] == 1  # linking the same version twice: one link
        assert _aliases_in(srv, "acme-org", "wandb-registry-model", "coll") == {
            "v0": [],
            "v1": ["latest", "prod"],
        }
        assert arts[0].aliases == []  # link aliases never touch the source version
        # Errors W&B gives: no such registry, registry outside the org entity, wrong type.
        assert "not found" in link(arts[1], "wandb-registry-nope", [])["errors"][0]["message"]
        assert (
            "organization entity"
            in link(arts[1], "wandb-registry-model", [], ENTITY)["errors"][0]["message"]
        )
        srv.add_run(
            FakeRun(
                name="r2",
                entity=ENTITY,
                project=PROJECT,
                logged_artifacts=[FakeArtifact(name="d", type="dataset", files={"x": b"x"})],
            )
        )
        ds = srv.get_run(ENTITY, PROJECT, "r2").logged_artifacts[0]
        assert "type" in link(ds, "wandb-registry-model", [])["errors"][0]["message"]
        names = {f["name"] for f in _post(srv, FEATURES, {})["data"]["serverInfo"]["features"]}
        assert {
            "ARTIFACT_REGISTRY_SEARCH",
            "ARTIFACT_MEMBERSHIP_IN_LINK_ARTIFACT_RESPONSE",
        } <= names
    finally:
        srv.stop()


@pytest.mark.e2e
def test_server_without_registry_leaves_only_legacy_portfolios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older server (no Registry features, no organization): registries are skipped,
    the legacy Model Registry is still read."""
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    srv = _fixture_server(registry=False)
    try:
        names = {f["name"] for f in _post(srv, FEATURES, {})["data"]["serverInfo"]["features"]}
        assert "ARTIFACT_REGISTRY_SEARCH" not in names
        arts = srv.get_run(ENTITY, PROJECT, "r1").logged_artifacts
        srv.registry.link(arts[1], ENTITY, "model-registry", "legacy", ["prod"])
        monkeypatch.setenv("WANDB_API_KEY", srv.api_key)
        reader = WandbApiReader(f"{ENTITY}/{PROJECT}?base_url={srv.url}")
        (model,) = list(reader.list_registered_models())
        reader.close()
        assert (model.source_id, model.registry) == (
            f"wandb:{ENTITY}/model-registry/legacy",
            "model-registry",
        )
        (version,) = model.versions
        assert (version.index, sorted(version.aliases)) == (0, ["latest", "prod"])
        assert (
            version.artifact.version == "v1"
            and version.run_source_id == f"wandb:{ENTITY}/{PROJECT}/r1"
        )
    finally:
        srv.stop()


@pytest.mark.e2e
def test_created_registry_takes_only_its_artifact_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Api.create_registry`` (UpsertRegistry) with a type list: other types are refused."""
    import wandb

    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    srv = _fixture_server()
    try:
        api = wandb.Api(
            api_key=srv.api_key, overrides={"base_url": srv.url, "entity": ENTITY}, timeout=20
        )
        reg = api.create_registry(
            "llms", visibility="organization", artifact_types=["model"], description="LLMs"
        )
        assert (reg.full_name, reg.entity, reg.description) == (
            "wandb-registry-llms",
            "acme-org",
            "LLMs",
        )
        again = api.registry("llms")
        assert list(again.artifact_types) == ["model"] and not again.allow_all_artifact_types
        srv.add_run(
            FakeRun(
                name="r2",
                entity=ENTITY,
                project=PROJECT,
                logged_artifacts=[FakeArtifact(name="d", type="dataset", files={"x": b"x"})],
            )
        )
        with pytest.raises(Exception, match="not allowed"):
            api.artifact(f"{ENTITY}/{PROJECT}/d:v0").link("wandb-registry-llms/ds")
        linked = api.artifact(f"{ENTITY}/{PROJECT}/m:v2").link(
            "wandb-registry-llms/chat", aliases=["prod"]
        )
        assert linked.qualified_name == "acme-org/wandb-registry-llms/chat:v0"
        assert sorted(linked.aliases) == ["latest", "prod"] and linked.source_version == "v2"
        assert [r.name for r in api.registries()] == ["model", "dataset", "llms"]
    finally:
        srv.stop()


# --------------------------------------------------------------------------- offline


OFFLINE = textwrap.dedent(
    """
    import sys, wandb
    root = sys.argv[1]
    run = wandb.init(mode="offline", dir=root, entity="acme", project="reg", id="off-a",
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    art = wandb.Artifact("train-data", type="dataset", description="training rows",
                         metadata={"rows": 2})
    with open(root + "/train.csv", "w") as fh:
        fh.write("x,y\\n1,0\\n2,1\\n")
    art.add_file(root + "/train.csv", name="train.csv")
    run.log_artifact(art, aliases=["best"])
    run.finish()
    """
)


@pytest.mark.e2e
def test_offline_and_online_readers_give_a_version_one_identity(
    corpus: Corpus, tmp_path: Path
) -> None:
    """The same content logged offline reads with the identity the server's v0 has."""
    env = dict(os.environ, WANDB_SILENT="true", WANDB_MODE="offline", WANDB_DATA_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", OFFLINE, str(tmp_path)], check=True, env=env, timeout=120)
    reader = WandbOfflineReader(str(tmp_path / "wandb"))
    (header,) = list(reader.list_runs())
    (art,) = reader.read_run(header).artifacts
    digest = corpus.made["digests"]["train-data:v0"]
    assert art.digest == digest
    assert art.source_id == f"wandb:{ENTITY}/{PROJECT}/artifact/train-data@{digest}"
    assert art.producer_source_id == header.source_id == f"wandb:{ENTITY}/{PROJECT}/off-a"
    assert sorted(art.aliases) == ["best", "latest"]
    assert art.version is None  # the server's vN is not known offline
