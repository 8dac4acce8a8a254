"""The typed source id: one place builds and parses identities; the spelling stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.adapters.mlflow.ids import dest_run_source_id, object_source_id
from bridge.adapters.mlflow.kinds import source_kind as mlflow_source_kind
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.wandb.ids import (
    artifact_source_id,
    collection_source_id,
    project_source_id,
    run_source_id,
    wandb_path,
)
from bridge.schema import SourceId, source_kind


@pytest.mark.parametrize(
    ("text", "kind", "path"),
    [
        ("wandb:acme/demo/run1", "wandb", "acme/demo/run1"),
        ("wandb:acme/demo/artifact/ds@abc==", "wandb", "acme/demo/artifact/ds@abc=="),
        ("mlflow:sqlite:///tmp/m.db#0a1b", "mlflow", "sqlite:///tmp/m.db#0a1b"),
        ("mlflow:http://host:5000#run/1", "mlflow", "http://host:5000#run/1"),
        ("tensorboard:/abs/logdir#a/b", "tensorboard", "/abs/logdir#a/b"),
    ],
)
def test_parse_and_serialize_round_trip(text: str, kind: str, path: str) -> None:
    sid = SourceId.parse(text)
    assert (sid.kind, sid.path) == (kind, path)
    assert str(sid) == text  # byte-identical: it is the bridge.source_id tag and state key
    assert SourceId(kind, path) == sid
    assert source_kind(text) == mlflow_source_kind(text) == kind


@pytest.mark.parametrize("text", [None, "", "no-kind-here"])
def test_an_id_without_a_kind(text: str | None) -> None:
    sid = SourceId.parse(text)
    assert sid.kind == "" and source_kind(text) == ""
    assert str(sid) == (text or "")


def test_wandb_ids_spelled_as_before() -> None:
    assert run_source_id("acme", "demo", "r1") == "wandb:acme/demo/r1"
    assert project_source_id("acme", "demo") == "wandb:acme/demo"
    assert artifact_source_id("acme", "demo", "ds", "d==") == "wandb:acme/demo/artifact/ds@d=="
    assert collection_source_id("org", "wandb-registry-model", "c") == (
        "wandb:org/wandb-registry-model/c"
    )
    assert wandb_path("wandb:acme/demo/r1") == "acme/demo/r1"
    assert wandb_path("acme/demo/r1") == "acme/demo/r1"  # as removeprefix left it
    assert wandb_path("mlflow:sqlite:///x.db#r") == "mlflow:sqlite:///x.db#r"


@pytest.mark.parametrize(
    "display",
    ["mlflow:sqlite:////tmp/m.db", "mlflow:http://host:5000", "mlflow:file:///tmp/mlruns"],
)
@pytest.mark.parametrize(
    "local",
    ["0a1b2c", "experiment:7", "registered-model/clf", "registered-model/clf/3", "model/m-1"],
)
def test_mlflow_ids_spelled_as_before(display: str, local: str) -> None:
    sid = object_source_id(display, local)
    assert sid == f"{display}#{local}"  # byte-identical to the f-string it replaces
    assert SourceId.parse(sid) == SourceId("mlflow", f"{display.removeprefix('mlflow:')}#{local}")
    assert mlflow_source_kind(sid) == "mlflow"


def test_mlflow_dest_run_fallback_spelled_as_before() -> None:
    assert dest_run_source_id("0a1b") == "mlflow:0a1b"


def test_mlflow_reader_ids_through_source_id(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    reader = MlflowReader(uri)
    try:
        headers = {h.native_id: h for h in reader.list_runs()}
        display = reader.display_uri
        assert headers[child].source_id == f"{display}#{child}"
        assert headers[child].project.source_id == f"{display}#experiment:{exp}"
        assert reader.read_run(headers[child]).parent_source_id == f"{display}#{parent}"
    finally:
        reader.close()
