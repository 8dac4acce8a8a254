"""What ``--two-way`` may edit on an MLflow run, read from and written to its tags.

* notes: ``mlflow.note.content`` (what the UI's description box edits);
* for runs copied from W&B: the W&B tag list — one tag ``<tag_prefix><tag>`` = "true" per
  W&B tag (what a person adds or removes in the UI) and the JSON list ``<prefix>tags``;
* for runs from elsewhere: labels — every tag that is not MLflow's (``mlflow.*``), the
  bridge's (``bridge.*``) or one the W&B mapping owns.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.adapters.base import batched
from bridge.mapping import Mapping
from bridge.schema import Editable

NOTE_TAG = "mlflow.note.content"
TAGS_PER_BATCH = 100


def _owned(mapping: Mapping) -> tuple[str, ...]:
    return (
        "mlflow.",
        "bridge.",
        mapping.source_tag_prefix,
        mapping.summary_tag_prefix,
        mapping.tag_prefix,
    )


def is_label(key: str, mapping: Mapping) -> bool:
    return not key.startswith(_owned(mapping))


def editable_of_tags(tags: dict[str, str], mapping: Mapping, wandb_sourced: bool) -> Editable:
    """The editable fields a run's tags hold."""
    if wandb_sourced:
        if mapping.per_tag_tags:
            names = [
                k[len(mapping.tag_prefix) :]
                for k, v in tags.items()
                if k.startswith(mapping.tag_prefix) and v == "true"
            ]
        else:
            names = json.loads(tags.get(f"{mapping.source_tag_prefix}tags") or "[]")
        return Editable(holds={"notes", "tags"}, notes=tags.get(NOTE_TAG), tags=names)
    labels = {k: v for k, v in tags.items() if is_label(k, mapping)}
    return Editable(holds={"notes", "labels"}, notes=tags.get(NOTE_TAG), labels=labels)


def is_editable_tag(key: str, mapping: Mapping) -> bool:
    """Tags the one-way planner leaves to the two-way pass."""
    return (
        key == NOTE_TAG
        or key == f"{mapping.source_tag_prefix}tags"
        or key.startswith(mapping.tag_prefix)
        or is_label(key, mapping)
    )


def apply_edits(
    client: Any, run_id: str, tags: dict[str, str], changes: dict[str, str | None], mapping: Mapping
) -> None:
    """Write editable fields ("notes", "tags", "label:<key>"; None = remove) as tags."""
    from mlflow.entities import RunTag

    to_set: dict[str, str] = {}
    to_delete: list[str] = []

    def put(key: str, value: str | None) -> None:
        if value is None or value == "":
            if key in tags:
                to_delete.append(key)
        else:
            to_set[key] = value

    for field, value in changes.items():
        if field == "notes":
            put(NOTE_TAG, value)
        elif field == "tags":
            names = sorted(set(json.loads(value or "[]")))
            put(f"{mapping.source_tag_prefix}tags", json.dumps(names) if names else None)
            if mapping.per_tag_tags:
                for key in tags:
                    if (
                        key.startswith(mapping.tag_prefix)
                        and key[len(mapping.tag_prefix) :] not in names
                    ):
                        to_delete.append(key)
                for name in names:
                    to_set[f"{mapping.tag_prefix}{name}"] = "true"
        elif field.startswith("label:"):
            put(field[len("label:") :], value)
    for batch in batched(sorted(to_set.items()), TAGS_PER_BATCH):
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in batch])
    for key in to_delete:
        client.delete_tag(run_id, key)
