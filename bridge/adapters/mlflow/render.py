"""A neutral run as MLflow params and tags, decided once, with no I/O.

Config → params (flattened), the run's fields → tags (``mlflow.*`` where MLflow has a
name for them, the source kind's tag prefix otherwise: see ``kinds.py``), non-numeric
summary values → tags. Keys MLflow refuses are encoded (reported, listed in the key map);
values over MLflow's limits are cut with a marker (reported, kept whole in
``bridge/long-values.json``); the first of two keys that land on one stored key wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow.kinds import (
    extras_kind,
    mapping_for,
    source_kind,
    writes_native_run_id,
)
from bridge.adapters.mlflow.names import (
    CONFIG_ARTIFACT,
    INCOMPLETE_TAG,
    KEY_MAP_ARTIFACT,
    LONG_VALUES_ARTIFACT,
    MAX_EXPERIMENT_TAG_LEN,
    MAX_PARAM_LEN,
    MAX_TAG_LEN,
    SOURCE_ID_TAG,
    SOURCE_URI_TAG,
    STATUS_REASON_TAG,
    SUMMARY_ARTIFACT,
)
from bridge.mapping import Mapping, flatten, is_numeric, json_dumps, sanitize_key, to_text
from bridge.redact import redact
from bridge.schema import Project, Run, Warning_


@dataclass
class Full:
    """Everything rendering decides: what goes into MLflow and what goes beside it."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    warnings: list[Warning_] = field(default_factory=list)
    key_map: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"params": {}, "tags": {}, "metrics": {}}
    )
    long_values: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"params": {}, "tags": {}}
    )
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {"params": {}, "tags": {}})


def run_name(run: Run) -> str:
    return run.name or run.header.name or run.header.native_id


def identity_tags(run: Run, source_uri: str | None) -> dict[str, str]:
    """The tags a run is created with: its source identity (and the source URI, the user)."""
    tags = {SOURCE_ID_TAG: run.header.source_id}
    if source_uri:
        tags[SOURCE_URI_TAG] = source_uri
    if run.user:
        tags["mlflow.user"] = run.user
    return tags


def experiment_tags(project: Project, configured: Mapping) -> dict[str, str]:
    """An experiment's tags: the project's identity, entity, description and its own tags."""
    m = mapping_for(configured, source_kind(project.source_id))
    tags = {SOURCE_ID_TAG: project.source_id}
    if project.entity:
        tags[f"{m.source_tag_prefix}entity"] = project.entity
    if project.description:
        tags["mlflow.note.content"] = project.description
    for key, value in project.tags.items():
        tags.setdefault(sanitize_key(key), value)
    limit = MAX_EXPERIMENT_TAG_LEN
    for key, value in list(tags.items()):
        if len(value) > limit:
            marker = m.marker(len(value), "the source project")
            tags[key] = value[: limit - len(marker)] + marker
    return tags


def artifact_location(root: str | None, name: str) -> str | None:
    """Where an experiment the bridge creates keeps artifacts: ``root``/<hash of name>."""
    if root is None:
        return None
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return root.rstrip("/") + "/" + digest


def sqlite_artifact_root(db: str) -> str:
    """``<db folder>/mlartifacts`` (not the current dir) for a sqlite store."""
    return (Path(db).expanduser().resolve().parent / "mlartifacts").as_uri()


