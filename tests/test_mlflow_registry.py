"""MLflow logged models and model registry, both ways, against real MLflow 3 stores:
sqlite for most, one round trip through a real ``mlflow server`` (REST)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bridge.adapters.base import ReaderOptions
from bridge.adapters.features import LoggedModels, ModelRegistry
from bridge.adapters.mlflow import MlflowWriter
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.registry import (
    MANIFEST_PATH,
    SOURCE_ID_TAG,
    alias_problem,
    sanitize_model_name,
)
from bridge.errors import BridgeError, RunError
from bridge.mapping import load_mapping
from bridge.schema import (
    ArtifactVersion,
    ManifestEntry,
    ModelVersion,
    Project,
    RegisteredModel,
    Warning_,
)

FILES = {"model.bin": b"\x00weights" * 1000, "cfg/params.yaml": b"lr: 0.1\n"}


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def checksum_mismatches(writer: MlflowWriter) -> list[Warning_]:
    """The writer's checksum-mismatch notices (its one warning channel)."""
    return [w for w in writer.notices.drain() if w.code == "checksum-mismatch"]


def make_art(n: int = 0, files: dict[str, bytes] | None = None, **kw: Any) -> ArtifactVersion:
    files = FILES if files is None else files
    manifest = [ManifestEntry(path=p, digest=md5_b64(b), size=len(b)) for p, b in files.items()]
    manifest.append(
        ManifestEntry(path="data/big.parquet", digest="etag-1", size=10**9, ref="s3://b/k")
    )
    fields: dict[str, Any] = dict(
        name="clf",
        type="model",
        version=f"v{n}",
        version_index=n,
        digest=f"d{n}",
        description="a classifier",
        aliases=["latest", f"v{n}"],
        metadata={"epochs": 3, "opt": {"name": "adam"}, "acc@1": 0.9},
        manifest=manifest,
        source_id=f"wandb:team/proj/artifact/clf@d{n}",
        producer_source_id="wandb:team/proj/run1",
    )
    fields.update(kw)
    return ArtifactVersion(**fields)


def openers(
    art: ArtifactVersion, files: dict[str, bytes] | None = None
) -> list[tuple[ManifestEntry, Any]]:
    files = FILES if files is None else files
    return [(e, lambda b=files[e.path]: io.BytesIO(b)) for e in art.manifest if e.ref is None]


def refusing(art: ArtifactVersion) -> list[tuple[ManifestEntry, Any]]:
    def fail() -> IO[bytes]:
        raise AssertionError("content read although the model exists")

    return [(e, fail) for e in art.manifest if e.ref is None]


def version_of(art: ArtifactVersion, n: int, **kw: Any) -> ModelVersion:
    return ModelVersion(
        source_id=f"wandb:team/wandb-registry-model/clf:v{n}",
        index=n,
        artifact=art,
        run_source_id="wandb:team/proj/run1",
        **kw,
    )


def registered(**kw: Any) -> RegisteredModel:
    fields: dict[str, Any] = dict(
        source_id="wandb:team/wandb-registry-model/clf",
        name="clf",
        registry="model",
        entity="team",
        description="the classifier",
        tags={"owner": "ml", "bad key?": "x"},
    )
    fields.update(kw)
    return RegisteredModel(**fields)


@pytest.fixture
def writer(sqlite_uri: str) -> Iterator[MlflowWriter]:
    w = MlflowWriter(sqlite_uri)
    w.source_uri = "wandb:team"
    yield w
    w.close()


def project_and_run(w: MlflowWriter) -> tuple[str, str]:
    pid = w.ensure_project(Project(source_id="wandb:team/proj", name="proj", entity="team"))
    run = w.client.create_run(pid)
    return pid, str(run.info.run_id)


def model_files(client: MlflowClient, model_id: str, tmp: Path) -> dict[str, bytes]:
    """Every file of a logged model, downloaded with MLflow's own client."""
    logged = client.get_logged_model(model_id)
    from mlflow.artifacts import download_artifacts

    root = Path(
        download_artifacts(
            artifact_uri=logged.artifact_location,
            dst_path=str(tmp),
            tracking_uri=client._tracking_client.tracking_uri,
        )
    )
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- model objects


