"""MLflow 3 logged models as a source: faithful records the MLflow writer copies field by
field (logged_copy.py), and the run-less models reported by name.

A logged model travels as a model-typed :class:`ArtifactVersion` (source id
``mlflow:URI#model/<id>``, shared with registry versions made from it, so one copy serves
both). Its ``metadata[RECORD_KEY]`` holds what MLflow keeps on the model: name, params,
tags, status, model type, and every metric with its run (as a source run id), step,
timestamp, value and dataset name/digest. The metric rows ride with the model, not with
the run's :class:`MetricChunk` stream: MLflow keeps them in a table of their own
(``logged_model_metrics``, which is what carries ``model_id`` and the dataset fields; the
run's ``metrics`` table has neither), a model has few of them, and the writer can only
remap them once the model's copy exists, i.e. after the run's history is written. A
W&B destination receives the record as artifact metadata.

Models no run made (``initialize_logged_model`` outside a run): no run carries them; they
are workspace items of kind ``model`` (models_items.py). Only when a pass leaves that kind
out does :func:`report_orphans` name each one on the reader's notices channel (code
``logged-model-not-copied``), once per listing of its experiment.

A model changes without its run changing (a tag set, a status reached, a metric logged
for it by another run): :func:`run_digests` folds each run's models into its listed
fingerprint (runs without models keep theirs byte for byte), so the run is read again
and its copy's model follows (logged_copy.sync_run).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.registry import MANIFEST_PATH, SOURCE_ID_TAG
from bridge.schema import ArtifactVersion, ManifestEntry

#: Key of the faithful logged-model record in ``ArtifactVersion.metadata``.
RECORD_KEY = "mlflow_logged_model"
PAGE = 100


def status_name(model: Any) -> str:
    status = model.status
    return str(getattr(status, "name", None) or status)


def experiment_models(client: Any, experiment_id: str) -> list[Any]:
    """Every logged model of one experiment (metrics included), oldest first."""
    found: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[str(experiment_id)], max_results=PAGE, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda m: (m.creation_timestamp or 0, m.model_id))


def record(store: Any, model: Any) -> dict[str, Any]:
    """What MLflow keeps on ``model``, run ids as source identities (see the module doc)."""
    display = store.display_uri

    def run_sid(run_id: str | None) -> str | None:
        return object_source_id(display, run_id) if run_id else None

    metrics = [
        {
            "key": m.key,
            "value": m.value,
            "step": m.step,
            "timestamp": m.timestamp,
            "run": run_sid(m.run_id),
            "dataset_name": m.dataset_name,
            "dataset_digest": m.dataset_digest,
        }
        for m in model.metrics or []
    ]
    metrics.sort(key=lambda r: (r["run"] or "", r["key"], r["step"], r["timestamp"]))
    return {
        "model_id": model.model_id,
        "name": model.name,
        "params": dict(sorted((model.params or {}).items())),
        "tags": {k: v for k, v in sorted((model.tags or {}).items()) if k != SOURCE_ID_TAG},
        "status": status_name(model),
        "model_type": model.model_type,
        "source_run": run_sid(model.source_run_id),
        "metrics": metrics,
    }


def model_artifact(
    store: Any, model: Any, direction: str, step: int | None, content: bool
) -> ArtifactVersion:
    """The model as an artifact record; with ``content``, its files listed for copying
    (opened through the registry reader's ``open_entry``, by the ``root`` locator)."""
    display = store.display_uri
    meta: dict[str, Any] = {"model_id": model.model_id}
    if step is not None:
        meta["step"] = step
    meta.update(  # as MLflow names them (what reports and a W&B copy show)
        params=dict(model.params or {}),
        tags=dict(model.tags or {}),
        status=status_name(model),
        artifact_location=model.artifact_location,
        model_type=model.model_type,
        source_run_id=model.source_run_id,
        creation_timestamp=model.creation_timestamp,
    )
    meta[RECORD_KEY] = record(store, model)
    manifest: list[ManifestEntry] = []
    root = str(model.artifact_location or "")
    if content and root:
        skip = {MANIFEST_PATH} if SOURCE_ID_TAG in (model.tags or {}) else set()
        listings = store.registry._listings
        if root not in listings:
            listings[root] = list(store.registry._walk(root))
        manifest = [ManifestEntry(path=p, size=s) for p, s in listings[root] if p not in skip]
    listing = json.dumps(sorted((e.path, e.size) for e in manifest), separators=(",", ":"))
    return ArtifactVersion(
        name=model.name or model.model_id,
        type="model",
        version=model.model_id,
        digest=hashlib.sha256(listing.encode()).hexdigest()[:32],
        direction="logged" if direction == "logged" else "used",
        metadata=meta,
        manifest=manifest,
        source_id=object_source_id(display, f"model/{model.model_id}"),
        producer_source_id=(
            object_source_id(display, model.source_run_id) if model.source_run_id else None
        ),
        created_at_ms=model.creation_timestamp,
        locator={"root": root} if content and root else {},
    )


def listed_models(store: Any, experiment_id: str) -> list[Any]:
    """The experiment's logged models for a listing; none where the store has no such API.
    Kept on ``store`` for the item pass's one :func:`listed_models_once` of the same sync."""
    if not hasattr(store.client, "search_logged_models"):
        return []
    try:
        found = experiment_models(store.client, experiment_id)
    except Exception:  # noqa: BLE001 - a store without logged models (MLflow < 3 server)
        return []
    store.__dict__.setdefault("_models_listed", {})[str(experiment_id)] = found
    return found


def listed_models_once(store: Any, experiment_id: str) -> list[Any]:
    """The listing the run pass made of the experiment (taken: a later pass lists again),
    else a new one: the item pass lists run-less models without a second request."""
    kept = store.__dict__.get("_models_listed", {}).pop(str(experiment_id), None)
    if kept is not None:
        return list(kept)
    listed = listed_models(store, experiment_id)
    store.__dict__.get("_models_listed", {}).pop(str(experiment_id), None)
    return listed


def run_digests(models: list[Any]) -> dict[str, str]:
    """Per run id: a hash of the models it made (status, update time, tags, params, metric
    count) and of its own metric rows on other models, so a model-only change makes the
    run that carries it read again — and no other run."""
    parts: dict[str, list[Any]] = {}
    for m in models:
        if m.source_run_id:
            parts.setdefault(str(m.source_run_id), []).append(
                [
                    m.model_id,
                    status_name(m),
                    m.last_updated_timestamp,
                    sorted((m.tags or {}).items()),
                    sorted((m.params or {}).items()),
                    len(m.metrics or []),
                ]  # fmt: skip
            )
        rows: dict[str, int] = {}
        for x in m.metrics or []:
            if x.run_id and x.run_id != m.source_run_id:
                rows[x.run_id] = rows.get(x.run_id, 0) + 1
        for run_id, count in rows.items():
            parts.setdefault(str(run_id), []).append([m.model_id, count])
    return {
        run_id: hashlib.sha256(json.dumps(sorted(p, key=str), default=str).encode()).hexdigest()
        for run_id, p in parts.items()
    }


def report_orphans(store: Any, models: list[Any], project_source_id: str) -> None:
    """Name every logged model of the experiment that no run made (not copied)."""
    for m in models:
        if m.source_run_id:
            continue
        store.notices.add(
            object_source_id(store.display_uri, f"model/{m.model_id}"),
            "logged-model-not-copied",
            f"logged model {m.name!r} ({m.model_id}, {status_name(m)}) of experiment "
            f"{project_source_id}: no run made it, so no run carries it; not copied",
        )
