"""MLflow model objects and the model registry, both ways.

As a destination (:class:`RegistryWriter`, used by ``MlflowWriter``):

* A model-typed artifact becomes an MLflow 3 *logged model* in the run's experiment,
  created with its identity tag ``bridge.source_id`` (so it is found again without state),
  linked to the run twice over: ``source_run_id`` and a run output (``log_outputs``, what
  ``mlflow.<flavor>.log_model`` does and what the UI shows as the run's logged model). Its
  files are streamed one at a time through a temp file into the model's artifact location,
  then ``bridge/manifest.json`` (every entry, references included, with the MD5 and SHA-256
  of what was stored), then the model is finalized READY — last, so a crash leaves a PENDING
  model that the next :meth:`RegistryWriter.put_model` completes.
* Artifact metadata is flattened into the logged model's *params*: MLflow lists and compares
  models by params, and W&B model metadata is mostly hyperparameters. The full metadata is
  in the manifest file as well.
* Registered models and versions: names from the mapping's ``[registry] model_name`` rule;
  every version carries ``bridge.source_id`` and ``bridge.source_version`` (W&B's N), which
  is how a version created just before a crash is recognised instead of created twice.

Verified with MLflow 3.17 (see tests/test_mlflow_registry.py):

* ``create_model_version(source="models:/<id>")`` on a *direct* SQL store resolves the id
  with ``MlflowClient()`` — the process-global tracking URI — so without help it creates
  ``./mlflow.db`` in the working directory and fails. :func:`_global_tracking_uri` sets the
  global URI to this store for that one call.
* Through an ``mlflow server`` the same call is refused unless ``model_id`` is also given;
  the server then tags the logged model ``mlflow.modelVersions`` itself (direct SQL stores
  do not: we add the tag, as ``mlflow.register_model`` does). Neither store keeps the
  version's ``model_id``: it reads back as None; ``source`` keeps ``models:/<id>``.
* ``log_outputs`` twice for one (run, model) violates a unique constraint: checked first.

As a source (:class:`RegistryReader`, used by ``MlflowReader``): every registered model
(or those matching ``ReaderOptions.registries``), versions in number order, each with its
content listed recursively under the version's source (``models:/<id>``, ``runs:/...`` or
a plain artifact URI), opened one file at a time by :meth:`RegistryReader.open_entry`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bridge.adapters.base import DestModelVersion, DestRegisteredModel, OpenEntry, ReaderOptions
from bridge.adapters.mlflow.once import create_once
from bridge.errors import RunError
from bridge.faults import kill_point
from bridge.mapping import flatten, json_dumps, sanitize_key, to_text
from bridge.paths import check_relpath
from bridge.schema import (
    ArtifactVersion,
    ManifestEntry,
    ModelVersion,
    RegisteredModel,
    Warning_,
)

if TYPE_CHECKING:
    from bridge.mapping import Mapping

SOURCE_ID_TAG = "bridge.source_id"
SOURCE_URI_TAG = "bridge.source_uri"
SOURCE_VERSION_TAG = "bridge.source_version"
ARTIFACT_TAG_PREFIX = "bridge.artifact."
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as a logged model's description
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # logged model -> its registered versions (JSON)
MANIFEST_PATH = "bridge/manifest.json"
MANIFEST_FORMAT = "tracking-bridge/artifact-manifest/1"

MAX_ALIAS_LEN = 255
MAX_MODEL_NAME_LEN = 256  # registered_models.name is VARCHAR(256)
MAX_LOGGED_MODEL_NAME_LEN = 500
#: registered_model_tags.value and the description columns are VARCHAR(5000)
MAX_REGISTRY_TAG_LEN = 5000
MAX_MODEL_PARAM_LEN = 6000
#: Flattened metadata bigger than this stays in the manifest only (server request limit).
MAX_PARAMS_BYTES = 900_000
PAGE = 1000
COPY_CHUNK = 1024 * 1024

_ALIAS_CHARS = re.compile(r"[\w\-]+")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
_MD5_B64 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
_LOGGED_MODEL_BAD = re.compile(r"[/:.%\"']")
_GLOBAL_URI_LOCK = threading.Lock()


# --------------------------------------------------------------------------- rules


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse ``alias`` (its ``_validate_model_alias_name`` and
    ``_validate_model_alias_name_reserved`` rules), or None if it is legal."""
    if not alias:
        return "MLflow aliases cannot be empty"
    if not _ALIAS_CHARS.fullmatch(alias):
        return "MLflow aliases may only contain letters, digits, '_' and '-'"
    if len(alias) > MAX_ALIAS_LEN:
        return f"MLflow aliases are at most {MAX_ALIAS_LEN} characters ({len(alias)} here)"
    if alias.lower() == "latest":
        return "'latest' is reserved by MLflow (it always means the newest version)"
    if _VERSION_ALIAS.fullmatch(alias):
        return "MLflow reserves 'v<number>' aliases for version numbers"
    return None


