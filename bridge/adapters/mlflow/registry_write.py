"""Registered models, versions and aliases in an MLflow store (the writer's ModelRegistry side).

Names come from the mapping's ``[registry] model_name`` rule, made MLflow-legal; every
version carries ``bridge.source_id`` and ``bridge.source_version`` (the source's N), which
is how a version created just before a crash is recognised instead of created twice.

Verified with MLflow 3.17 (see tests/test_mlflow_registry.py): ``create_model_version(
source="models:/<id>")`` on a *direct* SQL store resolves the id with the process-global
tracking URI (:func:`~bridge.adapters.mlflow.registry.global_tracking_uri` points it at
this store for that call); through a server the call needs ``model_id`` too, and the server
tags the logged model ``mlflow.modelVersions`` itself (direct SQL stores do not: we add it).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from bridge.adapters.base import DestModelVersion, DestRegisteredModel
from bridge.adapters.mlflow.access import on_model, status_of
from bridge.adapters.mlflow.once import create_once
from bridge.adapters.mlflow.registry import (
    MAX_REGISTRY_TAG_LEN,
    MODEL_VERSIONS_TAG,
    SOURCE_ID_TAG,
    SOURCE_URI_TAG,
    SOURCE_VERSION_TAG,
    alias_problem,
    cut_value,
    error_code,
    global_tracking_uri,
    model_id_of,
    runs_uri_run_id,
    sanitize_model_name,
    search_versions,
)
from bridge.errors import RunError
from bridge.mapping import sanitize_key
from bridge.schema import ModelVersion, RegisteredModel


class RegisteredModelWriter:
    """Registered models of one MLflow store (see the module doc).

    ``store`` is the :class:`MlflowWriter` (``client``, ``kind``, ``target``, ``mapping``,
    ``source_uri``, ``notices``); thread-safe like the client behind it.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        #: Source registered model id → what its destination name rule had to change.
        self.name_warnings: dict[str, list[str]] = {}

    @property
    def client(self) -> Any:
        return self.store.client

    def _warn(self, source_id: str, code: str, message: str) -> None:
        self.store.notices.add(source_id, code, message)

    def registered_model_name(self, model: RegisteredModel) -> str:
        """The mapping's ``[registry] model_name`` rule, then made MLflow-legal; a change
        is kept in ``name_warnings[model.source_id]``."""
        wanted = self.store.mapping.registry.name_for(model.name, model.registry, model.entity)
        name = sanitize_model_name(wanted)
        if name != wanted:
            message = (
                f"registered model name {wanted!r} is not allowed by MLflow; stored as {name!r}"
            )
            with self._lock:
                lines = self.name_warnings.setdefault(model.source_id, [])
                if message not in lines:
                    lines.append(message)
        return name

    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        """The model and its versions; None when absent. A basic-auth server answers 403
        both for a model the user may not read and for a name no model has (with
        ``default_permission = NO_PERMISSIONS``): taken as absent, creating it tells which
        (a refused model is then one failed line, :func:`on_model`)."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            if status_of(exc) == 403:
                return None
            raise
        versions = []
        for v in search_versions(self.client, name):
            tags = dict(v.tags or {})
            index = tags.get(SOURCE_VERSION_TAG)
            versions.append(
                DestModelVersion(
                    version=str(v.version),
                    source_id=tags.get(SOURCE_ID_TAG),
                    source_index=int(index) if index and index.lstrip("-").isdigit() else None,
                    location=v.source,
                    tags=tags,
                )
            )
        return DestRegisteredModel(
            name=rm.name,
            description=rm.description or None,
            tags=dict(rm.tags or {}),
            versions=versions,
            aliases={str(a): str(v) for a, v in (rm.aliases or {}).items()},
        )

    def _registered_tags(self, model: RegisteredModel) -> dict[str, str]:
        tags = {SOURCE_ID_TAG: model.source_id}
        if self.store.source_uri:
            tags[SOURCE_URI_TAG] = self.store.source_uri
        for key, value in model.tags.items():
            stored = sanitize_key(key)
            if not stored.startswith("bridge."):
                tags.setdefault(stored, value)
        for key, value in list(tags.items()):
            tags[key] = self._fit(value, model.source_id, f"tag {key!r}")
        return tags

    def _fit(self, value: str, source_id: str, what: str) -> str:
        """``value`` cut to MLflow's 5000 characters with the marker (reported)."""
        marker = self.store.mapping.marker(len(value), "the source")
        out, cut = cut_value(value, MAX_REGISTRY_TAG_LEN, marker)
        if cut:
            self._warn(
                source_id,
                "truncated",
                f"{what} is {len(value)} chars, over MLflow's {MAX_REGISTRY_TAG_LEN}; cut",
            )
        return out

    @on_model("EDIT (or the right to create registered models)")
    def ensure_registered_model(self, name: str, model: RegisteredModel) -> None:
        """Create with description and tags, or bring those up to date (no write if equal;
        tags set by others in MLflow are left alone)."""
        from mlflow.exceptions import MlflowException

        tags = self._registered_tags(model)
        description = (
            self._fit(model.description, model.source_id, "description")
            if model.description
            else None
        )
        try:
            create_once(
                self.store.kind,
                lambda: self.client.create_registered_model(
                    name, tags=tags, description=description
                ),
                lambda: self.get_registered_model(name),
                f"registered model {name!r}",
            )
            return
        except MlflowException as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            if self._is_prompt(name):
                raise RunError(
                    f"registered model {name!r}: the destination has a prompt of that name "
                    "(MLflow keeps prompts as registered models); rename one of them"
                ) from exc
        rm = self.client.get_registered_model(name)
        if (rm.description or None) != description:
            self.client.update_registered_model(name, description=description or "")
        have = dict(rm.tags or {})
        for key, value in tags.items():
            if have.get(key) != value:
                self.client.set_registered_model_tag(name, key, value)

    def _is_prompt(self, name: str) -> bool:
        """True when ``name`` is taken by a prompt (MLflow keeps prompts as registered models
        its model APIs hide), so a clash is named as such."""
        try:
            return self.client.get_prompt(name) is not None
        except Exception:  # a registry without prompts
            return False

    @on_model("EDIT")
    def create_model_version(
        self, name: str, version: ModelVersion, location: str, run_dest_id: str | None
    ) -> str:
        """The next version from ``location`` with its identity tags; its number as text."""
        tags = {
            SOURCE_ID_TAG: version.source_id,
            SOURCE_VERSION_TAG: str(version.index),
        }
        if self.store.source_uri:
            tags[SOURCE_URI_TAG] = self.store.source_uri
        for key, value in version.tags.items():
            stored = sanitize_key(key)
            if not stored.startswith("bridge."):
                tags.setdefault(stored, value)
        description = None
        if version.description:
            description = self._fit(version.description, version.source_id, "description")
        model_id = model_id_of(location)
        run_id = runs_uri_run_id(location) or run_dest_id
        with global_tracking_uri(self.store.target, self.store.kind):
            mv = create_once(
                self.store.kind,
                lambda: self.client.create_model_version(
                    name,
                    source=location,
                    run_id=run_id,
                    tags=tags,
                    description=description,
                    model_id=model_id,
                ),
                lambda: self._version_with_source(name, version.source_id),
                f"version {version.source_id} of {name!r}",
            )
        label = str(mv.version)
        if model_id is not None and self.store.kind != "http":
            self._note_version_on_model(model_id, name, label)
        return label

    def _version_with_source(self, name: str, source_id: str) -> Any:
        """The version of ``name`` tagged with ``source_id`` (the lowest number), or None."""
        for v in search_versions(self.client, name):
            if (v.tags or {}).get(SOURCE_ID_TAG) == source_id:
                return v
        return None

    def _note_version_on_model(self, model_id: str, name: str, label: str) -> None:
        """``mlflow.modelVersions`` on the logged model, as ``mlflow.register_model`` and
        the server write it (the UI links a logged model to its versions by it)."""
        model = self.client.get_logged_model(model_id)
        try:
            current = json.loads((model.tags or {}).get(MODEL_VERSIONS_TAG) or "[]")
        except ValueError:
            current = []
        entry = {"name": name, "version": int(label) if label.isdigit() else label}
        if entry not in current:
            current.append(entry)
            self.client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(current)})

    @on_model("EDIT")
    def set_alias(self, name: str, alias: str, version: str) -> None:
        problem = alias_problem(alias)
        if problem is not None:
            raise RunError(f"alias {alias!r} of {name}: {problem}")
        self.client.set_registered_model_alias(name, alias, version)

    @on_model("EDIT")
    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; one that is already gone is fine."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if error_code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise
