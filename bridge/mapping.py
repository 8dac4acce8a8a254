"""How W&B fields become MLflow params, tags and keys.

Three things live here, all pure (no I/O except reading a mapping file):

* :class:`Mapping` — the user-overridable defaults (experiment name template, tag prefixes,
  flatten separator, truncation marker). ``mappings/wandb-to-mlflow.toml`` is the documented
  copy of these defaults; a user edits a copy and passes it to :func:`load_mapping`.
  :func:`default_mapping` finds the shipped file of a (source kind, destination kind) pair.
* :func:`sanitize_key` / :func:`restore_key` — a reversible encoding for keys MLflow rejects.
* :func:`flatten` / :func:`to_text` — nested config/summary → flat ``key -> str``.

Key rule (documented in the TOML too). MLflow accepts keys matching ``^[/\\w.\\- :]*$`` that
``posixpath.normpath`` leaves unchanged (no leading ``/``, no ``//``, no trailing ``/``, no
``.``/``..`` segments, no leading ``..``) and at most 250 characters. A key that is legal and
contains no escape-like sequence (``:`` + two uppercase hex digits, or ``:_``) is stored as is.
Every other key is encoded: each illegal character, and every ``:``, becomes ``:`` + two
uppercase hex digits per UTF-8 byte (``:`` → ``:3A``, ``@`` → ``:40``); a ``/`` that would
start the key, follow another ``/`` or end the key becomes ``:2F``; the last dot of a ``.`` or
``..`` segment (and of a leading ``..``) becomes ``:2E``. Decoding all ``:XX`` runs restores the
original exactly. A key still longer than 250 characters is cut to 230 characters plus ``:_``
and the first 16 hex digits of the SHA-256 of the original key; only the key map
(``bridge/key-map.json``) restores those.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from collections.abc import Mapping as AbcMapping
from collections.abc import Set as AbcSet
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.errors import BridgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_KEY_LEN = 250
HASHED_PREFIX_LEN = 230
HASH_MARK = ":_"  # "~" would be illegal in MLflow keys
#: Backend kinds name the shipped mapping files: ``<source>-to-<destination>.toml``.
_KIND = re.compile(r"[a-z][a-z0-9_]*")


def default_mapping(source_kind: str, dest_kind: str) -> Path | None:
    """The shipped, documented mapping file for copying ``source_kind`` runs into
    ``dest_kind`` (backend kinds: "wandb", "mlflow", "tensorboard"), or None when the
    package ships none for that pair. The files are package data (``bridge/mappings/``;
    ``mappings/`` in a checkout points there), so an installed wheel finds them too."""
    for kind in (source_kind, dest_kind):
        if not _KIND.fullmatch(kind):
            raise ValueError(f"not a backend kind: {kind!r}")
    found = resources.files("bridge") / "mappings" / f"{source_kind}-to-{dest_kind}.toml"
    # A package installed as files (not zipped): the resource is a real path.
    return Path(str(found)) if found.is_file() and Path(str(found)).is_file() else None


M = TypeVar("M", bound=BaseModel)


def rules_by_kind(
    configured: M, kind: str, as_configured: AbcSet[str], kind_defaults: Callable[[str], M]
) -> M:
    """A writer's rules for runs whose recorded source is of ``kind``: ``configured`` itself
    for the kinds its rules were written for; for another kind that kind's defaults
    (``kind_defaults``: its shipped file, else neutral names), with every key the user's
    ``--mapping`` file set (``configured``'s explicitly set fields) laid over them."""
    if kind in as_configured:
        return configured
    explicit = {name: getattr(configured, name) for name in configured.model_fields_set}
    return kind_defaults(kind).model_copy(update=explicit)


def shipped_mapping(source_kind: str, dest_kind: str) -> Path | None:
    """:func:`default_mapping`, None also for a source kind no mapping file could be named
    after (an identity recorded by something else)."""
    try:
        return default_mapping(source_kind, dest_kind)
    except ValueError:
        return None


#: The shipped, documented copy of the W&B → MLflow defaults.
DEFAULT_MAPPING_PATH = default_mapping("wandb", "mlflow")

_LEGAL_CHAR = re.compile(r"[/\w.\- ]")  # ":" is legal for MLflow but is our escape character
_LEGAL_KEY = re.compile(r"[/\w.\- :]*")  # used with fullmatch: no "$"-before-newline gap
_ESCAPE_LIKE = re.compile(r":(?:[0-9A-F]{2}|_)")
_ESCAPE_RUN = re.compile(r"(?::[0-9A-F]{2})+")


def check_name_template(
    field: str, value: str, fields: tuple[str, ...] = ("project", "entity")
) -> str:
    """A name template may use only ``fields`` (project/experiment names: {project} and
    {entity}) and must not render empty (a pydantic validator's body; raises ValueError)."""
    try:
        name = value.format(**{f: f[0] for f in fields})
    except (KeyError, IndexError, ValueError) as exc:
        names = [f"{{{f}}}" for f in fields]
        allowed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        raise ValueError(f"{field} {value!r} may only use {allowed}: {exc}") from exc
    if not name.strip():
        raise ValueError(f"{field} must not render to an empty name")
    return value


class RegistryRules(BaseModel):
    """``[registry]`` of the mapping file: how source registered models are named."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = "{collection}"

    @field_validator("model_name")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_name_template(
            "registry.model_name", value, ("collection", "registry", "entity")
        )

    def name_for(self, collection: str, registry: str | None, entity: str | None) -> str:
        """The destination name before sanitizing (see the MLflow writer's name rule)."""
        return self.model_name.format(
            collection=collection, registry=registry or "", entity=entity or ""
        )


class Mapping(BaseModel):
    """W&B → MLflow mapping rules; defaults match ``mappings/wandb-to-mlflow.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_name: str = "{project}"
    flatten_separator: str = "."
    skip_config_keys: list[str] = Field(default_factory=lambda: ["_wandb"])
    skip_summary_keys: list[str] = Field(default_factory=lambda: ["_wandb"])
    source_tag_prefix: str = "wandb."
    summary_tag_prefix: str = "wandb.summary."
    per_tag_tags: bool = True
    tag_prefix: str = "wandb.tag."
    truncation_marker: str = "…[truncated from {length} chars; full value in {artifact}]"
    registry: RegistryRules = Field(default_factory=RegistryRules)

    @field_validator("experiment_name")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_name_template("experiment_name", value)

    @field_validator("truncation_marker")
    @classmethod
    def _check_marker(cls, value: str) -> str:
        try:
            rendered = value.format(length=10**9, artifact="bridge/long-values.json")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"truncation_marker may only use {{length}} and {{artifact}}: {exc}"
            ) from exc
        if len(rendered) > 500:
            raise ValueError("truncation_marker is too long (max ~500 chars rendered)")
        return value

    @field_validator("flatten_separator")
    @classmethod
    def _check_sep(cls, value: str) -> str:
        if not value:
            raise ValueError("flatten_separator must not be empty")
        return value

    def experiment_for(self, project: str, entity: str | None) -> str:
        """The experiment name for a W&B project."""
        return self.experiment_name.format(project=project, entity=entity or "")

    def marker(self, length: int, artifact: str) -> str:
        return self.truncation_marker.format(length=length, artifact=artifact)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or invalid file is one BridgeError line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise BridgeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BridgeError(f"{what} {path} is not valid TOML: {exc}") from exc


def load_toml_model(model: type[M], path: Path | None, reference: str) -> M:
    """``model``'s defaults, overridden by the keys of the TOML file at ``path`` if given;
    a wrong key or value is one BridgeError line pointing at the documented ``reference``."""
    if path is None:
        return model()
    data = read_toml(path, "mapping file")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(file)"
        raise BridgeError(
            f"mapping file {path}: {where}: {first.get('msg')} (see {reference})"
        ) from exc


def load_mapping(path: Path | None = None) -> Mapping:
    """The defaults, overridden by the keys of the TOML file at ``path`` if given."""
    return load_toml_model(Mapping, path, "mappings/wandb-to-mlflow.toml")


# --------------------------------------------------------------------------- keys


def is_legal_key(key: str) -> bool:
    """Whether MLflow accepts ``key`` as a param/metric/tag key (same checks as MLflow)."""
    if len(key) > MAX_KEY_LEN or not _LEGAL_KEY.fullmatch(key):
        return False
    import posixpath

    norm = posixpath.normpath(key)
    return not (norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"))


def _hex(ch: str) -> str:
    return "".join(f":{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def _encode_units(key: str) -> list[str]:
    """The encoded key as one string per original character (so cuts never split one)."""
    units: list[str] = []
    n = len(key)
    for i, ch in enumerate(key):
        if ch == "/":
            edge = i == 0 or key[i - 1] == "/" or i == n - 1
            units.append(":2F" if edge else "/")
        elif _LEGAL_CHAR.match(ch):
            units.append(ch)
        else:
            units.append(_hex(ch))
    # "." / ".." segments and a leading ".." (normpath would change or reject them).
    segments: list[list[int]] = [[]]
    for idx, unit in enumerate(units):
        if unit == "/":
            segments.append([])
        else:
            segments[-1].append(idx)
    for number, seg in enumerate(segments):
        text = "".join(units[i] for i in seg)
        if text == ".":
            units[seg[0]] = ":2E"
        elif text == ".." or (number == 0 and text.startswith("..")):
            units[seg[1]] = ":2E"
    return units


def _hashed(original: str, units: list[str]) -> str:
    prefix: list[str] = []
    size = 0
    for unit in units:
        if size + len(unit) > HASHED_PREFIX_LEN:
            break
        prefix.append(unit)
        size += len(unit)
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{''.join(prefix)}{HASH_MARK}{digest}"


def sanitize_key(key: str) -> str:
    """The key MLflow will store for ``key``; unchanged when it is legal and unambiguous."""
    if key and is_legal_key(key) and not _ESCAPE_LIKE.search(key):
        return key
    units = _encode_units(key)
    encoded = "".join(units)
    if not key or len(encoded) > MAX_KEY_LEN:
        return _hashed(key, units)
    return encoded


def restore_key(key: str, key_map: AbcMapping[str, str] | None = None) -> str:
    """Invert :func:`sanitize_key`.

    ``key_map`` (stored → original, as in ``bridge/key-map.json``) is needed only for keys
    that were shortened with a hash; without it their decoded prefix and ``:_hash`` come back.
    """
    if key_map is not None and key in key_map:
        return key_map[key]

    def _decode(m: re.Match[str]) -> str:
        raw = bytes(int(h, 16) for h in m.group(0).split(":")[1:])
        return raw.decode("utf-8", "surrogatepass")

    return _ESCAPE_RUN.sub(_decode, key)


# --------------------------------------------------------------------------- values


def to_text(value: Any) -> str:
    """A deterministic string for a param/tag value: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json_dumps(value)


def json_dumps(value: Any, indent: int | None = None) -> str:
    """JSON keeping NaN/Infinity as tokens (nothing lost) and non-JSON values as str()."""
    return json.dumps(
        value,
        ensure_ascii=False,
        allow_nan=True,
        sort_keys=indent is None,
        separators=(",", ":") if indent is None else None,
        indent=indent,
        default=str,
    )


def is_leaf_dict(value: Any) -> bool:
    """A dict kept whole (JSON) rather than flattened: empty, or a W&B typed value."""
    return isinstance(value, dict) and (not value or "_type" in value)


def flatten(
    data: AbcMapping[str, Any], sep: str = ".", prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    """Nested dicts → (dotted key, leaf value); lists and typed dicts are leaves."""
    for key, value in data.items():
        full = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict) and not is_leaf_dict(value):
            yield from flatten(value, sep, full)
        else:
            yield full, value


def is_numeric(value: Any) -> bool:
    """A metric-like value (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_numeric(value) and math.isfinite(value)
