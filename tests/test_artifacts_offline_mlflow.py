"""Artifact versions from SDK-made offline runs into MLflow.

One real SDK process (offline) logs two versions of a dataset (alias ``best`` on both
records: offline logs cannot move aliases), a dataset of reference entries (a ``file://``
file with its MD5 and an ``s3://`` object without a checksum) and a model. Synced into a
real MLflow sqlite store: content and manifests land under the run's artifacts, the model
becomes an MLflow 3 logged model linked to the run, references stay references unless
``--download-references``, and content that does not match its manifest is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from bridge import api
from bridge.adapters.base import ReaderOptions
from tests.sdk_runs import sdk_env

pytestmark = pytest.mark.e2e

_SCRIPT = """
import os, sys, wandb
ref_file = sys.argv[1]
run = wandb.init(entity="acme", project="arts", id="arts")
os.makedirs("v0", exist_ok=True); os.makedirs("v1", exist_ok=True)
open("v0/train.csv", "w").write("x,y\\n1,2\\n")
open("v1/train.csv", "w").write("x,y\\n1,2\\n3,4\\n")
for folder in ("v0", "v1"):
    art = wandb.Artifact("train-data", type="dataset", metadata={"folder": folder})
    art.add_file(f"{folder}/train.csv")
    run.log_artifact(art, aliases=["best"])
refs = wandb.Artifact("refs", type="dataset")
refs.add_reference("file://" + ref_file)
refs.add_reference("s3://no-such-bucket/data/blob.bin", checksum=False)
run.log_artifact(refs)
open("weights.bin", "wb").write(bytes(range(256)) * 40)
model = wandb.Artifact("clf", type="model", description="a classifier")
model.add_file("weights.bin")
run.log_artifact(model, aliases=["candidate"])
run.log({"acc": 0.9})
run.finish()
"""


@pytest.fixture(scope="module")
def offline_arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("arts")
    ref_file = root / "outside" / "ref.txt"
    ref_file.parent.mkdir()
    ref_file.write_text("referenced content\n")
    work = root / "work"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(ref_file)],
        cwd=work,
        env=sdk_env(root),
        check=True,
        timeout=180,
        capture_output=True,
    )
    return {"root": root, "wandb": root / "wandb", "ref_file": ref_file}


def _sync(src: Path, tmp: Path, **options: Any) -> tuple[Any, MlflowClient, str]:
    db = f"sqlite:///{tmp / 'mlflow.db'}"
    plan = api.sync(
        f"wandb-offline:{src}",
        f"mlflow:{db}",
        state=str(tmp / "state.db"),
        reader_options=ReaderOptions(**options),
    )
    return plan, MlflowClient(tracking_uri=db), db


def _files(client: MlflowClient, run_id: str, path: str) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_files(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def test_versions_references_and_model(offline_arts: dict[str, Any], tmp_path: Path) -> None:
    plan, client, _ = _sync(offline_arts["wandb"], tmp_path)
    assert plan.exit_code() == 0, plan.errors
    [run] = plan.runs
    files = _files(client, run.dest_id, "artifacts")
    datasets = sorted(f for f in files if f.startswith("artifacts/train-data/"))
    # two versions, each a folder named by digest with the manifest beside the content
    assert len([f for f in datasets if f.endswith("/manifest.json")]) == 2
    assert len([f for f in datasets if f.endswith("/files/train.csv")]) == 2
    manifests = [
        json.loads(Path(client.download_artifacts(run.dest_id, f, str(tmp_path))).read_text())
        for f in datasets
        if f.endswith("manifest.json")
    ]
    assert {m["metadata"]["folder"] for m in manifests} == {"v0", "v1"}
    assert all("best" in m["aliases"] for m in manifests)

    # references: recorded, not copied
    refs = [f for f in files if f.startswith("artifacts/refs/")]
    assert [f.rsplit("/", 1)[-1] for f in refs] == ["manifest.json"]
    doc = json.loads(
        Path(client.download_artifacts(run.dest_id, refs[0], str(tmp_path))).read_text()
    )
    assert sorted(e["ref"] for e in doc["manifest"]) == [
        "file://" + str(offline_arts["ref_file"]),
        "s3://no-such-bucket/data/blob.bin",
    ]

    # the model: an MLflow 3 logged model linked to the run, content verified
    [model] = client.search_logged_models(
        experiment_ids=[client.get_run(run.dest_id).info.experiment_id]
    )
    assert model.source_run_id == run.dest_id
    assert model.status == LoggedModelStatus.READY
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model.artifact_location}/weights.bin", dst_path=str(tmp_path / "m")
        )
    )
    assert local.read_bytes() == bytes(range(256)) * 40
    model_files = [f for f in files if f.startswith("artifacts/clf/")]
    assert [f.rsplit("/", 1)[-1] for f in model_files] == ["manifest.json"]
    assert not [w for w in plan.warnings if w.code == "checksum-mismatch"]

    again, _, _ = _sync(offline_arts["wandb"], tmp_path)
    assert [r.outcome for r in again.runs] == ["unchanged"]
    assert len(client.search_logged_models(experiment_ids=[model.experiment_id])) == 1


def test_download_references_fetches_what_it_can(
    offline_arts: dict[str, Any], tmp_path: Path
) -> None:
    plan, client, _ = _sync(
        offline_arts["wandb"],
        tmp_path,
        download_references=True,
        reference_roots=[str(offline_arts["ref_file"].parent)],  # file:// read only under it
    )
    [run] = plan.runs
    files = _files(client, run.dest_id, "artifacts/refs")
    copied = [f for f in files if "/files/" in f]
    assert [f.rsplit("/", 1)[-1] for f in copied] == ["ref.txt"]
    local = client.download_artifacts(run.dest_id, copied[0], str(tmp_path))
    assert Path(local).read_text() == "referenced content\n"
    # the s3:// object cannot be fetched here: reported by name, the others still synced
    missing = [w for w in plan.warnings if w.code == "missing-file"]
    assert any("blob.bin" in w.message for w in missing)
    assert run.outcome == "done"


def test_content_not_matching_its_manifest_is_reported(
    offline_arts: dict[str, Any], tmp_path: Path
) -> None:
    staged = [
        p
        for p in (offline_arts["root"] / "data").rglob("*")
        if p.is_file() and p.read_bytes() == b"x,y\n1,2\n"
    ]
    assert staged, "the SDK staging copy of v0/train.csv"
    original = staged[0].read_bytes()
    staged[0].write_bytes(b"tampered\n")
    try:
        plan, _, _ = _sync(offline_arts["wandb"], tmp_path)
    finally:
        staged[0].write_bytes(original)
    [bad] = [w for w in plan.warnings if w.code == "checksum-mismatch"]
    assert "train.csv" in bad.message
    assert "MD5" in bad.message or "size" in bad.message
