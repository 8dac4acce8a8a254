"""Rules MLflow sets for model objects and the registry, shared by both directions.

Alias and name rules (what MLflow refuses, checked before anything is sent), the URI forms
a version source takes (``models:/<id>``, ``runs:/<id>/<path>``), the tag names the bridge
writes on models and versions, and :func:`search_versions`. The jobs are elsewhere:
logged models in ``logged_models.py``, registered models as a destination in
``registry_write.py``, as a source in ``registry_read.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge.paths import check_relpath

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
MD5_B64 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
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


def cut_value(value: str, limit: int, marker: str) -> tuple[str, bool]:
    if len(value) <= limit:
        return value, False
    return value[: limit - len(marker)] + marker, True


@contextmanager
def global_tracking_uri(uri: str, kind: str) -> Iterator[None]:
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


def error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def safe_entry_path(path: str) -> str:
    """A manifest entry path, checked by the shared guard (PathRefused if it escapes)."""
    return check_relpath(path, "artifact entry path")


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
