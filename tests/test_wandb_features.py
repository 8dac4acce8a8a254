"""The W&B adapters declare their optional features by type, and only those they have:
an offline folder is never edited, deleted from or linked into a registry, and no reader
writes (edits at a W&B source go through a writer opened on it)."""

from __future__ import annotations

from pathlib import Path

from bridge.adapters.features import (
    EditableSource,
    LoggedModels,
    MappingRules,
    MetricReadBack,
    ModelRegistry,
    RegistrySource,
    RunDeletion,
    RunEdits,
)
from bridge.adapters.wandb.api_reader import WandbApiReader
from bridge.adapters.wandb.offline_reader import WandbOfflineReader
from bridge.adapters.wandb.writer import WandbOfflineWriter, WandbWriter
from bridge.schema import Project, RegisteredModel, RunHeader

ONLINE = (RunDeletion, RunEdits, LoggedModels, ModelRegistry, MappingRules)


def test_online_writer_declares_edits_deletion_models_registry() -> None:
    w = WandbWriter("acme/proj?base_url=http://127.0.0.1:9")
    assert all(isinstance(w, f) for f in ONLINE)
    # a server's history may lag the SDK's uploads: no exact read-back online
    assert not isinstance(w, MetricReadBack)


def test_offline_writer_declares_read_back_only(tmp_path: Path) -> None:
    w = WandbOfflineWriter(str(tmp_path))
    assert isinstance(w, MetricReadBack) and isinstance(w, MappingRules)
    assert not any(isinstance(w, f) for f in (RunDeletion, RunEdits, LoggedModels, ModelRegistry))
    assert not hasattr(w, "set_tags") and not hasattr(w, "delete_run")


def test_readers_never_write(tmp_path: Path) -> None:
    api = WandbApiReader("acme/proj?base_url=http://127.0.0.1:9")
    assert isinstance(api, RegistrySource) and isinstance(api, EditableSource)
    offline = WandbOfflineReader(str(tmp_path))
    assert not isinstance(offline, EditableSource)
    for reader in (api, offline):
        for name in ("set_editable", "set_model_alias", "delete_model_alias"):
            assert not hasattr(reader, name), (type(reader).__name__, name)


def test_source_objects_named_in_writer_terms() -> None:
    w = WandbWriter("acme/proj?base_url=http://127.0.0.1:9")
    header = RunHeader(
        source_id="wandb:acme/proj/r1",
        native_id="r1",
        project=Project(source_id="wandb:acme/proj", name="proj", entity="acme"),
        fingerprint="f",
        locator={"path": "acme/proj/r1"},
    )
    assert w.run_id_of(header) == "acme/proj/r1"
    model = RegisteredModel(
        source_id="wandb:acme-org/wandb-registry-model/clf", name="clf", registry="model"
    )
    # aliases moved back go to the source's own collection, whatever the mapping says
    assert w.version_of(model, "wandb:acme-org/wandb-registry-model/clf:v3") == (
        "acme-org/wandb-registry-model/clf",
        "v3",
    )
    assert w.registry_label(model) == "wandb-registry-model"
    legacy = model.model_copy(update={"registry": "model-registry"})
    assert w.registry_label(legacy) == "model-registry"
    assert w.registry_label(model.model_copy(update={"registry": None})) == "registry"
    assert w.name_warnings(model) == []


def test_destination_edits_from_rendered_tags() -> None:
    w = WandbWriter("acme/proj?base_url=http://127.0.0.1:9")
    tags = {"wandb.name": "n", "wandb.notes": "hi", "wandb.tag.gold": "true", "wandb.group": "g"}
    got = w.editable_from_tags(tags)
    assert got.holds == {"notes", "tags"} and got.notes == "hi" and got.tags == ["gold"]
    assert w.is_editable_tag("wandb.notes") and w.is_editable_tag("wandb.tag.x")
    assert not w.is_editable_tag("wandb.name") and not w.is_editable_tag("wandb.group")
