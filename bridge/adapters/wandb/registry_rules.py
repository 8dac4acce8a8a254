"""The W&B naming and identity rules for models and registry collections (pure), and
what the model/registry half needs of the online writer it belongs to."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any, Protocol

from bridge.adapters.wandb.mapping import WandbMapping
from bridge.adapters.wandb.sdk import LiveRun
from bridge.paths import check_relpath

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

NAME_BAD = re.compile(r"[^A-Za-z0-9_\-.]")
VERSION_LABEL = re.compile(r"^v(\d+)$")
TAG = re.compile(r"^[-\w]+( +[-\w]+)*$")  # wandb.sdk.artifacts._validators.TAG_REGEX

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
    out = NAME_BAD.sub("-", name).strip("-") or "model"
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
    if VERSION_LABEL.match(alias):
        return "W&B reserves 'v<number>' for version labels"
    return None


def collection_tags(tags: dict[str, str]) -> tuple[list[str], list[str]]:
    """(W&B collection tags, source tags that cannot be one): a W&B tag is a bare name, so
    only tags with an empty or "true" value and a W&B-legal name become one."""
    kept: list[str] = []
    dropped: list[str] = []
    for key, value in sorted(tags.items()):
        if value.strip().lower() in ("", "true") and TAG.fullmatch(key):
            kept.append(key)
        else:
            dropped.append(key)
    return kept, dropped


def not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        p in text for p in ("could not find", "not found", "does not exist", "failed to load")
    )


def safe_path(path: str) -> str:
    """A manifest entry path, checked by the shared guard (PathRefused if it escapes)."""
    return check_relpath(path, "artifact entry path")


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def ids_of(metadata: Any) -> list[str]:
    """Source identities a stored model artifact stands for (its own, then others)."""
    if not isinstance(metadata, dict):
        return []
    out = [metadata[SOURCE_ID_KEY]] if isinstance(metadata.get(SOURCE_ID_KEY), str) else []
    others = metadata.get(OTHER_SOURCE_IDS_KEY)
    if isinstance(others, list):
        out += [o for o in others if isinstance(o, str)]
    return out


def link_identities(metadata: Any, path: str) -> list[dict[str, Any]]:
    """The source versions a link into collection ``path`` stands for (metadata
    ``bridge.registry_links[path].versions``), oldest first."""
    links = metadata.get(LINKS_KEY) if isinstance(metadata, dict) else None
    entry = links.get(path) if isinstance(links, dict) else None
    held = entry.get("versions") if isinstance(entry, dict) else None
    return [h for h in held if isinstance(h, dict)] if isinstance(held, list) else []


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