def sanitize_model_name(name: str) -> str:
    """A registered model name MLflow accepts: no "/" or ":" (→ "-"), not blank, not a
    "."/".." path, at most 256 characters (longer: cut plus a hash of the whole)."""
    out = name.replace("/", "-").replace(":", "-").strip()
    if not out or out == ".":
        out = "model"
    elif out.startswith(".."):
        out = "model-" + out
    if len(out) > MAX_MODEL_NAME_LEN:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        out = out[: MAX_MODEL_NAME_LEN - 17] + "-" + digest
    return out


def logged_model_name(name: str) -> str:
    """A logged model name MLflow accepts (no ``/ : . % " '``; at most 500 chars)."""
    out = _LOGGED_MODEL_BAD.sub("-", name).strip() or "model"
    return out[:MAX_LOGGED_MODEL_NAME_LEN]


def model_id_of(location: str) -> str | None:
    """The logged model id of a ``models:/<model_id>`` URI (not ``models:/name/3``)."""
    if not location.startswith("models:/"):
        return None
    rest = location[len("models:/") :]
    if not rest or "/" in rest or "@" in rest:
        return None
    return rest


def runs_uri_run_id(location: str) -> str | None:
    """The run id of a ``runs:/<run_id>/<path>`` URI."""
    if not location.startswith("runs:/"):
        return None
    run_id = location[len("runs:/") :].split("/", 1)[0]
    return run_id or None


def md5_b64(md5: Any) -> str:
    return base64.b64encode(md5.digest()).decode()


