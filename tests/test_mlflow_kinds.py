"""The MLflow writer's rules by source kind (bridge/adapters/mlflow/kinds.py): W&B runs keep
the W&B → MLflow tags byte for byte; a run of another kind (TensorBoard) gets neutral ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.features import (
    EditableSource,
    FileLinks,
    LoggedModels,
    MappingRules,
    MetricReadBack,
    ModelRegistry,
    RegistrySource,
    RunDeletion,
    RunEdits,
)
from bridge.adapters.mlflow import kinds
from bridge.adapters.mlflow.from_wandb import is_wandb_import
from bridge.adapters.mlflow.reader import MlflowReader
from bridge.adapters.mlflow.render import experiment_tags
from bridge.adapters.mlflow.writer import MlflowWriter
from bridge.errors import RunError
from bridge.schema import Project, RegisteredModel, Run, RunHeader

#: What the writer rendered for this run before the refactor (commit e9d51ed).
WANDB_TAGS = {
    "bridge.source_id": "wandb:team/proj/abc",
    "bridge.source_uri": "src:/data",
    "bridge.status_reason": "exit code 1",
    "k": "v",
    "mlflow.note.content": "n",
    "mlflow.runName": "r",
    "mlflow.source.git.commit": "c",
    "mlflow.user": "alice",
    "wandb.exit_code": "1",
    "wandb.group": "g1",
    "wandb.host": "h",
    "wandb.job_type": "train",
    "wandb.run_id": "abc",
    "wandb.summary.note": "epoch 3",
    "wandb.tag.baseline": "true",
    "wandb.tag.big model": "true",
    "wandb.tags": '["baseline","big model"]',
}


def make_run(project_sid: str, run_sid: str) -> Run:
    # The run fields sit in the extras of the kind that made them: W&B's for a W&B run and
    # for an MLflow run (one imported from W&B), TensorBoard's own for a TensorBoard run.
    space = "tensorboard" if run_sid.startswith("tensorboard:") else "wandb"
    project = Project(source_id=project_sid, name="proj", entity="team")
    header = RunHeader(
        source_id=run_sid, native_id="abc", project=project, name="r", fingerprint="x"
    )
    return Run(
        header=header,
        name="r",
        user="alice",
        notes="n",
        tags=["baseline", "big model"],
        host="h",
        git_commit="c",
        status="FAILED",
        status_reason="exit code 1",
        config={"lr": 0.001, "opt": {"name": "adam"}, "_wandb": {"x": 1}},
        results={"acc": 0.91, "note": "epoch 3"},
        extra_tags={"k": "v"},
        extras={space: {"group": "g1", "job_type": "train", "exit_code": 1}},
    )


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[MlflowWriter]:
    w = MlflowWriter(f"sqlite:///{tmp_path / 'm.db'}")
    w.source_uri = "src:/data"
    yield w
    w.close()


def test_source_kind_is_the_scheme_of_the_id() -> None:
    assert kinds.source_kind("wandb:team/proj/abc") == "wandb"
    assert kinds.source_kind("mlflow:sqlite:////x.db#r1") == "mlflow"
    assert kinds.source_kind("tensorboard:/logs#a/b") == "tensorboard"
    assert kinds.source_kind(None) == "" and kinds.source_kind("plain") == ""
    assert is_wandb_import({"bridge.source_id": "wandb:t/p/r"})
    assert not is_wandb_import({"bridge.source_id": "tensorboard:/logs#wandb:x"})
    assert not is_wandb_import({})


def test_wandb_run_tags_unchanged(writer: MlflowWriter) -> None:
    rendered = writer.render(make_run("wandb:team/proj", "wandb:team/proj/abc"))
    assert rendered.params == {"lr": "0.001", "opt.name": "adam"}
    assert rendered.tags == WANDB_TAGS
    assert experiment_tags(Project(source_id="wandb:team/proj", name="p", entity="team"),
                           writer.mapping) == {"bridge.source_id": "wandb:team/proj",
                                               "wandb.entity": "team"}  # fmt: skip


def test_mlflow_run_keeps_the_configured_names(writer: MlflowWriter) -> None:
    sid = "mlflow:sqlite:////x.db"
    tags = writer.render(make_run(f"{sid}#experiment:1", f"{sid}#abc")).tags
    expected = {k: v for k, v in WANDB_TAGS.items() if k != "wandb.run_id"}
    assert tags == {**expected, "bridge.source_id": f"{sid}#abc"}


def test_tensorboard_run_gets_neutral_tags(writer: MlflowWriter) -> None:
    run = make_run("tensorboard:/logs", "tensorboard:/logs#abc")
    tags = writer.render(run).tags
    assert not [k for k in tags if k.startswith("wandb.")]
    assert tags["tensorboard.group"] == "g1"
    assert tags["tensorboard.summary.note"] == "epoch 3"
    assert tags["tensorboard.tag.baseline"] == "true"
    assert "tensorboard.run_id" not in tags  # the source id already names the run
    exp = experiment_tags(run.header.project, writer.mapping)
    assert exp == {"bridge.source_id": "tensorboard:/logs", "tensorboard.entity": "team"}
    # --two-way reads the hand-edited fields: the kind's own tags are not labels
    edit = writer.editable_from_tags(tags)
    assert edit.holds == {"notes", "labels"} and edit.labels == {"k": "v"}
    wandb_edit = writer.editable_from_tags(WANDB_TAGS)
    assert wandb_edit.holds == {"notes", "tags"}
    assert wandb_edit.tags == ["baseline", "big model"]


def test_registry_label_by_kind(writer: MlflowWriter) -> None:
    def model(sid: str, registry: str | None) -> RegisteredModel:
        return RegisteredModel(source_id=sid, name="clf", registry=registry)

    assert writer.registry_label(model("wandb:org/wandb-registry-model/clf", "model")) == (
        "wandb-registry-model"
    )
    assert writer.registry_label(model("wandb:t/model-registry/clf", "model-registry")) == (
        "model-registry"
    )
    assert writer.registry_label(model("other:x#registered-model/clf", "models")) == "models"
    assert writer.registry_label(model("mlflow:x#registered-model/clf", None)) == "registry"


def test_features_declared(writer: MlflowWriter, tmp_path: Path) -> None:
    for feature in (
        MetricReadBack,
        FileLinks,
        RunDeletion,
        RunEdits,
        LoggedModels,
        ModelRegistry,
        MappingRules,
    ):
        assert isinstance(writer, feature), feature
    reader = MlflowReader(f"sqlite:///{tmp_path / 'm.db'}")
    assert isinstance(reader, RegistrySource) and isinstance(reader, EditableSource)
    for write in ("set_editable", "set_model_alias", "delete_model_alias"):
        assert not hasattr(reader, write)  # readers never write
    model = RegisteredModel(source_id="mlflow:x#registered-model/clf", name="clf")
    assert writer.version_of(model, "mlflow:x#registered-model/clf/3") == ("clf", "3")
    with pytest.raises(RunError, match="not a version of"):
        writer.version_of(model, "mlflow:x#registered-model/other/3")
    header = RunHeader(
        source_id="mlflow:x#r1",
        native_id="r1",
        project=Project(source_id="mlflow:x#experiment:1", name="e"),
        fingerprint="f",
    )
    assert writer.run_id_of(header) == "r1"


def test_load_mapping_reaches_the_registry_names(writer: MlflowWriter, tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        'experiment_name = "x-{project}"\n[registry]\nmodel_name = "{registry}-{collection}"\n'
    )
    writer.load_mapping(f)
    assert writer.experiment_name(Project(source_id="wandb:t/p", name="p")) == "x-p"
    model = RegisteredModel(source_id="wandb:t/r/clf", name="clf", registry="model")
    assert writer.registered_model_name(model) == "model-clf"


def test_mapping_file_keys_apply_to_every_kind(writer: MlflowWriter, tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('experiment_name = "tb-{project}"\nsummary_tag_prefix = "s."\n')
    writer.load_mapping(f)
    tb = make_run("tensorboard:/logs", "tensorboard:/logs#abc")
    assert writer.experiment_name(tb.header.project) == "tb-proj"
    tags = writer.render(tb).tags
    assert tags["s.note"] == "epoch 3"  # set by the file
    assert tags["tensorboard.group"] == "g1"  # not set: the kind's neutral default
    wandb_tags = writer.render(make_run("wandb:team/proj", "wandb:team/proj/abc")).tags
    assert wandb_tags["s.note"] == "epoch 3" and wandb_tags["wandb.group"] == "g1"
