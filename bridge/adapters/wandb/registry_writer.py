"""W&B as a model destination: model artifacts and the W&B Registry (online ``wandb:`` only).

Model objects (:meth:`WandbRegistryWriter.put_model`): a source model version becomes a
W&B artifact of type ``model`` (named after the source artifact, made W&B-legal), its
files streamed one at a time into a temp folder (bounded memory), logged by the W&B copy
of the version's run. W&B can only attribute an artifact to a run through a live run, so
that run is *resumed* (``wandb.init(id=..., resume="must")``) for the upload and finished
again with the exit code its ``_bridge.status`` maps to — what W&B documents for adding
an artifact to a finished run. A version whose run is not in scope is logged by one
deterministic run per project (job type ``bridge-model-upload``); ``Artifact.save()``
outside a run would make a new "auto" run on every call instead. The artifact's metadata
carries ``bridge.source_id``: that is how :meth:`find_model` finds the copy without state.
Identical content is one W&B version (W&B deduplicates by manifest digest), so a retried
upload never makes a second version.

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

import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bridge.adapters.base import DestModelVersion, DestRegisteredModel, OpenEntry
from bridge.adapters.wandb import sdk
from bridge.adapters.wandb.mapping import WandbMapping
from bridge.adapters.wandb.sdk import LiveRun
from bridge.errors import BridgeError, RunError
from bridge.paths import check_relpath
from bridge.schema import ArtifactVersion, ManifestEntry, ModelVersion, RegisteredModel

log = logging.getLogger(__name__)

MODEL_TYPE = "model"
SOURCE_ID_KEY = "bridge.source_id"
OTHER_SOURCE_IDS_KEY = "bridge.other_source_ids"  # same content, other source identities
SOURCE_URI_KEY = "bridge.source_uri"
LINKS_KEY = "bridge.registry_links"
REGISTRY_PREFIX = "wandb-registry-"
LEGACY_PROJECT = "model-registry"
UPLOADER_JOB_TYPE = "bridge-model-upload"
#: W&B keeps at most 100 top-level metadata keys; beyond that the source's are nested.
MAX_METADATA_KEYS = 100
MAX_NAME_LEN = 128
COPY_CHUNK = 1024 * 1024
#: W&B state -> exit code, for runs without ``_bridge.status``.
STATE_EXIT = {"finished": 0, "running": 0, "killed": 255}

_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-.]")
_VERSION_LABEL = re.compile(r"^v(\d+)$")
_TAG = re.compile(r"^[-\w]+( +[-\w]+)*$")  # wandb.sdk.artifacts._validators.TAG_REGEX


# --------------------------------------------------------------------------- rules


def registry_project(registry: str | None) -> str:
    """The W&B project a registry's collections sit in (``wandb-registry-<name>``, the
    legacy ``model-registry``); "registry" for a model from no named registry."""
    if not registry:
        return "registry"
    return registry if registry == LEGACY_PROJECT else f"{REGISTRY_PREFIX}{registry}"


def artifact_name(name: str) -> str:
    """A W&B artifact / collection name: letters, digits, ``-``, ``_``, ``.`` (others →
    ``-``), at most 128 characters (longer: cut, ending in a hash of the whole)."""
    out = _NAME_BAD.sub("-", name).strip("-") or "model"
    if len(out) > MAX_NAME_LEN:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        out = out[: MAX_NAME_LEN - 17] + "-" + digest
    return out


def alias_problem(alias: str) -> str | None:
    """Why W&B would refuse or overrule ``alias`` in a collection, or None if it is fine."""
    if not alias:
        return "W&B aliases cannot be empty"
    if "/" in alias or ":" in alias:
        return "W&B aliases cannot contain '/' or ':' (they separate artifact paths)"
    if alias == "latest":
        return "'latest' is managed by W&B (it always follows the newest version)"
    if _VERSION_LABEL.match(alias):
        return "W&B reserves 'v<number>' for version labels"
    return None


def collection_tags(tags: dict[str, str]) -> tuple[list[str], list[str]]:
    """(W&B collection tags, source tags that cannot be one): a W&B tag is a bare name, so
    only tags with an empty or "true" value and a W&B-legal name become one."""
    kept: list[str] = []
    dropped: list[str] = []
    for key, value in sorted(tags.items()):
        if value.strip().lower() in ("", "true") and _TAG.fullmatch(key):
            kept.append(key)
        else:
            dropped.append(key)
    return kept, dropped


def _not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        p in text for p in ("could not find", "not found", "does not exist", "failed to load")
    )


def _safe_path(path: str) -> str:
    """A manifest entry path, checked by the shared guard (PathRefused if it escapes)."""
    return check_relpath(path, "artifact entry path")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def _ids_of(metadata: Any) -> list[str]:
    """Source identities a stored model artifact stands for (its own, then others)."""
    if not isinstance(metadata, dict):
        return []
    out = [metadata[SOURCE_ID_KEY]] if isinstance(metadata.get(SOURCE_ID_KEY), str) else []
    others = metadata.get(OTHER_SOURCE_IDS_KEY)
    if isinstance(others, list):
        out += [o for o in others if isinstance(o, str)]
    return out


def _link_identities(metadata: Any, path: str) -> list[dict[str, Any]]:
    """The source versions a link into collection ``path`` stands for (metadata
    ``bridge.registry_links[path].versions``), oldest first."""
    links = metadata.get(LINKS_KEY) if isinstance(metadata, dict) else None
    entry = links.get(path) if isinstance(links, dict) else None
    held = entry.get("versions") if isinstance(entry, dict) else None
    return [h for h in held if isinstance(h, dict)] if isinstance(held, list) else []


# --------------------------------------------------------------------------- writer


class RunStore(Protocol):
    """What the registry half needs of the online W&B writer it belongs to."""

    mapping: WandbMapping
    source_uri: str | None
    _entity: str | None
    _fixed_project: str | None
    _lock: threading.Lock
    _init_lock: threading.Lock
    _live: dict[str, LiveRun]

    @property
    def base_url(self) -> str: ...

    def _api_key(self) -> str: ...

    def _scratch_dir(self) -> dict[str, str]: ...

    def _split(self, dest_id: str) -> tuple[str, str]: ...


class WandbRegistryWriter:
    """Model artifacts and registry collections for one online W&B writer."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._api_obj: Any = None
        self._index: dict[str, str] | None = None  # model source id -> artifact path
        self._target_cache: tuple[str, str] | None = None
        #: Collection name -> (description, tags) waiting for the collection to exist.
        self._pending: dict[str, tuple[str | None, list[str]]] = {}
        #: Source registered model id → what the name/tag rules had to change.
        self.name_warnings: dict[str, list[str]] = {}

    @property
    def entity(self) -> str:
        entity = self.store._entity
        assert entity is not None
        return entity

    def api(self) -> Any:
        """A ``wandb.Api`` whose default entity is the writer's (registry look-ups resolve
        that entity's organization)."""
        with self._lock:
            if self._api_obj is None:
                import wandb

                self._api_obj = wandb.Api(
                    api_key=self.store._api_key(),
                    overrides={"base_url": self.store.base_url, "entity": self.entity},
                    timeout=60,
                )
            return self._api_obj

    # ---------------------------------------------------------------- model objects

    def _scope(self) -> list[str]:
        """Projects ("ENTITY/PROJECT") this writer may have put models into."""
        fixed = self.store._fixed_project
        if fixed:
            return [f"{self.entity}/{fixed}"]
        api = self.api()
        return [f"{self.entity}/{p.name}" for p in api.projects(self.entity, per_page=100)]

    def _model_versions(self, project_path: str) -> list[Any]:
        """Every version of every ``model`` collection of a project (none if no such type)."""
        api = self.api()
        try:
            types = {t.name for t in api.artifact_types(project=project_path)}
        except ValueError as exc:  # the client's answer for a project that does not exist
            log.debug("wandb: %s: no artifact types (%s)", project_path, exc)
            return []
        if MODEL_TYPE not in types:  # (the collections query cannot be parsed then)
            return []
        colls = list(api.artifact_collections(project_path, MODEL_TYPE))
        found: list[Any] = []
        for coll in colls:
            if coll.is_sequence():
                found.extend(coll.artifacts())
        return found

    def _known(self) -> dict[str, str]:
        """Model source id → stored artifact path, listed once per writer, then kept up to
        date by :meth:`put_model`."""
        with self._lock:
            if self._index is None:
                index: dict[str, str] = {}
                for project_path in self._scope():
                    for art in self._model_versions(project_path):
                        for sid in _ids_of(art.metadata):
                            index.setdefault(sid, str(art.source_qualified_name))
                self._index = index
            return self._index

    def find_model(self, artifact_source_id: str) -> str | None:
        """``ENTITY/PROJECT/NAME:vN`` of the model artifact stored for this source artifact."""
        return self._known().get(artifact_source_id)

    def put_model(
        self,
        project_dest_id: str,
        run_dest_id: str | None,
        art: ArtifactVersion,
        files: Sequence[tuple[ManifestEntry, OpenEntry]],
    ) -> str:
        """Log ``art`` as a ``model`` artifact by its run's copy; return its path."""
        if not art.source_id:
            raise RunError(f"model artifact {art.name!r} has no source identity: not written")
        known = self.find_model(art.source_id)
        if known is not None:
            return known
        import wandb

        folder = Path(tempfile.mkdtemp(prefix="bridge-wandb-model-"))
        try:
            artifact = wandb.Artifact(
                artifact_name(art.name),
                type=MODEL_TYPE,
                description=art.description,
                metadata=self._metadata(art),
            )
            written: set[str] = set()
            for n, (entry, opener) in enumerate(files):
                path = _safe_path(entry.path)
                local = folder / str(n)
                with opener() as stream, open(local, "wb") as out:
                    shutil.copyfileobj(stream, out, COPY_CHUNK)
                artifact.add_file(str(local), name=path, policy="immutable", skip_cache=True)
                written.add(entry.path)
            for entry in art.manifest:
                if entry.ref and entry.path not in written:
                    artifact.add_reference(entry.ref, name=_safe_path(entry.path), checksum=False)
            logged = self._log(project_dest_id, run_dest_id, artifact)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        location = str(logged.source_qualified_name)
        if art.source_id not in _ids_of(logged.metadata):
            # W&B returned an earlier version with the same content: record this identity
            # on it too, so it is found again without state.
            self._add_other_id(location, art.source_id)
        with self._lock:
            self._known()[art.source_id] = location
        return location

    def _metadata(self, art: ArtifactVersion) -> dict[str, Any]:
        assert art.source_id is not None
        ours: dict[str, Any] = {
            SOURCE_ID_KEY: art.source_id,
            "bridge.source_name": art.name,
            "bridge.source_version": art.version or "",
        }
        if self.store.source_uri:
            ours[SOURCE_URI_KEY] = self.store.source_uri
        if art.producer_source_id:
            ours["bridge.producer"] = art.producer_source_id
        if art.aliases:
            ours["bridge.source_aliases"] = list(art.aliases)
        source = _jsonable(art.metadata) if art.metadata else {}
        if not isinstance(source, dict):
            source = {"value": source}
        source = {k: v for k, v in source.items() if not str(k).startswith("bridge.")}
        if len(source) + len(ours) + 2 > MAX_METADATA_KEYS:
            return {**ours, "source_metadata": source}
        return {**source, **ours}

    def _add_other_id(self, location: str, source_id: str) -> None:
        stored = self.api().artifact(location)
        meta = dict(stored.metadata or {})
        others = [o for o in (meta.get(OTHER_SOURCE_IDS_KEY) or []) if o != source_id]
        stored.metadata = {**meta, OTHER_SOURCE_IDS_KEY: [*others, source_id]}
        stored.save()

    def _log(self, project_dest_id: str, run_dest_id: str | None, artifact: Any) -> Any:
        """Log ``artifact`` by the run ``run_dest_id`` (open in this writer, or resumed for
        the upload) or by the project's uploader run; wait until it is committed."""
        if run_dest_id is not None:
            with self.store._lock:
                live = self.store._live.get(run_dest_id)
            if live is not None:
                with live.lock:
                    logged = live.run.log_artifact(artifact)
                return logged.wait()
        sdk_run, exit_code = self._open_run(project_dest_id, run_dest_id)
        try:
            logged = sdk_run.log_artifact(artifact)
            logged.wait()
        except BaseException:
            sdk_run.finish(exit_code=exit_code)
            raise
        sdk_run.finish(exit_code=exit_code)
        return logged

    def _open_run(self, project_dest_id: str, run_dest_id: str | None) -> tuple[Any, int]:
        """``wandb.init`` of the run that logs a model, and the exit code to finish it with."""
        import wandb

        entity, _, project = project_dest_id.rpartition("/")
        kwargs: dict[str, Any] = {
            "mode": "online",
            "entity": entity or self.entity,
            **self.store._scratch_dir(),
        }
        if run_dest_id is not None:
            project, run_id = self.store._split(run_dest_id)
            kwargs.update(project=project, id=run_id, resume="must")
            exit_code = self._exit_code(run_dest_id)
        else:
            run_id = self.store.mapping.run_id_for(f"bridge:model-uploads:{project_dest_id}")
            kwargs.update(
                project=project,
                id=run_id,
                resume="allow",
                name=UPLOADER_JOB_TYPE,
                job_type=UPLOADER_JOB_TYPE,
                notes="Registered model versions whose run is not in the sync's scope, "
                "uploaded by tracking-bridge",
                config={"_bridge.role": "model-upload"},
            )
            exit_code = 0
        settings = sdk.sdk_settings(api_key=self.store._api_key(), base_url=self.store.base_url)
        with self.store._init_lock:
            sdk_run = wandb.init(
                **kwargs, reinit="create_new", allow_val_change=True, settings=settings
            )
        return sdk_run, exit_code

    def _exit_code(self, run_dest_id: str) -> int:
        """The exit code that keeps the run's state: its source status through the
        mapping (as :meth:`WandbWriter.finish_run` chose it), else its W&B state."""
        try:
            r = self.api().run(run_dest_id)
            status = r.config.get("_bridge.status")
            state = str(r.state)
        except Exception as exc:
            if _not_found(exc):
                raise RunError(f"W&B run {run_dest_id} is gone: cannot log a model by it") from exc
            raise
        codes = self.store.mapping.exit_codes
        if isinstance(status, str) and status in codes:
            return codes[status]
        return STATE_EXIT.get(state, 1)

    # ---------------------------------------------------------------- registry

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
            if _not_found(exc):
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
            m = _VERSION_LABEL.match(label)
            if m is None:
                continue
            location = str(linked.source_qualified_name)
            held = _link_identities(linked.metadata, path) or [{}]
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
                if alias != "latest" and not _VERSION_LABEL.match(alias):
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
        held = _link_identities(meta, path)
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
        if _VERSION_LABEL.match(label) is None:
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
            if _not_found(exc):
                return
            raise
        if alias in linked.aliases:
            linked.aliases.remove(alias)
            linked.save()
