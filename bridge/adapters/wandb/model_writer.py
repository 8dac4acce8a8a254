"""W&B as a model destination: model artifacts (online ``wandb:`` only).

Model objects (:meth:`ModelArtifacts.put_model`): a source model version becomes a
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
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.adapters.base import OpenEntry
from bridge.adapters.wandb import sdk
from bridge.adapters.wandb.registry_rules import (
    COPY_CHUNK,
    MAX_METADATA_KEYS,
    MODEL_TYPE,
    OTHER_SOURCE_IDS_KEY,
    SOURCE_ID_KEY,
    SOURCE_URI_KEY,
    STATE_EXIT,
    UPLOADER_JOB_TYPE,
    RunStore,
    artifact_name,
    ids_of,
    jsonable,
    not_found,
    safe_path,
)
from bridge.errors import RunError
from bridge.schema import ArtifactVersion, ManifestEntry

log = logging.getLogger(__name__)


class ModelArtifacts:
    """Model artifacts for one online W&B writer (see the module docstring)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._api_obj: Any = None
        self._index: dict[str, str] | None = None  # model source id -> artifact path

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
                        for sid in ids_of(art.metadata):
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
                path = safe_path(entry.path)
                local = folder / str(n)
                with opener() as stream, open(local, "wb") as out:
                    shutil.copyfileobj(stream, out, COPY_CHUNK)
                artifact.add_file(str(local), name=path, policy="immutable", skip_cache=True)
                written.add(entry.path)
            for entry in art.manifest:
                if entry.ref and entry.path not in written:
                    artifact.add_reference(entry.ref, name=safe_path(entry.path), checksum=False)
            logged = self._log(project_dest_id, run_dest_id, artifact)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        location = str(logged.source_qualified_name)
        if art.source_id not in ids_of(logged.metadata):
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
        source = jsonable(art.metadata) if art.metadata else {}
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
            if not_found(exc):
                raise RunError(f"W&B run {run_dest_id} is gone: cannot log a model by it") from exc
            raise
        codes = self.store.mapping.exit_codes
        if isinstance(status, str) and status in codes:
            return codes[status]
        return STATE_EXIT.get(state, 1)