def test_capabilities(writer: MlflowWriter) -> None:
    assert isinstance(writer, ModelRegistry) and isinstance(writer, LoggedModels)
    assert writer.capabilities.max_alias_len == 255


def test_put_model_once_ready_linked_with_files_and_manifest(
    writer: MlflowWriter, tmp_path: Path
) -> None:
    pid, rid = project_and_run(writer)
    art = make_art()
    assert writer.find_model(art.source_id or "") is None
    loc = writer.put_model(pid, rid, art, openers(art))
    assert loc.startswith("models:/m-")
    model_id = loc.split("/", 1)[1]

    again = writer.put_model(pid, rid, art, refusing(art))  # idempotent: reads nothing
    assert again == loc
    fresh = MlflowWriter(writer.target)  # no memory of this writer: found by identity tag
    assert fresh.find_model(art.source_id or "") == loc

    client = writer.client
    found = client.search_logged_models([pid], filter_string=f"tags.`{SOURCE_ID_TAG}` != ''")
    assert [m.model_id for m in found] == [model_id]
    model = client.get_logged_model(model_id)
    assert model.status == LoggedModelStatus.READY
    assert model.name == "clf"
    assert model.source_run_id == rid
    assert model.tags[SOURCE_ID_TAG] == art.source_id
    assert model.tags["bridge.artifact.version"] == "v0"
    assert model.tags["bridge.artifact.digest"] == "d0"
    assert model.tags["bridge.artifact.type"] == "model"
    assert model.tags["mlflow.note.content"] == "a classifier"
    assert model.params == {"epochs": "3", "opt.name": "adam", "acc:401": "0.9"}
    outputs = client.get_run(rid).outputs.model_outputs
    assert [(o.model_id, o.step) for o in outputs] == [(model_id, 0)]

    stored = model_files(client, model_id, tmp_path / "dl")
    assert {p: b for p, b in stored.items() if p != MANIFEST_PATH} == FILES
    manifest = json.loads(stored[MANIFEST_PATH])
    assert manifest["source_id"] == art.source_id and manifest["location"] == loc
    by_path = {e["path"]: e for e in manifest["manifest"]}
    assert by_path["data/big.parquet"]["ref"] == "s3://b/k"  # reference kept, not copied
    assert "stored" not in by_path["data/big.parquet"]
    assert by_path["model.bin"]["stored"] == {
        "size": len(FILES["model.bin"]),
        "md5": md5_b64(FILES["model.bin"]),
        "sha256": hashlib.sha256(FILES["model.bin"]).hexdigest(),
    }
    assert checksum_mismatches(writer) == []


def test_put_model_reports_checksum_and_size_mismatches(writer: MlflowWriter) -> None:
    pid, rid = project_and_run(writer)
    art = make_art()
    art.manifest[0].digest = md5_b64(b"something else")
    art.manifest[1].size = 999
    writer.put_model(pid, rid, art, openers(art))
    lines = [(w.code, w.source_id, w.message) for w in checksum_mismatches(writer)]
    assert len(lines) == 2
    assert all(code == "checksum-mismatch" and sid == art.source_id for code, sid, _ in lines)
    assert "'model.bin'" in lines[0][2] and "MD5" in lines[0][2]
    assert "'cfg/params.yaml'" in lines[1][2] and "size 8 bytes, manifest says 999" in lines[1][2]


def test_unfinished_model_is_finished_not_duplicated(writer: MlflowWriter, tmp_path: Path) -> None:
    pid, rid = project_and_run(writer)
    art = make_art()
    # A crash after create, before finalize: a PENDING model with the identity tag.
    pending = writer.client.create_logged_model(
        pid, name="clf", tags={SOURCE_ID_TAG: art.source_id}
    )
    assert writer.find_model(art.source_id or "") is None  # unfinished does not count
    loc = writer.put_model(pid, rid, art, openers(art))
    assert loc == f"models:/{pending.model_id}"
    assert writer.client.get_logged_model(pending.model_id).status == LoggedModelStatus.READY
    stored = model_files(writer.client, pending.model_id, tmp_path / "dl")
    assert set(stored) == {*FILES, MANIFEST_PATH}
    # linking twice is refused by MLflow's unique constraint: put_model links once
    writer.put_model(pid, rid, art, refusing(art))
    assert len(writer.client.get_run(rid).outputs.model_outputs) == 1


