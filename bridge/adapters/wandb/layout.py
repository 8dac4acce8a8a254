"""How a neutral run is laid out in a W&B run: the config document, the W&B fields, and
the flat params/tags view the engine diffs (pure; rules in ``mappings/<kind>-to-wandb.toml``).

Config = the source config, backend tags under ``mlflow_tags`` (the run rules'
``extra_tags_config_key``) and flat ``_bridge.*`` keys: source id/URI, source run id,
original start/end time (W&B always stamps "now"), status, then ``_bridge.fingerprint`` and
``_bridge.complete`` (written last, before ``finish``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bridge.adapters.wandb.fields import GROUP, JOB_TYPE, run_field
from bridge.adapters.wandb.mapping import WandbMapping
from bridge.errors import RunError
from bridge.mapping import flatten, to_text
from bridge.redact import redact
from bridge.schema import Run, Warning_

BRIDGE = "_bridge."
SOURCE_ID_KEY = "_bridge.source_id"
SOURCE_URI_KEY = "_bridge.source_uri"
COMPLETE_KEY = "_bridge.complete"
FINGERPRINT_KEY = "_bridge.fingerprint"
#: Rendered-tag keys for the W&B run fields the engine diffs.
NAME_TAG = "wandb.name"
NOTES_TAG = "wandb.notes"
GROUP_TAG = "wandb.group"
JOB_TYPE_TAG = "wandb.job_type"
TAG_PREFIX = "wandb.tag."
#: W&B run tag rules (wandb.sdk.artifacts._validators.TAG_REGEX; W&B UI: 64 characters).
_WANDB_TAG = re.compile(r"^[-\w]+( +[-\w]+)*$")
MAX_TAG_LEN = 64
_LABEL_BAD = re.compile(r"[^A-Za-z0-9-]+")


@dataclass
class Doc:
    """What rendering decides: the config to write, its flat view and the W&B fields."""

    config: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # flat key -> top-level key
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    wandb_tags: list[str] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)


def fields_as_tags(fields: dict[str, Any]) -> dict[str, str]:
    """A W&B run's name/notes/group/job type/tags as the rendered tags they compare to."""
    tags: dict[str, str] = {}
    for key, value in (
        (NAME_TAG, fields.get("name")),
        (NOTES_TAG, fields.get("notes")),
        (GROUP_TAG, fields.get("group")),
        (JOB_TYPE_TAG, fields.get("job_type")),
    ):
        if value:
            tags[key] = str(value)
    for tag in fields.get("tags") or []:
        tags[TAG_PREFIX + tag] = "true"
    return tags


def render_doc(run: Run, m: WandbMapping, source_uri: str | None) -> Doc:
    """The config, flat params, rendered tags and W&B tags for ``run``."""
    doc = Doc()
    sid = run.header.source_id
    reserved = {m.extra_tags_config_key}
    skip = set(m.skip_config_keys)
    for key, value in run.config.items():
        if key in skip:
            continue
        stored = key
        if key in reserved or key.startswith(BRIDGE) or key != key.strip("-") or not key:
            stored = f"_{key}_" if key != key.strip("-") or not key else f"{key}_"
            doc.warnings.append(
                Warning_(
                    source_id=sid,
                    code="sanitized-key",
                    message=f"config key {key!r} is reserved or changed by W&B; "
                    f"stored as {stored!r}",
                )
            )
        doc.config[stored] = value
    extra = dict(run.extra_tags)
    if extra:
        doc.config[m.extra_tags_config_key] = extra
    for key, value in (
        (SOURCE_ID_KEY, sid),
        (SOURCE_URI_KEY, source_uri),
        ("_bridge.source_run_id", run.header.native_id),
        ("_bridge.source_project", run.header.project.name),
        ("_bridge.parent_source_id", run.parent_source_id),
        ("_bridge.user", run.user),
        ("_bridge.host", run.host),
        ("_bridge.start_time_ms", run.start_time_ms),
        ("_bridge.end_time_ms", run.end_time_ms),
        ("_bridge.status", run.status),
        ("_bridge.status_reason", redact(run.status_reason or "")),  # the bridge's own text
        ("_bridge.incomplete", redact(run.incomplete_reason or "")),
        ("_bridge.step_key", m.step_key),
    ):
        if value is not None and value != "":
            doc.config[key] = value
    for top, value in doc.config.items():
        for flat, leaf in flatten({top: value}):
            if leaf is None:
                continue
            doc.params[flat] = to_text(leaf)
            doc.owners[flat] = top

    wandb_tags: list[str] = []
    for tag in run.tags:
        if 1 <= len(tag) <= 64 and tag not in wandb_tags:
            wandb_tags.append(tag)
        elif tag not in wandb_tags:
            doc.warnings.append(
                Warning_(
                    source_id=sid,
                    code="truncated",
                    message=f"tag {tag[:80]!r} is not 1-64 characters long, as W&B requires; "
                    "left out",
                )
            )
    for key, value in extra.items():
        if m.is_wandb_tag(key, value) and key not in wandb_tags:
            wandb_tags.append(key)
    doc.wandb_tags = wandb_tags
    for key, text in (
        (NAME_TAG, run_name(run)),
        (NOTES_TAG, run.notes),
        (GROUP_TAG, group_of(run, m)),
        (JOB_TYPE_TAG, run_field(run, JOB_TYPE)),
    ):
        if text:
            doc.tags[key] = text
    for tag in wandb_tags:
        doc.tags[TAG_PREFIX + tag] = "true"
    return doc


def run_name(run: Run) -> str:
    return run.name or run.header.name or run.header.native_id


def group_of(run: Run, m: WandbMapping) -> str | None:
    """The source group; else, for a nested run, its parent's W&B run id (computed
    from the parent's source identity, so it is the same whichever is written first)."""
    group = run_field(run, GROUP)
    if group:
        return str(group)
    if run.parent_source_id and m.group_from_parent:
        return m.run_id_for(run.parent_source_id)
    return None


def wandb_label(key: str, value: str) -> str:
    """A neutral tag as a W&B run tag. W&B run tags are bare labels, so only a flag
    (value "true" or empty) can be one: ``wandb.tag.NAME`` is ``NAME``; any other key has
    each run of characters other than letters, digits and ``-`` turned into ``-``
    (``bridge.source_deleted`` → ``bridge-source-deleted``). Raises RunError otherwise."""
    if value.strip().lower() not in ("", "true"):
        raise RunError(f"W&B run tags have no values: cannot write tag {key}={value!r}")
    if key.startswith(TAG_PREFIX):
        label = key[len(TAG_PREFIX) :]
    else:
        label = _LABEL_BAD.sub("-", key).strip("-")
    if not _WANDB_TAG.fullmatch(label) or len(label) > MAX_TAG_LEN:
        raise RunError(f"tag {key!r} is no valid W&B run tag ({label!r})")
    return label
