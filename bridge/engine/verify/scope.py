"""Which source objects a verify checks: the filters given, else those of the pair's last
real sync, else every run — and how that choice is described in the report."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bridge.adapters.base import ReaderOptions

if TYPE_CHECKING:
    from bridge.state import StateStore

#: ReaderOptions fields that decide which source objects a sync lists and how it names
#: them (``entity``, ``staging_dir``): remembered per pair by every real sync, re-applied
#: by ``verify`` so it checks what the sync was asked to copy — no more, no less.
SCOPE_FIELDS = (
    "run_ids",
    "since",
    "tags",
    "states",
    "experiments",
    "include_deleted",
    "registries",
    "registry",
    "entity",
    "staging_dir",
    "items",
)
#: How each scope field is spelled on the command line (for the report's scope line).
_FLAGS = {
    "run_ids": "--runs",
    "since": "--since",
    "tags": "--tag",
    "states": "--run-state",
    "experiments": "--experiment",
    "include_deleted": "--include-deleted",
    "registries": "--models",
    "registry": "--no-registry",
    "entity": "--entity",
    "staging_dir": "--staging-dir",
    "items": "--no-<kind>s",  # the kinds left out, each as its own flag
}


#: Where a real sync made with a mapping file records the file's absolute path, next to
#: the pair's filters (absent when the sync used the default rules, so the stored filters
#: of such a pair are unchanged); ``verify`` renders with it when given no mapping.
MAPPING_KEY = "mapping"


def pair_scope(options: ReaderOptions, mapping: str | None = None) -> dict[str, Any]:
    """The scope fields of a sync's reader options (and the mapping file it used, if one),
    as the state store keeps them."""
    scope = {name: getattr(options, name) for name in SCOPE_FIELDS}
    if mapping:
        scope[MAPPING_KEY] = mapping
    return scope


def recorded_mapping(state: StateStore, source_uri: str, dest_uri: str) -> str | None:
    """The mapping file the pair's last real sync used (None: the default rules, or none
    recorded — a sync before this was kept did not record it)."""
    remembered = state.pair_filters(source_uri, dest_uri) or {}
    value = remembered.get(MAPPING_KEY)
    return value if isinstance(value, str) and value else None


def describe_filters(filters: dict[str, Any]) -> str:
    """Filters as command-line flags; "none (every source run)" when nothing narrows."""
    default = pair_scope(ReaderOptions())
    parts: list[str] = []
    for name in SCOPE_FIELDS:
        value = filters.get(name, default[name])
        if value == default[name]:
            continue
        flag = _FLAGS[name]
        if name == "items":
            parts.extend(f"--no-{k}s" for k in default[name] if k not in value)
        elif isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list):  # repeated, as the command line takes each
            parts.extend(f"{flag} {shlex.quote(str(v))}" for v in value)
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts) or "none (every source run)"


@dataclass
class Scope:
    """Which source objects a verify checks, and where that choice came from."""

    filters: dict[str, Any]
    origin: Literal["given", "last sync", "none"]

    def describe(self) -> str:
        if self.origin == "none":
            return "every source run (no filters given, no sync of this pair recorded)"
        where = "filters given" if self.origin == "given" else "filters of the last sync"
        return f"{where}: {describe_filters(self.filters)}"

    def options(self, workers: int) -> ReaderOptions:
        """Reader options that list this scope."""
        known = {k: v for k, v in self.filters.items() if k in SCOPE_FIELDS}
        return ReaderOptions(workers=workers, **known)


def scope_for(
    state: StateStore, source_uri: str, dest_uri: str, given: ReaderOptions | None
) -> Scope:
    """The filters given to verify, else those of the pair's last real sync, else none."""
    if given is not None:
        return Scope(pair_scope(given), "given")
    remembered = state.pair_filters(source_uri, dest_uri)
    if remembered is None:
        return Scope({}, "none")
    return Scope({k: v for k, v in remembered.items() if k != MAPPING_KEY}, "last sync")