def test_source_id_with_quote_is_found(writer: MlflowWriter) -> None:
    pid, rid = project_and_run(writer)
    art = make_art(source_id="mlflow:sqlite:////tmp/it's.db#model/m-1")
    loc = writer.put_model(pid, None, art, openers(art))
    assert writer.find_model("mlflow:sqlite:////tmp/it's.db#model/m-1") == loc
    assert writer.find_model("mlflow:sqlite:////tmp/it's.db#model/m-2") is None


def test_entry_path_escaping_the_model_is_refused(writer: MlflowWriter) -> None:
    pid, rid = project_and_run(writer)
    art = make_art(files={"../evil": b"x"})
    with pytest.raises(RunError, match="refusing artifact entry path"):
        writer.put_model(pid, rid, art, openers(art, {"../evil": b"x"}))


# ---------------------------------------------------------------------------- registry writer


def test_registered_model_name_rule_and_sanitizing(tmp_path: Path, sqlite_uri: str) -> None:
    w = MlflowWriter(sqlite_uri)
    assert w.registered_model_name(registered()) == "clf"
    assert w.name_warnings(registered()) == []
    f = tmp_path / "m.toml"
    f.write_text('[registry]\nmodel_name = "{entity}/{registry}:{collection}"\n')
    w2 = MlflowWriter(sqlite_uri, mapping=load_mapping(f))
    model = registered()
    assert w2.registered_model_name(model) == "team-model-clf"
    assert w2.registered_model_name(model) == "team-model-clf"  # reported once
    assert w2.name_warnings(model) == [
        "registered model name 'team/model:clf' is not allowed by MLflow; "
        "stored as 'team-model-clf'"
    ]
    assert sanitize_model_name("..x") == "model-..x"
    assert sanitize_model_name("  ") == "model"
    assert len(sanitize_model_name("n" * 300)) == 256
    bad = tmp_path / "bad.toml"
    bad.write_text('[registry]\nmodel_name = "{project}"\n')
    with pytest.raises(BridgeError, match="registry.model_name"):
        load_mapping(bad)


def test_alias_problem_agrees_with_mlflow(writer: MlflowWriter) -> None:
    client = writer.client
    client.create_registered_model("m")
    client.create_model_version("m", "file:///tmp/x")
    candidates = [
        "prod", "staging-2", "champion_v1", "ünï", "1", "v", "Prod",
        "latest", "LATEST", "v3", "V12", "a b", "a.b", "a/b", "", "x" * 255, "x" * 256,
        "prod\n",
    ]  # fmt: skip
    for alias in candidates:
        try:
            client.set_registered_model_alias("m", alias, "1")
            accepted = True
        except MlflowException:
            accepted = False
        problem = alias_problem(alias)
        if alias == "prod\n":
            # MLflow's regex ends in "$", which lets a trailing newline through; we refuse it.
            assert problem is not None
            continue
        assert (problem is None) == accepted, (alias, problem)
        assert writer.alias_problem(alias) == problem


