"""What an update of a trace's copy must write: the source trace compared with the copy as
the destination holds it (pure; the writer applies the payload).

Only what is new or changed is written: info fields (state IN_PROGRESS -> OK, duration,
previews), tags, metadata, spans that arrived or changed since, and assessments that are
new or changed (found by the source assessment id each copy carries in its metadata).
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import ItemChange
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG
from bridge.adapters.mlflow.traces_convert import MODEL_ID, SOURCE_RUN
from bridge.schema_items import Assessment, Trace

SOURCE_TRACE_TAG = "bridge.source_trace_id"
SOURCE_ASSESSMENT_KEY = "bridge.source_assessment_id"
INFO_FIELDS = (
    "request_time_ms",
    "execution_duration_ms",
    "state",
    "request_preview",
    "response_preview",
    "client_request_id",
)


def diff_trace(
    item: Trace, copy: Trace, dest_id: str, meta: dict[str, str], warnings: list[str]
) -> ItemChange:
    """The update (or nothing) that makes the copy ``dest_id`` hold what ``item`` holds;
    ``meta``: the copy's metadata as it should be (links rewritten)."""
    changes: list[str] = []
    info = False
    for field in INFO_FIELDS:
        was, now = getattr(copy, field), getattr(item, field)
        if was != now:
            changes.append(f"{field}: {_short(was)} -> {_short(now)}")
            info = True
    tags = {**item.tags, ITEM_SOURCE_TAG: item.header.source_id}
    if dest_id != item.trace_id:
        tags[SOURCE_TRACE_TAG] = item.trace_id
    for key in sorted(tags.keys() | copy.tags.keys()):
        was, now = copy.tags.get(key), tags.get(key)
        if was != now:
            changes.append(f"tag {key}: {_short(was)} -> {_short(now)}")
            info = info or now is not None
    drop = sorted(copy.tags.keys() - tags.keys())
    plain = {k: v for k, v in meta.items() if k not in (SOURCE_RUN, MODEL_ID)}
    for key in sorted(plain.keys() | copy.metadata.keys()):
        was, now = copy.metadata.get(key), plain.get(key)
        if was == now:
            continue
        if now is None:
            warnings.append(
                f"trace {item.trace_id}: metadata {key} is gone at the source; MLflow keeps "
                "trace metadata once written: left on the copy"
            )
        else:
            changes.append(f"metadata {key}: {_short(was)} -> {_short(now)}")
            info = True
    for key, linked, what in (
        (SOURCE_RUN, copy.run_source_id, "run"),
        (MODEL_ID, copy.model_source_id, "logged model"),
    ):
        if key in meta and linked is None:
            changes.append(f"link {what} {meta[key]}")
            info = True
    spans = _span_changes(item, copy, changes, warnings)
    created, updates, ids = _assessment_changes(item, copy, changes)
    if updates:
        warnings.append(
            f"trace {item.trace_id}: {len(updates)} changed assessment(s) updated in place: "
            "MLflow stamps the update time itself (the source's is not kept)"
        )
    if not changes:
        return ItemChange(action="unchanged", dest_id=dest_id, warnings=warnings)
    return ItemChange(
        action="update",
        dest_id=dest_id,
        changes=changes,
        warnings=warnings,
        payload={
            "trace_id": dest_id,
            "metadata": meta,
            "info": info,
            "drop_tags": drop,
            "spans": spans,
            "assessments": created,
            "updates": updates,
            "assessment_ids": ids,
        },
    )


def _span_changes(item: Trace, copy: Trace, changes: list[str], warnings: list[str]) -> list[str]:
    held = {s.span_id: s for s in copy.spans}
    new = [s.span_id for s in item.spans if s.span_id not in held]
    changed = [s.span_id for s in item.spans if s.span_id in held and held[s.span_id] != s]
    if new:
        changes.append(f"+{len(new)} spans")
    if changed:
        changes.append(f"{len(changed)} spans changed")
    extra = held.keys() - {s.span_id for s in item.spans}
    if extra:
        warnings.append(
            f"trace {item.trace_id}: {len(extra)} span(s) of the copy are not in the source "
            "(MLflow deletes no single span): left on the copy"
        )
    return new + changed


def _content(a: Assessment) -> dict[str, Any]:
    """What an assessment update can change (not ids, validity or times)."""
    body = a.model_dump(
        mode="json",
        exclude={
            "source_assessment_id",
            "overrides",
            "valid",
            "create_time_ms",
            "last_update_time_ms",
        },
    )
    body["metadata"].pop(SOURCE_ASSESSMENT_KEY, None)
    return body


def _assessment_changes(
    item: Trace, copy: Trace, changes: list[str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """(source ids to create, source ids to update, source id -> copy id)."""
    held: dict[str, Assessment] = {}
    for a in copy.assessments:
        source_aid = a.metadata.get(SOURCE_ASSESSMENT_KEY)
        if source_aid is not None:
            held[source_aid] = a
    created = [
        a.source_assessment_id for a in item.assessments if a.source_assessment_id not in held
    ]
    updates = [
        a.source_assessment_id
        for a in item.assessments
        if a.source_assessment_id in held and _content(held[a.source_assessment_id]) != _content(a)
    ]
    if created:
        changes.append(f"+{len(created)} assessments")
    for aid in updates:
        changes.append(f"assessment {held[aid].name} ({aid}) changed")
    return created, updates, {aid: a.source_assessment_id for aid, a in held.items()}


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
