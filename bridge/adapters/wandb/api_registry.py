"""W&B Registry collections and legacy Model Registry portfolios, read as registered
models: each linked version with its number, aliases and source version."""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from bridge.adapters.wandb.api_artifacts import ApiArtifacts, real_aliases, version_index
from bridge.adapters.wandb.api_base import parse_time
from bridge.adapters.wandb.ids import collection_source_id
from bridge.errors import BridgeError
from bridge.schema import (
    ModelVersion,
    RegisteredModel,
)

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "wandb-registry-"  # W&B Registry: project wandb-registry-<name> of the org
LEGACY_REGISTRY = "model-registry"  # legacy Model Registry: portfolios in ENTITY/model-registry


def _tag_map(tags: list[str] | None) -> dict[str, str]:
    """W&B collection / version tags are bare names; neutral tags are key -> value."""
    return {str(t): "" for t in tags or []}


class ApiRegistry(ApiArtifacts):
    """Registered models of ENTITY's organization and ENTITY/model-registry."""

    # ---- registries ------------------------------------------------------------------

    def _wanted(self, registry: str, name: str) -> bool:
        """In ``options.registries`` (collection names, ``REGISTRY/COLLECTION``, globs)?"""
        wanted = self.options.registries
        if not wanted:
            return True
        forms = {name, f"{registry}/{name}"}
        if registry != LEGACY_REGISTRY:
            forms.add(f"{REGISTRY_PREFIX}{registry}/{name}")
        return any(fnmatch.fnmatchcase(f, w) for f in forms for w in wanted)

    def _listed(self, what: str, make: Callable[[], Any]) -> list[Any]:
        """Every item of a fresh paginator from ``make``; a failure restarts the listing."""
        return self._retry(what, lambda: list(make()))

    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Every W&B Registry collection of ENTITY's organization, then every legacy Model
        Registry portfolio in ENTITY/model-registry (``options.registries`` narrows)."""
        yield from self._registry_models()
        yield from self._legacy_models()

    def _registries(self) -> list[Any]:
        """ENTITY's organization's registries; none when the server has no Registry or
        ENTITY belongs to no (single) organization (answers, not failures to retry)."""
        api = self._client()
        try:
            return list(api.registries())
        except (RuntimeError, ValueError) as exc:
            log.info("wandb: no W&B Registry read for %s: %s", self._t.entity, exc)
            return []

    def _portfolio_types(self, project: str) -> list[Any]:
        """Artifact types of ENTITY/model-registry; none when that project does not exist
        (the client raises ValueError for a missing project: not worth retrying)."""
        try:
            return list(self._client().artifact_types(project=project))
        except ValueError as exc:
            log.info("wandb: no legacy Model Registry in %s: %s", project, exc)
            return []

    def _registry_models(self) -> Iterator[RegisteredModel]:
        for reg in self._retry("registries", self._registries):
            colls = self._listed("registry collections", reg.collections)
            colls = [c for c in colls if self._wanted(reg.name, c.name)]
            if not colls:
                continue
            by_coll: dict[tuple[str, str, str], list[Any]] = {}
            for v in self._listed("registry versions", reg.versions):
                by_coll.setdefault((v.entity, v.project, v.name.split(":")[0]), []).append(v)
            for coll in colls:
                yield self._model(
                    coll, reg.name, by_coll.get((coll.entity, coll.project, coll.name), [])
                )

    def _legacy_models(self) -> Iterator[RegisteredModel]:
        api = self._client()
        entity = self._t.entity
        project = f"{entity}/{LEGACY_REGISTRY}"
        for t in self._retry("artifact types", functools.partial(self._portfolio_types, project)):
            for coll in self._listed("portfolios", t.collections):
                if coll.is_sequence() or not self._wanted(LEGACY_REGISTRY, coll.name):
                    continue
                listed = self._listed("portfolio versions", coll.artifacts)
                # Fetched by name: the membership carries the link's time and aliases.
                linked = [
                    self._retry(
                        "portfolio version",
                        functools.partial(api.artifact, f"{project}/{coll.name}:{a.version}"),
                    )
                    for a in listed
                ]
                yield self._model(coll, LEGACY_REGISTRY, linked)

    def _model(self, coll: Any, registry: str, linked: list[Any]) -> RegisteredModel:
        sid = collection_source_id(coll.entity, coll.project, coll.name)
        versions = [self._model_version(sid, v) for v in linked]
        return RegisteredModel(
            source_id=sid,
            name=coll.name,
            registry=registry,
            entity=coll.entity,
            description=coll.description or None,
            tags=_tag_map(coll.tags),
            versions=sorted(versions, key=lambda v: v.index),
        )

    @staticmethod
    def _source_of(linked: Any) -> Any:
        """The source version of a link (its own collection's aliases); the link itself
        when the source project is not readable (the client raises ValueError)."""
        try:
            return linked.source_artifact
        except ValueError as exc:
            log.warning("wandb: %s: source version unreadable: %s", linked.qualified_name, exc)
            return linked

    def _model_version(self, model_sid: str, linked: Any) -> ModelVersion:
        """A linked version: its number and aliases are the link's; its content, identity
        and producing run are the source version's."""
        index = version_index(linked.version)
        if index is None:
            raise BridgeError(f"wandb: {linked.qualified_name}: no vN version label")
        warnings: list[str] = []
        source = self._retry("source artifact", functools.partial(self._source_of, linked))
        art = self._artifact(source, "logged", warnings, download=False)
        for w in warnings:  # on the model's line of every report
            self.notices.add(model_sid, "registry-version", f"{linked.qualified_name}: {w}")
        linked_at = parse_time(getattr(linked, "linked_at", None))
        return ModelVersion(
            source_id=f"{model_sid}:v{index}",
            index=index,
            artifact=art,
            run_source_id=art.producer_source_id,
            description=linked.description or None,
            tags=_tag_map(list(linked.tags)),
            aliases=real_aliases(list(linked.aliases)),
            created_at_ms=linked_at if linked_at is not None else art.created_at_ms,
        )