def test_registry_versions_in_order_aliases_and_round_trip(
    writer: MlflowWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow's global default store (./mlflow.db) would land here
    pid, rid = project_and_run(writer)
    model = registered()
    name = writer.registered_model_name(model)
    assert writer.get_registered_model(name) is None
    writer.ensure_registered_model(name, model)
    before = writer.client.get_registered_model(name)
    writer.ensure_registered_model(name, model)  # equal: no write
    assert writer.client.get_registered_model(name).last_updated_timestamp == (
        before.last_updated_timestamp
    )
    labels, locations = [], []
    for n in range(3):
        art = make_art(n)
        loc = writer.put_model(pid, rid, art, openers(art))
        version = version_of(art, n, description=f"version {n}", tags={"stage note": "ok"})
        labels.append(writer.create_model_version(name, version, loc, rid))
        locations.append(loc)
    assert labels == ["1", "2", "3"]
    assert list(cwd.iterdir()) == []
    import mlflow

    assert not mlflow.tracking._tracking_service.utils.is_tracking_uri_set()

    writer.set_alias(name, "prod", "1")
    writer.set_alias(name, "staging", "2")
    writer.set_alias(name, "prod", "3")  # moved
    writer.delete_alias(name, "staging")
    writer.delete_alias(name, "staging")  # already gone: fine
    with pytest.raises(RunError, match="reserved"):
        writer.set_alias(name, "latest", "1")

    dest = MlflowWriter(writer.target).get_registered_model(name)
    assert dest is not None
    assert dest.name == name and dest.description == "the classifier"
    assert dest.tags[SOURCE_ID_TAG] == model.source_id
    assert dest.tags["owner"] == "ml" and dest.tags["bad key:3F"] == "x"
    assert dest.aliases == {"prod": "3"}
    assert [v.version for v in dest.versions] == ["1", "2", "3"]
    assert [v.source_id for v in dest.versions] == [
        f"wandb:team/wandb-registry-model/clf:v{n}" for n in range(3)
    ]
    assert [v.source_index for v in dest.versions] == [0, 1, 2]
    assert [v.location for v in dest.versions] == locations
    assert dest.versions[0].tags["stage note"] == "ok"
    mv = writer.client.get_model_version(name, "2")
    assert (mv.run_id, mv.description) == (rid, "version 1")
    # the logged model knows its registered version, as mlflow.register_model records it
    model_id = locations[1].split("/", 1)[1]
    assert json.loads(writer.client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == [
        {"name": name, "version": 2}
    ]

    changed = registered(description="new text", tags={"owner": "ops"})
    writer.ensure_registered_model(name, changed)
    rm = writer.client.get_registered_model(name)
    assert rm.description == "new text" and rm.tags["owner"] == "ops"


def test_version_created_before_a_crash_is_found_by_identity(writer: MlflowWriter) -> None:
    pid, rid = project_and_run(writer)
    model = registered()
    writer.ensure_registered_model("clf", model)
    art = make_art(5)
    loc = writer.put_model(pid, rid, art, openers(art))
    writer.create_model_version("clf", version_of(art, 5), loc, rid)
    # the state write never happened: a new writer sees the version by its tags
    dest = MlflowWriter(writer.target).get_registered_model("clf")
    assert dest is not None
    [v] = dest.versions
    assert (v.version, v.source_id, v.source_index, v.location) == (
        "1",
        "wandb:team/wandb-registry-model/clf:v5",
        5,
        loc,
    )


def test_version_from_run_files_takes_the_runs_uri_run(writer: MlflowWriter) -> None:
    pid, rid = project_and_run(writer)
    (Path(writer.target[len("sqlite:///") :]).parent / "f.txt").write_text("x")
    location = writer.file_location(rid, "artifacts/ds/v0/files")
    assert location == f"runs:/{rid}/artifacts/ds/v0/files"
    writer.ensure_registered_model("ds", registered(name="ds"))
    art = make_art(0, type="dataset")
    label = writer.create_model_version("ds", version_of(art, 0), location, None)
    mv = writer.client.get_model_version("ds", label)
    assert (mv.source, mv.run_id) == (location, rid)


# ---------------------------------------------------------------------------- reader


def build_source(uri: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Registered models made with MLflow's own client, as a user would."""
    # Registering "models:/<id>" on a direct SQL store needs the global tracking URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    c = MlflowClient(tracking_uri=uri)
    eid = c.create_experiment("exp", artifact_location=(tmp / "art").as_uri())
    run = c.create_run(eid)
    rid = run.info.run_id
    src = tmp / "src"
    (src / "model" / "sub").mkdir(parents=True)
    (src / "model" / "MLmodel").write_text("flavors: {}\n")
    (src / "model" / "sub" / "w.bin").write_bytes(b"\x01\x02" * 50)
    c.log_artifacts(rid, str(src / "model"), "model")
    lm = c.create_logged_model(eid, name="net", source_run_id=rid, params={"depth": "4"})
    c.log_model_artifact(lm.model_id, str(src / "model" / "MLmodel"))
    c.log_model_artifact(lm.model_id, str(src / "model" / "sub" / "w.bin"), "data")
    c.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    c.create_registered_model("clf", tags={"team": "vision", "bridge.source_id": "x"},
                              description="classifier")  # fmt: skip
    v1 = c.create_model_version("clf", f"models:/{lm.model_id}", rid, model_id=lm.model_id,
                                tags={"note": "first"}, description="from logged model")  # fmt: skip
    v2 = c.create_model_version("clf", f"runs:/{rid}/model", rid)
    v3 = c.create_model_version("clf", f"models:/{lm.model_id}", rid, model_id=lm.model_id)
    c.set_registered_model_alias("clf", "prod", "1")
    c.set_registered_model_alias("clf", "champion", "3")
    c.set_registered_model_alias("clf", "champion2", "3")
    c.create_registered_model("other")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return {"rid": rid, "model_id": lm.model_id, "versions": [v1, v2, v3], "src": src}


def test_reader_lists_registered_models_exactly(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = build_source(sqlite_uri, tmp_path, monkeypatch)
    reader = MlflowReader(sqlite_uri)
    models = list(reader.list_registered_models())
    assert [m.name for m in models] == ["clf", "other"]
    clf = models[0]
    d = reader.display_uri
    rid, mid = made["rid"], made["model_id"]
    v1, v2, v3 = made["versions"]
    lm_files = [ManifestEntry(path="MLmodel", size=12), ManifestEntry(path="data/w.bin", size=100)]
    run_files = [
        ManifestEntry(path="MLmodel", size=12),
        ManifestEntry(path="sub/w.bin", size=100),
    ]

    def digest(entries: list[ManifestEntry]) -> str:
        listing = json.dumps(sorted((e.path, e.size) for e in entries), separators=(",", ":"))
        return hashlib.sha256(listing.encode()).hexdigest()

    def art(n: int, v: Any, source_id: str, entries: list[ManifestEntry], meta: dict,
            aliases: list[str], root: str) -> ArtifactVersion:  # fmt: skip
        return ArtifactVersion(
            name="clf",
            type="model",
            version=f"v{n}",
            version_index=n,
            digest=digest(entries),
            description=v.description or None,
            aliases=aliases,
            metadata=meta,
            manifest=entries,
            direction="logged",
            source_id=source_id,
            producer_source_id=f"{d}#{rid}",
            created_at_ms=v.creation_timestamp,
            locator={"root": root},
        )

    lm_root = MlflowClient(tracking_uri=sqlite_uri).get_logged_model(mid).artifact_location
    run_root = MlflowClient(tracking_uri=sqlite_uri).get_run(rid).info.artifact_uri + "/model"
    lm_meta = {"source": f"models:/{mid}", "model_id": mid, "params": {"depth": "4"}}
    lm_meta["mlflow_logged_model"] = {  # the faithful record an MLflow writer copies
        "model_id": mid,
        "name": "net",
        "params": {"depth": "4"},
        "tags": {},
        "status": "READY",
        "model_type": None,
        "source_run": f"{d}#{rid}",
        "metrics": [],
    }
    expected = RegisteredModel(
        source_id=f"{d}#registered-model/clf",
        name="clf",
        description="classifier",
        tags={"team": "vision"},
        registry=None,
        first_index=1,
        versions=[
            ModelVersion(
                source_id=f"{d}#registered-model/clf/1",
                index=1,
                artifact=art(1, v1, f"{d}#model/{mid}", lm_files, lm_meta, ["prod"], lm_root),
                run_source_id=f"{d}#{rid}",
                description="from logged model",
                tags={"note": "first"},
                aliases=["prod"],
                created_at_ms=v1.creation_timestamp,
            ),
            ModelVersion(
                source_id=f"{d}#registered-model/clf/2",
                index=2,
                artifact=art(
                    2,
                    v2,
                    f"{d}#version-source/runs:/{rid}/model",
                    run_files,
                    {"source": f"runs:/{rid}/model"},
                    [],
                    run_root,
                ),
                run_source_id=f"{d}#{rid}",
                created_at_ms=v2.creation_timestamp,
            ),
            ModelVersion(
                source_id=f"{d}#registered-model/clf/3",
                index=3,
                artifact=art(
                    3, v3, f"{d}#model/{mid}", lm_files, lm_meta, ["champion", "champion2"], lm_root
                ),
                run_source_id=f"{d}#{rid}",
                aliases=["champion", "champion2"],
                created_at_ms=v3.creation_timestamp,
            ),
        ],
    )
    assert clf == expected
    assert models[1] == RegisteredModel(
        source_id=f"{d}#registered-model/other", name="other", first_index=1
    )

    src = made["src"] / "model"
    for version, files in ((clf.versions[0], {"MLmodel": "MLmodel", "data/w.bin": "sub/w.bin"}),
                           (clf.versions[1], {"MLmodel": "MLmodel", "sub/w.bin": "sub/w.bin"})):  # fmt: skip
        for entry in version.artifact.manifest:
            with reader.open_artifact_entry(version.artifact, entry) as fh:
                assert fh.read() == (src / files[entry.path]).read_bytes()
    with pytest.raises(FileNotFoundError):
        reader.open_artifact_entry(clf.versions[0].artifact, ManifestEntry(path="nope"))

    only = MlflowReader(sqlite_uri, ReaderOptions(registries=["cl*"]))
    assert [m.name for m in only.list_registered_models()] == ["clf"]
    none = MlflowReader(sqlite_uri, ReaderOptions(registry=False))
    assert list(none.list_registered_models()) == []
    assert reader.notices.drain() == []  # no version whose content could not be listed


def test_writer_to_reader_round_trip_hides_bridge_manifest(
    writer: MlflowWriter, tmp_path: Path
) -> None:
    pid, rid = project_and_run(writer)
    writer.ensure_registered_model("clf", registered())
    art = make_art(0)
    loc = writer.put_model(pid, rid, art, openers(art))
    writer.create_model_version("clf", version_of(art, 0), loc, rid)
    writer.set_alias("clf", "prod", "1")

    reader = MlflowReader(writer.target)
    [model] = list(reader.list_registered_models())
    assert model.tags == {"owner": "ml", "bad key:3F": "x"}  # bridge.* identity tags hidden
    [version] = model.versions
    assert version.aliases == ["prod"] and version.run_source_id == f"{reader.display_uri}#{rid}"
    assert version.tags == {}
    got = {e.path: e.size for e in version.artifact.manifest}
    assert got == {p: len(b) for p, b in FILES.items()}  # no bridge/manifest.json
    for entry in version.artifact.manifest:
        with reader.open_artifact_entry(version.artifact, entry) as fh:
            assert fh.read() == FILES[entry.path]


# ---------------------------------------------------------------------------- e2e (REST)


@pytest.mark.e2e
def test_registry_through_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    w = MlflowWriter(mlflow_server)
    w.source_uri = "wandb:team"
    pid, rid = project_and_run(w)
    model = registered()
    w.ensure_registered_model("clf", model)
    w.ensure_registered_model("clf", model)
    locations = []
    for n in range(2):
        art = make_art(n)
        loc = w.put_model(pid, rid, art, openers(art))
        assert w.put_model(pid, rid, art, refusing(art)) == loc
        assert w.find_model(art.source_id or "") == loc
        locations.append(loc)
        assert w.create_model_version("clf", version_of(art, n), loc, rid) == str(n + 1)
    w.set_alias("clf", "prod", "1")
    w.set_alias("clf", "prod", "2")
    w.set_alias("clf", "staging", "1")
    w.delete_alias("clf", "staging")
    w.delete_alias("clf", "staging")
    dest = MlflowWriter(mlflow_server).get_registered_model("clf")
    assert dest is not None
    assert [(v.version, v.source_index, v.location) for v in dest.versions] == [
        ("1", 0, locations[0]),
        ("2", 1, locations[1]),
    ]
    assert dest.aliases == {"prod": "2"}
    model_id = locations[0].split("/", 1)[1]
    stored = model_files(w.client, model_id, tmp_path / "dl")
    assert {p: b for p, b in stored.items() if p != MANIFEST_PATH} == FILES
    # the server itself records the version on the logged model (we add nothing there)
    tag = w.client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    assert json.loads(tag) == [{"name": "clf", "version": 1}]
    assert not os.path.exists(tmp_path / "mlflow.db")

    # the same models read back over REST (mlflow-artifacts: content, temp downloads)
    reader = MlflowReader(mlflow_server)
    [back] = list(reader.list_registered_models())
    assert [v.aliases for v in back.versions] == [[], ["prod"]]
    entries = back.versions[1].artifact.manifest
    assert {e.path: e.size for e in entries} == {p: len(b) for p, b in FILES.items()}
    for entry in entries:
        with reader.open_artifact_entry(back.versions[1].artifact, entry) as fh:
            assert fh.read() == FILES[entry.path]
