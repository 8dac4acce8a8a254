"""The MLflow writer's model features: logged models (logged_models.py) and the model
registry (registry_write.py), as the contract names them (features.LoggedModels,
features.ModelRegistry). Also what ``--two-way`` uses on an MLflow *source*: aliases moved
in the copy are set back through :meth:`ModelFeatures.version_of`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.adapters.base import DestRegisteredModel, OpenEntry
from bridge.adapters.features import LoggedModels, ModelRegistry
from bridge.adapters.mlflow import kinds
from bridge.adapters.mlflow.registry import alias_problem
from bridge.errors import RunError
from bridge.schema import ArtifactVersion, ManifestEntry, ModelVersion, RegisteredModel


class ModelFeatures(LoggedModels, ModelRegistry):
    """Mixin of :class:`~bridge.adapters.mlflow.writer.MlflowWriter`: forwards to its
    ``logged_models`` and ``registry`` helpers; a sqlite store not made yet holds none."""

    logged_models: Any
    registry: Any

    def _store_missing(self) -> bool:
        raise NotImplementedError

    def find_model(self, artifact_source_id: str) -> str | None:
        if self._store_missing():
            return None
        return self.logged_models.find_model(artifact_source_id)

    def put_model(
        self,
        project_dest_id: str,
        run_dest_id: str | None,
        art: ArtifactVersion,
        files: Sequence[tuple[ManifestEntry, OpenEntry]],
    ) -> str:
        return self.logged_models.put_model(project_dest_id, run_dest_id, art, files)

    # ------------------------------------------------------------------ model registry

    def registered_model_name(self, model: RegisteredModel) -> str:
        return self.registry.registered_model_name(model)

    def name_warnings(self, model: RegisteredModel) -> list[str]:
        """What the name rule's result had to be changed for (one line each)."""
        return list(self.registry.name_warnings.get(model.source_id, []))

    def registry_label(self, model: RegisteredModel) -> str:
        return kinds.registry_label(model)

    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        return None if self._store_missing() else self.registry.get_registered_model(name)

    def ensure_registered_model(self, name: str, model: RegisteredModel) -> None:
        self.registry.ensure_registered_model(name, model)

    def create_model_version(
        self, name: str, version: ModelVersion, location: str, run_dest_id: str | None
    ) -> str:
        return self.registry.create_model_version(name, version, location, run_dest_id)

    def alias_problem(self, alias: str) -> str | None:
        """Why MLflow would refuse this alias, or None."""
        return alias_problem(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.registry.set_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.registry.delete_alias(name, alias)

    def version_of(self, model: RegisteredModel, version_source_id: str) -> tuple[str, str]:
        """An MLflow source's version ``<model source id>/<number>``: (its name, number)."""
        prefix = f"{model.source_id}/"
        number = version_source_id[len(prefix) :]
        if not version_source_id.startswith(prefix) or not number.isdigit():
            raise RunError(f"{version_source_id!r} is not a version of {model.source_id}")
        return model.name, number