def render_full(
    run: Run, configured: Mapping, source_uri: str | None, parent_dest_id: str | None = None
) -> Full:
    """Everything the writer stores for ``run``'s metadata, by the rules of its source kind
    (``parent_dest_id``: the parent's MLflow run id, for ``mlflow.parentRunId``)."""
    kind = source_kind(run.header.source_id)
    m = mapping_for(configured, kind)
    full = Full()
    sid = run.header.source_id

    skip = set(m.skip_config_keys)
    config = {k: v for k, v in run.config.items() if k not in skip}
    for key, value in flatten(config, m.flatten_separator):
        _put(full, m, sid, "params", key, to_text(value), CONFIG_ARTIFACT)

    p = m.source_tag_prefix
    extras = extras_kind(kind)  # whose run fields the <p>group... tags carry (kinds.py)
    tags: list[tuple[str, Any, str]] = []
    for key, value in identity_tags(run, source_uri).items():
        tags.append((key, value, LONG_VALUES_ARTIFACT))
    fields: list[tuple[str, Any]] = [
        ("mlflow.runName", run_name(run)),
        ("mlflow.note.content", run.notes),
        ("mlflow.source.git.commit", run.git_commit),
        ("mlflow.source.git.repoURL", run.git_remote),
        # the source's own run id where it is not MLflow's kind of id (kinds.py)
        (f"{p}run_id", run.header.native_id if writes_native_run_id(kind) else None),
        ("mlflow.parentRunId", parent_dest_id),
        (f"{p}group", run.extra("group", extras)),
        (f"{p}job_type", run.extra("job_type", extras)),
        (f"{p}host", run.host),
        (f"{p}exit_code", run.extra("exit_code", extras)),
        (f"{p}tags", json_dumps(list(run.tags)) if run.tags else None),
        # the bridge's own tags: their text passes bridge.redact (it may quote an error)
        (STATUS_REASON_TAG, redact(run.status_reason or "")),
        (INCOMPLETE_TAG, redact(run.incomplete_reason or "")),
    ]
    for key, value in fields:
        if value is not None and value != "":
            tags.append((key, to_text(value), LONG_VALUES_ARTIFACT))
    if m.per_tag_tags:
        for tag in run.tags:
            tags.append((f"{m.tag_prefix}{tag}", "true", LONG_VALUES_ARTIFACT))
    for key, value in run.extra_tags.items():
        tags.append((key, value, LONG_VALUES_ARTIFACT))
    skip_summary = set(m.skip_summary_keys)
    summary = {k: v for k, v in run.results.items() if k not in skip_summary}
    for key, value in flatten(summary, m.flatten_separator):
        if not is_numeric(value):
            tags.append((f"{m.summary_tag_prefix}{key}", to_text(value), SUMMARY_ARTIFACT))
    for key, value, artifact in tags:
        _put(full, m, sid, "tags", key, value, artifact)
    return full


def _put(full: Full, m: Mapping, sid: str, kind: str, key: str, value: str, artifact: str) -> None:
    target = full.params if kind == "params" else full.tags
    owners = full.owners[kind]
    stored = sanitize_key(key)
    noun = "param" if kind == "params" else "tag"
    if stored in target:
        first = owners[stored]
        what = "the same key" if first == key else f"the same stored key {stored!r}"
        full.warnings.append(
            Warning_(
                source_id=sid,
                code="key-collision",
                message=f"{noun} {key!r} and {first!r} map to {what}; kept the first "
                f"(all values are in {artifact})",
            )
        )
        full.long_values[kind].setdefault(key, value)
        return
    if stored != key:
        full.key_map[kind][key] = stored
        full.warnings.append(
            Warning_(
                source_id=sid,
                code="sanitized-key",
                message=f"{noun} key {key!r} is not allowed by MLflow; stored as {stored!r} "
                f"(see {KEY_MAP_ARTIFACT})",
            )
        )
    limit = MAX_PARAM_LEN if kind == "params" else MAX_TAG_LEN
    if len(value) > limit:
        marker = m.marker(len(value), artifact)
        full.long_values[kind][key] = value
        full.warnings.append(
            Warning_(
                source_id=sid,
                code="truncated",
                message=f"{noun} {key!r} is {len(value)} chars, over MLflow's {limit}; "
                f"stored the first {limit - len(marker)} with a marker, full value in "
                f"{artifact}",
            )
        )
        value = value[: limit - len(marker)] + marker
    target[stored] = value
    owners[stored] = key
