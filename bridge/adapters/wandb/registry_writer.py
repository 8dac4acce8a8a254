"""W&B as a registry destination: W&B Registry collections (online ``wandb:`` only).

Registry (:meth:`create_model_version` ...): a registered model is a collection of the
W&B Registry ``<org entity>/wandb-registry-<registry>/<collection>`` — or, on a server
without the Registry (``api.registry()`` raises RuntimeError) or for an entity in no
organization, the legacy portfolio ``ENTITY/model-registry/<collection>``. A version is a
link (``Artifact.link``), numbered ``vN`` by W&B in link order. W&B keeps no metadata on
a link, so the link's source identity goes into the linked artifact's metadata:
``bridge.registry_links = {"<collection path>": {"versions": [{"source_id", "index",
"tags"}, ...]}}``, written *before* the link: a crash between the two leaves an identity
that names no link (ignored), and linking the same artifact again returns the existing
link, so the retry is exact. W&B holds an artifact version in a collection once, so source
versions with byte-identical content share one link; each is listed in ``versions``.

Verified against wandb 0.31 with the loopback fake (tests/test_wandb_registry_write.py):
resuming a finished run without name/notes/tags/config keeps them on the server; linking
an artifact version already in a collection returns its existing ``vN``; alias moves are
``AddAliases``/``DeleteAliases`` sent by ``Artifact.save()`` on the linked artifact;
``api.artifact_collection`` raises ``CommError("Could not find artifact type ...")`` when
the collection (or its type) does not exist.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.adapters.base import DestModelVersion, DestRegisteredModel
from bridge.adapters.wandb.model_writer import ModelArtifacts
from bridge.adapters.wandb.registry_rules import (
    LEGACY_PROJECT,
    LINKS_KEY,
    MODEL_TYPE,
    REGISTRY_PREFIX,
    VERSION_LABEL,
    RunStore,
    alias_problem,
    artifact_name,
    collection_tags,
    link_identities,
    not_found,
    registry_project,
)
from bridge.errors import BridgeError, RunError
from bridge.schema import ModelVersion, RegisteredModel

__all__ = ["WandbRegistryWriter", "alias_problem", "artifact_name", "registry_project"]

log = logging.getLogger(__name__)


class WandbRegistryWriter(ModelArtifacts):
    """Model artifacts and registry collections for one online W&B writer."""

    def __init__(self, store: RunStore) -> None:
        super().__init__(store)
        self._target_cache: tuple[str, str] | None = None
        #: Collection name -> (description, tags) waiting for the collection to exist.
        self._pending: dict[str, tuple[str | None, list[str]]] = {}
        #: Source registered model id → what the name/tag rules had to change.
        self.name_warnings: dict[str, list[str]] = {}

    def registered_model_name(self, model: RegisteredModel) -> str:
        rules = self.store.mapping.registry
        wanted = rules.name_for(model.name, model.registry, model.entity)
        name = artifact_name(wanted)
        if name != wanted:
            self._note(model.source_id, f"collection name {wanted!r} is stored as {name!r}")
        for key in collection_tags(model.tags)[1]:
            self._note(
                model.source_id,
                f"tag {key!r}={model.tags[key]!r} not copied: a W&B collection tag is a bare "
                "name (letters, digits, '_', '-', spaces) and holds no value",
            )
        return name

    def _note(self, source_id: str, message: str) -> None:
        with self._lock:
            notes = self.name_warnings.setdefault(source_id, [])
            if message not in notes:
                notes.append(message)

    def target(self) -> tuple[str, str]:
        """(entity, project) holding collections: the Registry's org entity and
        ``wandb-registry-<registry>`` (created if missing), else the legacy
        ``ENTITY/model-registry``."""
        with self._lock:
            if self._target_cache is None:
                self._target_cache = self._resolve_target()
            return self._target_cache

    def _resolve_target(self) -> tuple[str, str]:
        api = self.api()
        name = self.store.mapping.registry.registry
        try:
            registries = {r.name: r for r in api.registries()}
        except (RuntimeError, ValueError) as exc:
            # RuntimeError: the server has no Registry; ValueError: the entity belongs to
            # no (single) organization. Either way the legacy Model Registry is what exists.
            log.info("wandb: no W&B Registry for %s (%s): legacy Model Registry", self.entity, exc)
            return self.entity, LEGACY_PROJECT
        reg = registries.get(name)
        if reg is None:
            reg = api.create_registry(name, visibility="organization")
        return str(reg.entity), f"{REGISTRY_PREFIX}{name}"

    def collection_path(self, name: str) -> str:
        entity, project = self.target()
        return f"{entity}/{project}/{name}"

    def _path_of(self, name: str) -> str:
        """A collection named by this writer (no "/": names are W&B artifact names), or a
        full ``ENTITY/PROJECT/COLLECTION`` path (a source's own, see ``version_of``)."""
        return name if "/" in name else self.collection_path(name)

    def _collection(self, name: str) -> Any | None:
        try:
            return self.api().artifact_collection(MODEL_TYPE, self.collection_path(name))
        except Exception as exc:
            if not_found(exc):
                return None
            raise

    def get_registered_model(self, name: str) -> DestRegisteredModel | None:
        """The collection with its links oldest first, each with the identity kept in the
        linked artifact's metadata; aliases without ``latest`` and ``vN`` labels.

        A link that stands for several source versions (byte-identical content: W&B holds
        an artifact version in a collection once) is listed once per source version, all
        with its one ``vN``."""
        coll = self._collection(name)
        if coll is None:
            return None
        path = self.collection_path(name)
        versions: list[tuple[int, DestModelVersion]] = []
        aliases: dict[str, str] = {}
        for linked in coll.artifacts():
            label = str(linked.version)
            m = VERSION_LABEL.match(label)
            if m is None:
                continue
            location = str(linked.source_qualified_name)
            held = link_identities(linked.metadata, path) or [{}]
            for ident in held:
                index, tags = ident.get("index"), ident.get("tags")
                versions.append(
                    (
                        int(m.group(1)),
                        DestModelVersion(
                            version=label,
                            source_id=ident.get("source_id"),
                            source_index=index if isinstance(index, int) else None,
                            location=location,
                            tags={str(k): str(v) for k, v in tags.items()}
                            if isinstance(tags, dict)
                            else {},
                        ),
                    )
                )
            for alias in linked.aliases:
                if alias != "latest" and not VERSION_LABEL.match(alias):
                    aliases[str(alias)] = label
        return DestRegisteredModel(
            name=name,
            description=coll.description or None,
            tags={str(t): "" for t in coll.tags},
            versions=[v for _, v in sorted(versions, key=lambda x: x[0])],
            aliases=aliases,
        )

    def ensure_registered_model(self, name: str, model: RegisteredModel) -> None:
        """Description and tags on the collection; a collection W&B creates only with its
        first link, so for a new one they are applied right after that link."""
        wanted = (model.description or None, collection_tags(model.tags)[0])
        coll = self._collection(name)
        if coll is None:
            with self._lock:
                self._pending[name] = wanted
            return
        self._describe(coll, *wanted)

    @staticmethod
    def _describe(coll: Any, description: str | None, tags: list[str]) -> None:
        """Set description, add tags (tags others added in W&B stay); no write if equal."""
        have = list(coll.tags)
        merged = have + [t for t in tags if t not in have]
        if (coll.description or None) == description and merged == have:
            return
        if description is not None or coll.description:
            coll.description = description or ""
        coll.tags = merged
        coll.save()

    def create_model_version(
        self, name: str, version: ModelVersion, location: str, run_dest_id: str | None
    ) -> str:
        """Link the artifact at ``location`` into the collection; its ``vN`` there."""
        entity, project = self.target()
        path = f"{entity}/{project}/{name}"
        api = self.api()
        stored = api.artifact(location)
        meta = dict(stored.metadata or {})
        held = link_identities(meta, path)
        if not any(h.get("source_id") == version.source_id for h in held):
            # The identity first: a crash before the link leaves an entry naming no link.
            ident: dict[str, Any] = {
                "source_id": version.source_id,
                "index": version.index,
                "tags": dict(version.tags),
            }
            if self.store.source_uri:
                ident["source_uri"] = self.store.source_uri
            links = meta.get(LINKS_KEY)
            links = dict(links) if isinstance(links, dict) else {}
            links[path] = {"versions": [*held, ident]}
            stored.metadata = {**meta, LINKS_KEY: links}
            stored.save()
        if project.startswith(REGISTRY_PREFIX):
            linked = stored.link(f"{project}/{name}")  # the SDK resolves the org entity
        else:
            linked = stored.link(path)
        label = str(linked.version)
        if VERSION_LABEL.match(label) is None:
            raise BridgeError(f"W&B linked {location} into {path} without a vN label ({label!r})")
        with self._lock:
            pending = self._pending.pop(name, None)
        if pending is not None:
            coll = self._collection(name)
            if coll is not None:
                self._describe(coll, *pending)
        return label

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Give the link ``version`` the alias (W&B takes it off the link that had it)."""
        problem = alias_problem(alias)
        if problem is not None:
            raise RunError(f"alias {alias!r} of {name}: {problem}")
        linked = self.api().artifact(f"{self._path_of(name)}:{version}")
        if alias not in linked.aliases:
            linked.aliases.append(alias)
            linked.save()

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias from the collection; one that is already gone is fine."""
        try:
            linked = self.api().artifact(f"{self._path_of(name)}:{alias}")
        except Exception as exc:
            if not_found(exc):
                return
            raise
        if alias in linked.aliases:
            linked.aliases.remove(alias)
            linked.save()
