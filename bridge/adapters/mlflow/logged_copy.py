"""Faithful copies of MLflow logged models (an MLflow source's record, logged_read.py).

A model whose artifact carries ``metadata[RECORD_KEY]`` is created with the source's own
name, params, tags and model type (plus the identity tags ``bridge.source_id`` and
``bridge.source_uri``), linked to the copy of the run being written as ``source_run_id``;
``mlflow.modelVersions`` is left to the registry writer, which sets it naming the
destination's versions. Its files are uploaded as they are (no ``bridge/manifest.json`` of the bridge's: the
model's artifacts stay the source's), then it is finalized with the source's status
(READY or FAILED; a PENDING model stays PENDING), then tagged ``bridge.model_copied`` —
last, so a crash leaves a model the next call finishes.

Model metrics (``logged_model_metrics`` rows, each tied to a run) are written through
``log_batch`` on the copy of their run with ``model_id`` = the copy's id and the source's
dataset name/digest. MLflow writes such a point into the run's own history as well; that
point is already there (the run's history is written first, and the metrics table
ignores an identical point), so nothing is doubled. Which side writes a row:

* the run's sync, last (:func:`sync_run`, after ``bridge.complete``): its own rows, for
  models whose copy is done; also the run-output links and a changed tag or status;
* the model's copy (:func:`create`): rows of runs whose copies are already complete.

Both sides hold one lock and write only rows the copy lacks, so a row is written once
whatever order runs are synced in, and a second sync writes nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from bridge.adapters.base import OpenEntry
from bridge.adapters.mlflow.dest_index import _filter_literal
from bridge.adapters.mlflow.logged_read import RECORD_KEY, status_name
from bridge.adapters.mlflow.names import COMPLETE_TAG
from bridge.adapters.mlflow.once import create_once
from bridge.adapters.mlflow.registry import (
    MODEL_VERSIONS_TAG,
    SOURCE_ID_TAG,
    SOURCE_URI_TAG,
    logged_model_name,
)
from bridge.schema import ArtifactVersion, ManifestEntry, Run

COPIED_TAG = "bridge.model_copied"
BATCH = 1000
#: One per process: a model's copy and a run's end never both miss each other's rows.
_ROWS_LOCK = threading.Lock()


def is_faithful(art: ArtifactVersion) -> bool:
    return isinstance(art.metadata.get(RECORD_KEY), dict)


def is_done(model: Any) -> bool:
    return (model.tags or {}).get(COPIED_TAG) == "true"


def create(
    lm: Any,
    project_dest_id: str,
    run_dest_id: str | None,
    art: ArtifactVersion,
    files: Sequence[tuple[ManifestEntry, OpenEntry]],
) -> str:
    """Create (or finish) the faithful copy of ``art``; return ``models:/<id>``."""
    assert art.source_id is not None
    rec: dict[str, Any] = art.metadata[RECORD_KEY]
    source_id = art.source_id
    existing = lm._models_with_source(source_id)
    done = next((m for m in existing if is_done(m)), None)
    if done is not None:
        return f"models:/{done.model_id}"
    client = lm.client
    if existing:
        model = existing[0]  # left unfinished by an interrupted call: finish it
    else:
        tags = {**_own_tags(rec), SOURCE_ID_TAG: source_id}
        if lm.store.source_uri:
            tags[SOURCE_URI_TAG] = lm.store.source_uri
        model = create_once(
            lm.store.kind,
            lambda: client.create_logged_model(
                str(project_dest_id),
                name=logged_model_name(rec.get("name") or art.name),
                source_run_id=run_dest_id,
                tags=tags,
                params=dict(rec.get("params") or {}),
                model_type=rec.get("model_type"),
            ),
            lambda: next(iter(lm._models_with_source(source_id)), None),
            f"logged model {art.name}",
        )
    model_id = str(model.model_id)
    lm._upload(model_id, art, files)
    _set_status(client, model_id, status_name(model), rec.get("status"))
    with _ROWS_LOCK:
        client.set_logged_model_tags(model_id, {COPIED_TAG: "true"})
        for run_sid, rows in _by_run(rec.get("metrics") or []).items():
            dest_run = _complete_copy(lm, run_sid)
            if dest_run is not None:
                write_rows(client, model_id, dest_run, rows)
    return f"models:/{model_id}"


def _own_tags(rec: dict[str, Any]) -> dict[str, str]:
    """The source's tags but ``mlflow.modelVersions``: the registry writer keeps that one
    naming the destination's own versions (registry_write.py)."""
    return {k: v for k, v in (rec.get("tags") or {}).items() if k != MODEL_VERSIONS_TAG}


