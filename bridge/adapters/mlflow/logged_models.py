"""MLflow 3 logged models made from model-typed artifacts (the writer's LoggedModels side).

A model-typed artifact becomes an MLflow 3 *logged model* in the run's experiment,
created with its identity tag ``bridge.source_id`` (so it is found again without state),
linked to the run twice over: ``source_run_id`` and a run output (``log_outputs``, what
``mlflow.<flavor>.log_model`` does and what the UI shows as the run's logged model). Its
files are streamed one at a time through a temp file into the model's artifact location,
then ``bridge/manifest.json`` (every entry, references included, with the MD5 and SHA-256
of what was stored), then the model is finalized READY — last, so a crash leaves a PENDING
model that the next :meth:`LoggedModelWriter.put_model` completes.

Artifact metadata is flattened into the logged model's *params*: MLflow lists and compares
models by params, and the source's model metadata is mostly hyperparameters. The full
metadata is in the manifest file as well. ``log_outputs`` twice for one (run, model)
violates a unique constraint: checked first.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.adapters.base import OpenEntry
from bridge.adapters.mlflow import logged_copy
from bridge.adapters.mlflow.once import create_once
from bridge.adapters.mlflow.registry import (
    ARTIFACT_TAG_PREFIX,
    COPY_CHUNK,
    DESCRIPTION_TAG,
    MANIFEST_FORMAT,
    MANIFEST_PATH,
    MAX_MODEL_PARAM_LEN,
    MAX_PARAMS_BYTES,
    MD5_B64,
    PAGE,
    SOURCE_ID_TAG,
    SOURCE_URI_TAG,
    cut_value,
    logged_model_name,
    md5_b64,
    safe_entry_path,
)
from bridge.errors import RunError
from bridge.faults import kill_point
from bridge.mapping import flatten, json_dumps, sanitize_key, to_text
from bridge.schema import ArtifactVersion, ManifestEntry, Run


class LoggedModelWriter:
    """Logged models in one MLflow store (see the module doc).

    ``store`` is the :class:`MlflowWriter` (its ``client``, ``kind``, ``mapping``,
    ``source_uri`` and ``notices``); thread-safe like the client behind it.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._experiments: set[str] = set()

    @property
    def client(self) -> Any:
        return self.store.client

    def _bridge_experiments(self) -> list[str]:
        """Experiments the bridge writes (tagged ``bridge.source_id`` by ensure_project)
        plus every experiment a model was put into by this writer."""
        from mlflow.entities import ViewType

        found: set[str] = set()
        token: str | None = None
        while True:
            page = self.client.search_experiments(
                view_type=ViewType.ACTIVE_ONLY,
                filter_string=f"tags.`{SOURCE_ID_TAG}` != ''",
                max_results=PAGE,
                page_token=token,
            )
            found.update(str(e.experiment_id) for e in page)
            token = page.token
            if not token:
                break
        with self._lock:
            found |= self._experiments
        return sorted(found)

    def _models_with_source(self, source_id: str) -> list[Any]:
        """Logged models tagged with ``source_id``, oldest first."""
        # Logged-model filters take only single-quoted strings (no escapes): an id with a
        # quote in it is found by scanning the bridge's models instead.
        if "'" in source_id:
            filter_string = f"tags.`{SOURCE_ID_TAG}` != ''"
        else:
            filter_string = f"tags.`{SOURCE_ID_TAG}` = '{source_id}'"
        experiments = self._bridge_experiments()
        found: list[Any] = []
        for n in range(0, len(experiments), 100):
            token: str | None = None
            while True:
                page = self.client.search_logged_models(
                    experiment_ids=experiments[n : n + 100],
                    filter_string=filter_string,
                    max_results=100,
                    page_token=token,
                )
                found.extend(m for m in page if (m.tags or {}).get(SOURCE_ID_TAG) == source_id)
                token = page.token
                if not token:
                    break
        return sorted(found, key=lambda m: (m.creation_timestamp or 0, m.model_id))

    @staticmethod
    def _ready(model: Any) -> bool:
        """Done: READY, or a faithful copy marked copied (it may keep FAILED or PENDING)."""
        status = model.status
        return (getattr(status, "name", None) or str(status)) == "READY" or logged_copy.is_done(
            model
        )

    def find_model(self, artifact_source_id: str) -> str | None:
        """``models:/<id>`` of the READY logged model tagged with this source artifact."""
        for model in self._models_with_source(artifact_source_id):
            if self._ready(model):
                return f"models:/{model.model_id}"
        return None

    def put_model(
        self,
        project_dest_id: str,
        run_dest_id: str | None,
        art: ArtifactVersion,
        files: Sequence[tuple[ManifestEntry, OpenEntry]],
    ) -> str:
        """Create (or finish) the logged model for ``art``; return ``models:/<id>``."""
        if not art.source_id:
            raise RunError(f"model artifact {art.name!r} has no source identity: not written")
        with self._lock:
            self._experiments.add(str(project_dest_id))
        if logged_copy.is_faithful(art):  # an MLflow source's logged model, field by field
            return logged_copy.create(self, project_dest_id, run_dest_id, art, files)
        existing = self._models_with_source(art.source_id)
        ready = next((m for m in existing if self._ready(m)), None)
        if ready is not None:
            return f"models:/{ready.model_id}"
        if existing:
            model = existing[0]  # unfinished by an earlier, interrupted call: finish it
        else:
            source_id = art.source_id
            model = create_once(
                self.store.kind,
                lambda: self.client.create_logged_model(
                    str(project_dest_id),
                    name=logged_model_name(art.name),
                    source_run_id=run_dest_id,
                    tags=self._model_tags(art),
                    params=self._model_params(art),
                ),
                lambda: next(iter(self._models_with_source(source_id)), None),
                f"logged model {art.name}",
            )
        model_id = str(model.model_id)
        kill_point("mlflow.model.after_create")
        stored = self._upload(model_id, art, files)
        self._upload_manifest(model_id, art, stored)
        kill_point("mlflow.model.before_finalize")
        if run_dest_id:
            self._link_output(run_dest_id, model_id)
        from mlflow.entities import LoggedModelStatus

        self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        return f"models:/{model_id}"

    def sync_run(self, dest_id: str, run: Run) -> None:
        """A run's model metrics, output links and its models' changes (logged_copy.py)."""
        logged_copy.sync_run(self, dest_id, run)

    def _model_tags(self, art: ArtifactVersion) -> dict[str, str]:
        assert art.source_id is not None
        p = ARTIFACT_TAG_PREFIX
        tags = {
            SOURCE_ID_TAG: art.source_id,
            f"{p}name": art.name,
            f"{p}type": art.type,
            f"{p}version": art.version or "",
            f"{p}digest": art.digest or "",
        }
        if art.aliases:
            tags[f"{p}aliases"] = json.dumps(art.aliases)
        if art.producer_source_id:
            tags[f"{p}producer"] = art.producer_source_id
        if self.store.source_uri:
            tags[SOURCE_URI_TAG] = self.store.source_uri
        if art.description:
            tags[DESCRIPTION_TAG] = art.description
        return tags

    def _model_params(self, art: ArtifactVersion) -> dict[str, str]:
        """Flattened metadata; keys made MLflow-legal, long values cut with the marker."""
        params: dict[str, str] = {}
        for key, value in flatten(art.metadata, self.store.mapping.flatten_separator):
            text = to_text(value)
            marker = self.store.mapping.marker(len(text), MANIFEST_PATH)
            params.setdefault(sanitize_key(key), cut_value(text, MAX_MODEL_PARAM_LEN, marker)[0])
        if len(json.dumps(params)) > MAX_PARAMS_BYTES:
            self._warn(
                art.source_id or art.name,
                "metadata-not-params",
                f"model {art.name}: metadata too large for logged-model params; "
                f"kept in {MANIFEST_PATH} only",
            )
            return {}
        return params

    def _warn(self, source_id: str, code: str, message: str) -> None:
        self.store.notices.add(source_id, code, message)

    def _upload(
        self, model_id: str, art: ArtifactVersion, files: Sequence[tuple[ManifestEntry, OpenEntry]]
    ) -> dict[str, dict[str, Any]]:
        """Each entry through a temp file (bounded memory), hashed on the way; returns
        path → {size, md5, sha256} of what was stored, and records checksum mismatches."""
        stored: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="bridge-model-") as tmp:
            for entry, opener in files:
                path = safe_entry_path(entry.path)
                folder, name = posixpath.split(path)
                local = Path(tmp) / name
                md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
                src = opener()
                try:
                    with open(local, "wb") as out:
                        while True:
                            chunk = src.read(COPY_CHUNK)
                            if not chunk:
                                break
                            md5.update(chunk)
                            sha256.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                finally:
                    src.close()
                self.client.log_model_artifact(model_id, str(local), folder or None)
                local.unlink()
                got = {"size": size, "md5": md5_b64(md5), "sha256": sha256.hexdigest()}
                stored[path] = got
                self._check(art, entry, got)
        return stored

    def _check(self, art: ArtifactVersion, entry: ManifestEntry, got: dict[str, Any]) -> None:
        problem = None
        if entry.size is not None and got["size"] != entry.size:
            problem = f"size {got['size']} bytes, manifest says {entry.size}"
        elif entry.digest and MD5_B64.match(entry.digest) and got["md5"] != entry.digest:
            problem = f"MD5 {got['md5']}, manifest says {entry.digest}"
        if problem is None:
            return
        self._warn(
            art.source_id or art.name,
            "checksum-mismatch",
            f"model {art.name} file {entry.path!r}: stored content does not "
            f"match its manifest: {problem}",
        )

    def _upload_manifest(
        self, model_id: str, art: ArtifactVersion, stored: dict[str, dict[str, Any]]
    ) -> None:
        """``bridge/manifest.json``: the artifact record (as the engine writes beside run
        artifacts) with what was stored per entry; references are listed, not copied."""
        doc = art.model_dump(mode="json", exclude={"locator"})
        doc["format"] = MANIFEST_FORMAT
        doc["location"] = f"models:/{model_id}"
        for entry in doc["manifest"]:
            entry.pop("local_path", None)
            try:
                path = safe_entry_path(entry["path"])
            except RunError:
                continue
            if path in stored:
                entry["stored"] = stored[path]
        with tempfile.TemporaryDirectory(prefix="bridge-model-") as tmp:
            local = Path(tmp) / posixpath.basename(MANIFEST_PATH)
            local.write_text(json_dumps(doc, indent=2) + "\n", encoding="utf-8")
            self.client.log_model_artifact(model_id, str(local), posixpath.dirname(MANIFEST_PATH))

    def _link_output(self, run_id: str, model_id: str) -> None:
        """Make the model an output of the run (once: a second row violates a constraint)."""
        from mlflow.entities import LoggedModelOutput

        outputs = getattr(self.client.get_run(run_id), "outputs", None)
        if any(o.model_id == model_id for o in (getattr(outputs, "model_outputs", None) or [])):
            return
        self.client.log_outputs(run_id, [LoggedModelOutput(model_id=model_id, step=0)])