def _quote(value: str) -> str | None:
    """``value`` as a filter-string literal, or None if MLflow's parser cannot take it
    (it has no escapes: a value with both quote kinds cannot be written)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _cut(value: str, limit: int, marker: str) -> tuple[str, bool]:
    if len(value) <= limit:
        return value, False
    return value[: limit - len(marker)] + marker, True


@contextmanager
def _global_tracking_uri(uri: str, kind: str) -> Iterator[None]:
    """MLflow's SQL registry store resolves ``models:/<id>`` with ``MlflowClient()``, i.e.
    the process-global tracking URI: point it at our store for the duration (one at a
    time; restored exactly, environment variable included). Servers need nothing."""
    if kind == "http":
        yield
        return
    import mlflow.tracking._tracking_service.utils as tracking_utils

    with _GLOBAL_URI_LOCK:
        saved_uri = tracking_utils._tracking_uri
        saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        tracking_utils.set_tracking_uri(uri)
        try:
            yield
        finally:
            # None is how MLflow itself restores "unset" (its own _use_tracking_uri).
            tracking_utils.set_tracking_uri(saved_uri)  # type: ignore[arg-type]
            if saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved_env


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def _safe_path(path: str) -> str:
    """A manifest entry path, checked by the shared guard (PathRefused if it escapes)."""
    return check_relpath(path, "artifact entry path")


# --------------------------------------------------------------------------- writer


class RegistryWriter:
    """Logged models and registered models in one MLflow store (see the module doc).

    ``store`` is the :class:`MlflowWriter` (its ``client``, ``kind``, ``target`` and
    ``source_uri``); thread-safe like the client behind it.
    """

    def __init__(self, store: Any, mapping: Mapping) -> None:
        self.store = store
        self.mapping = mapping
        self._lock = threading.Lock()
        self._experiments: set[str] = set()
        #: Files whose stored bytes differ from their W&B manifest (MD5/size), one line each.
        self.checksum_mismatches: list[Warning_] = []
        #: Other things bent while writing (metadata too large for params ...).
        self.warnings: list[Warning_] = []
        #: Source registered model id → what its destination name rule had to change.
        self.name_warnings: dict[str, list[str]] = {}

    @property
    def client(self) -> Any:
        return self.store.client

    # ---------------------------------------------------------------- logged models

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
        status = model.status
        return (getattr(status, "name", None) or str(status)) == "READY"

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
        for key, value in flatten(art.metadata, self.mapping.flatten_separator):
            text = to_text(value)
            marker = self.mapping.marker(len(text), MANIFEST_PATH)
            params.setdefault(sanitize_key(key), _cut(text, MAX_MODEL_PARAM_LEN, marker)[0])
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
        with self._lock:
            self.warnings.append(Warning_(source_id=source_id, code=code, message=message))

    def _upload(
        self, model_id: str, art: ArtifactVersion, files: Sequence[tuple[ManifestEntry, OpenEntry]]
    ) -> dict[str, dict[str, Any]]:
        """Each entry through a temp file (bounded memory), hashed on the way; returns
        path → {size, md5, sha256} of what was stored, and records checksum mismatches."""
        stored: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="bridge-model-") as tmp:
            for entry, opener in files:
                path = _safe_path(entry.path)
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
        elif entry.digest and _MD5_B64.match(entry.digest) and got["md5"] != entry.digest:
            problem = f"MD5 {got['md5']}, manifest says {entry.digest}"
        if problem is None:
            return
        with self._lock:
            self.checksum_mismatches.append(
                Warning_(
                    source_id=art.source_id or art.name,
                    code="checksum-mismatch",
                    message=f"model {art.name} file {entry.path!r}: stored content does not "
                    f"match its manifest: {problem}",
                )
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
                path = _safe_path(entry["path"])
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

    # ---------------------------------------------------------------- registered models

    def registered_model_name(self, model: RegisteredModel) -> str:
        """The mapping's ``[registry] model_name`` rule, then made MLflow-legal; a change
        is kept in ``name_warnings[model.source_id]``."""
        wanted = self.mapping.registry.name_for(model.name, model.registry, model.entity)
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
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
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
        marker = self.mapping.marker(len(value), "the source")
        out, cut = _cut(value, MAX_REGISTRY_TAG_LEN, marker)
        if cut:
            self._warn(
                source_id,
                "truncated",
                f"{what} is {len(value)} chars, over MLflow's {MAX_REGISTRY_TAG_LEN}; cut",
            )
        return out

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
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        rm = self.client.get_registered_model(name)
        if (rm.description or None) != description:
            self.client.update_registered_model(name, description=description or "")
        have = dict(rm.tags or {})
        for key, value in tags.items():
            if have.get(key) != value:
                self.client.set_registered_model_tag(name, key, value)

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
        with _global_tracking_uri(self.store.target, self.store.kind):
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

    def set_alias(self, name: str, alias: str, version: str) -> None:
        problem = alias_problem(alias)
        if problem is not None:
            raise RunError(f"alias {alias!r} of {name}: {problem}")
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; one that is already gone is fine."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if _error_code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise


def search_versions(client: Any, name: str) -> list[Any]:
    """Every version of a registered model, by number (``search_model_versions`` paged)."""
    quoted = _quote(name)
    filter_string = f"name = {quoted}" if quoted is not None else ""
    found: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(
            filter_string=filter_string, max_results=PAGE, page_token=token
        )
        found.extend(v for v in page if v.name == name)
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda v: int(v.version))


# --------------------------------------------------------------------------- reader


class RegistryReader:
    """Registered models of one MLflow store as neutral records (see the module doc).

    ``store`` is the :class:`MlflowReader` (``client``, ``target``, ``display_uri``).
    """

    def __init__(self, store: Any, options: ReaderOptions) -> None:
        self.store = store
        self.options = options
        #: Versions whose content could not be listed (source gone ...), one line each.
        self.warnings: list[Warning_] = []
        #: Content listings by root URI: versions of one logged model are listed once.
        self._listings: dict[str, list[tuple[str, int | None]]] = {}

    @property
    def client(self) -> Any:
        return self.store.client

    def _wanted(self, name: str) -> bool:
        patterns = self.options.registries
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def list_registered_models(self) -> Iterator[RegisteredModel]:
        """Every registered model (or those ``options.registries`` names; globs work),
        versions in number order. Nothing when ``options.registry`` is off."""
        if not self.options.registry:
            return
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.client.search_registered_models(max_results=PAGE, page_token=token)
            names.extend(rm.name for rm in page if self._wanted(rm.name))
            token = page.token
            if not token:
                break
        for name in sorted(names):
            yield self.registered_model(name)

    def registered_model(self, name: str) -> RegisteredModel:
        rm = self.client.get_registered_model(name)
        display = self.store.display_uri
        model = RegisteredModel(
            source_id=f"{display}#registered-model/{name}",
            name=name,
            description=rm.description or None,
            tags=_user_tags(rm.tags),
            registry=None,
            first_index=1,
        )
        by_version: dict[str, list[str]] = {}
        for alias, number in sorted((rm.aliases or {}).items()):
            by_version.setdefault(str(number), []).append(str(alias))
        for v in search_versions(self.client, name):
            model.versions.append(self._version(model, v, by_version.get(str(v.version), [])))
        return model

    def _version(self, model: RegisteredModel, v: Any, aliases: list[str]) -> ModelVersion:
        number = int(v.version)
        run_source_id = f"{self.store.display_uri}#{v.run_id}" if v.run_id else None
        artifact = self._artifact(model.name, v, number, aliases, run_source_id)
        return ModelVersion(
            source_id=f"{model.source_id}/{number}",
            index=number,
            artifact=artifact,
            run_source_id=run_source_id,
            description=v.description or None,
            tags=_user_tags(v.tags),
            aliases=aliases,
            created_at_ms=v.creation_timestamp,
        )

    def _artifact(
        self, name: str, v: Any, number: int, aliases: list[str], run_source_id: str | None
    ) -> ArtifactVersion:
        display = self.store.display_uri
        source = str(v.source or "")
        model_id = model_id_of(source)
        metadata: dict[str, Any] = {"source": source}
        skip: set[str] = set()
        if model_id is not None:
            source_id = f"{display}#model/{model_id}"
            metadata["model_id"] = model_id
        else:
            source_id = f"{display}#version-source/{source}"
        manifest: list[ManifestEntry] = []
        root: str | None = None
        try:
            root, logged = self._root(source)
            if logged is not None:
                if logged.params:
                    metadata["params"] = dict(logged.params)
                if SOURCE_ID_TAG in (logged.tags or {}):
                    skip.add(MANIFEST_PATH)  # the bridge's own record of an imported model
            if root not in self._listings:
                self._listings[root] = list(self._walk(root))
            manifest = [
                ManifestEntry(path=path, size=size)
                for path, size in self._listings[root]
                if path not in skip
            ]
        except Exception as exc:  # noqa: BLE001 - one unreadable source never stops a listing
            self.warnings.append(
                Warning_(
                    source_id=f"{display}#registered-model/{name}/{number}",
                    code="missing-file",
                    message=f"content of {name} version {number} ({source}) not listed: "
                    f"{type(exc).__name__}: {self.store._scrub(str(exc))}",
                )
            )
        listing = json.dumps(sorted((e.path, e.size) for e in manifest), separators=(",", ":"))
        return ArtifactVersion(
            name=name,
            type="model",
            version=f"v{number}",
            version_index=number,
            digest=hashlib.sha256(listing.encode()).hexdigest(),
            description=v.description or None,
            aliases=list(aliases),
            metadata=metadata,
            manifest=manifest,
            direction="logged",
            source_id=source_id,
            producer_source_id=run_source_id,
            created_at_ms=v.creation_timestamp,
            locator={"root": root} if root else {},
        )

    def _root(self, source: str, depth: int = 0) -> tuple[str, Any]:
        """The concrete artifact URI a version source names, and its logged model if any."""
        model_id = model_id_of(source)
        if model_id is not None:
            logged = self.client.get_logged_model(model_id)
            return str(logged.artifact_location), logged
        if source.startswith("runs:/"):
            from mlflow.utils.uri import append_to_uri_path

            run_id = runs_uri_run_id(source) or ""
            sub = source[len("runs:/") + len(run_id) :].strip("/")
            base = str(self.client.get_run(run_id).info.artifact_uri)
            return (append_to_uri_path(base, sub) if sub else base), None
        if source.startswith("models:/") and depth < 5:
            rest = source[len("models:/") :]
            if "@" in rest:
                rm_name, alias = rest.split("@", 1)
                number = str(self.client.get_model_version_by_alias(rm_name, alias).version)
            else:
                rm_name, number = rest.rsplit("/", 1)
            inner = self.client.get_model_version(rm_name, number).source
            return self._root(str(inner), depth + 1)
        return source, None

    def _repo(self, root: str) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(root, tracking_uri=self.store.target)

    def _walk(self, root: str) -> Iterator[tuple[str, int | None]]:
        """(path, size) of every file under ``root``, depth first, sorted by path."""
        repo = self._repo(root)

        def walk(path: str | None) -> Iterator[tuple[str, int | None]]:
            for info in sorted(repo.list_artifacts(path), key=lambda f: f.path):
                if info.is_dir:
                    yield from walk(info.path)
                else:
                    yield info.path, info.file_size

        yield from walk(None)

    def open_entry(self, art: ArtifactVersion, entry: ManifestEntry) -> IO[bytes]:
        """One file of a version's content: straight from a local artifact folder, else a
        temp download deleted on close. FileNotFoundError if it cannot be had."""
        from bridge.adapters.mlflow.reader import _local_dir, download_to_temp

        root = art.locator.get("root")
        if not root:
            if entry.local_path:
                return open(entry.local_path, "rb")
            raise FileNotFoundError(f"artifact {art.name}: no content for {entry.path!r}")
        path = _safe_path(entry.path)
        local = _local_dir(str(root))
        if local is not None:
            if not (local / path).is_file():
                raise FileNotFoundError(f"artifact {art.name}: {path!r} is not in {root}")
            return open(local / path, "rb")
        repo = self._repo(str(root))
        return download_to_temp(
            lambda folder: repo.download_artifacts(path, dst_path=folder),
            FileNotFoundError,
            f"artifact {art.name}: {path!r}",
            self.store._scrub,
        )


def _user_tags(tags: Any) -> dict[str, str]:
    """Tags as the source user sees them: without the bridge's own ``bridge.*``."""
    return {str(k): str(v) for k, v in sorted((tags or {}).items()) if not k.startswith("bridge.")}