def _set_status(client: Any, model_id: str, current: str, wanted: str | None) -> None:
    from mlflow.entities import LoggedModelStatus

    if wanted in ("READY", "FAILED") and current != wanted:
        client.finalize_logged_model(model_id, LoggedModelStatus(wanted))


def _by_run(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("run"):
            out.setdefault(str(row["run"]), []).append(row)
    return out


def _complete_copy(lm: Any, run_source_id: str) -> str | None:
    """The complete destination copy of a source run (its history all written), or None."""
    quoted = _filter_literal(run_source_id)
    if quoted is None:
        return None
    experiments = lm._bridge_experiments()
    for n in range(0, len(experiments), 100):
        for mlrun in lm.client.search_runs(
            experiments[n : n + 100],
            filter_string=f"tags.`{SOURCE_ID_TAG}` = {quoted}",
            max_results=100,
        ):
            tags = mlrun.data.tags
            if tags.get(SOURCE_ID_TAG) == run_source_id and tags.get(COMPLETE_TAG) == "true":
                return str(mlrun.info.run_id)
    return None


def _row_key(key: str, step: Any, ts: Any, value: float, name: Any, digest: Any) -> tuple:
    shown: Any = "nan" if isinstance(value, float) and math.isnan(value) else float(value)
    return (key, int(step), int(ts), shown, name or None, digest or None)


def write_rows(client: Any, model_id: str, dest_run: str, rows: list[dict[str, Any]]) -> int:
    """Write the model-metric rows the copy lacks on run ``dest_run``; return how many."""
    from mlflow.entities import Metric

    have = {
        _row_key(m.key, m.step, m.timestamp, m.value, m.dataset_name, m.dataset_digest)
        for m in client.get_logged_model(model_id).metrics or []
        if m.run_id == dest_run
    }
    todo = []
    for r in rows:
        k = _row_key(r["key"], r["step"], r["timestamp"], r["value"], r.get("dataset_name"),
                     r.get("dataset_digest"))  # fmt: skip
        if k in have:
            continue
        have.add(k)
        todo.append(
            Metric(
                r["key"],
                float(r["value"]),
                int(r["timestamp"]),
                int(r["step"]),
                model_id=model_id,
                dataset_name=r.get("dataset_name"),
                dataset_digest=r.get("dataset_digest"),
            )
        )
    for n in range(0, len(todo), BATCH):
        client.log_batch(dest_run, metrics=todo[n : n + BATCH])
    return len(todo)


def sync_run(lm: Any, dest_id: str, run: Run) -> None:
    """At the end of a run's sync: its model-metric rows, its run-output links, and the
    tags and status of the models it made, on the copies that are done."""
    from mlflow.entities import LoggedModelOutput

    client = lm.client
    outputs: list[Any] | None = None
    for art in run.artifacts:
        if art.type != "model" or not art.source_id or not is_faithful(art):
            continue
        rec: dict[str, Any] = art.metadata[RECORD_KEY]
        rows = [r for r in rec.get("metrics") or [] if r.get("run") == run.header.source_id]
        step = art.metadata.get("step")
        if not rows and step is None and art.direction != "logged":
            continue
        with _ROWS_LOCK:
            copy = next((m for m in lm._models_with_source(art.source_id) if is_done(m)), None)
            if copy is None:
                continue  # not copied yet: its copy writes these rows (see the module doc)
            if rows:
                write_rows(client, copy.model_id, dest_id, rows)
        if step is not None:
            if outputs is None:
                outputs = list(
                    getattr(client.get_run(dest_id).outputs, "model_outputs", None) or []
                )
            if not any(o.model_id == copy.model_id for o in outputs):
                client.log_outputs(dest_id, [LoggedModelOutput(model_id=copy.model_id, step=step)])
        if art.direction == "logged":
            _follow(client, copy, rec)


def _follow(client: Any, copy: Any, rec: dict[str, Any]) -> None:
    """Tags set and a status reached at the source since the copy was made."""
    tags = copy.tags or {}
    changed = {k: v for k, v in _own_tags(rec).items() if tags.get(k) != v}
    if changed:
        client.set_logged_model_tags(copy.model_id, changed)
    _set_status(client, copy.model_id, status_name(copy), rec.get("status"))
