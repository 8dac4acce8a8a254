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
    assessed = _assessment_changes(item, copy, changes)
    if assessed["updates"]:
        warnings.append(
            f"trace {item.trace_id}: {len(assessed['updates'])} changed assessment(s) that "
            "another overrides updated in place: MLflow stamps the update time itself (the "
            "source's is not kept)"
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
            **assessed,
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


def _assessment_changes(item: Trace, copy: Trace, changes: list[str]) -> dict[str, Any]:
    """What the copy's assessments need: ``create`` (source ids), ``replace`` (source ids
    of changed ones: deleted and created again, so the source's times are kept),
    ``updates`` (changed ones another assessment overrides: updated in place, keeping the
    id the override points at), ``delete`` (copy ids whose source is gone) and
    ``assessment_ids`` (source id -> copy id)."""
    held: dict[str, Assessment] = {}
    for a in copy.assessments:
        source_aid = a.metadata.get(SOURCE_ASSESSMENT_KEY)
        if source_aid is not None:
            held[source_aid] = a
    overridden = {a.overrides for a in copy.assessments if a.overrides}
    source_ids = {a.source_assessment_id for a in item.assessments}
    out: dict[str, Any] = {
        "assessments": [
            a.source_assessment_id for a in item.assessments if a.source_assessment_id not in held
        ],
        "replace": [],
        "updates": [],
        "delete": sorted(
            a.source_assessment_id for aid, a in held.items() if aid not in source_ids
        ),
        "assessment_ids": {aid: a.source_assessment_id for aid, a in held.items()},
    }
    for a in item.assessments:
        mine = held.get(a.source_assessment_id)
        if mine is None or _content(mine) == _content(a):
            continue
        way = "updates" if mine.source_assessment_id in overridden else "replace"
        out[way].append(a.source_assessment_id)
        changes.append(f"assessment {a.name} ({a.source_assessment_id}) changed")
    if out["assessments"]:
        changes.append(f"+{len(out['assessments'])} assessments")
    if out["delete"]:
        changes.append(f"-{len(out['delete'])} assessments (gone at the source)")
    return out


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
