"""MLflow 3 logged models that no run made (``initialize_logged_model`` outside a run), as
workspace items of kind ``model``: a model a run made travels with that run
(logged_read.py); these have no run to carry them, so the item pass copies them.

Listing: the logged models of each experiment in scope whose ``source_run_id`` is unset
(none under a ``--run`` filter: they belong to no run; ``--since`` on their creation
time). The fingerprint hashes the listing (status, update time, tags, params, metric rows)
and the model's file listing, so a tag set, a status reached, a metric row another run
logs or a file added re-reads the model. The source identity is the one a run-made model
has (``mlflow:URI#model/<id>``): traces linking to the model find the copy by it.

Writing goes through the logged-model writer (logged_copy.create: name, params, tags,
model type, files, status, then ``bridge.model_copied``). Every model-metric row was
logged by a run (MLflow's ``logged_model_metrics.run_id`` is NOT NULL; ``log_metric``
with a model id outside a run starts one): a row is written on the copy of its run once
that copy is complete, by whichever side comes last (the model here, or the run's own
sync, logged_copy.sync_run), so rows of runs not copied yet wait and are not counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from bridge.adapters.mlflow import logged_read
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindReader
from bridge.adapters.mlflow.traces_read import since_ms
from bridge.schema import ArtifactVersion, ManifestEntry
from bridge.schema_items import (
    Item,
    ItemFile,
    ItemHeader,
    ItemProject,
    LoggedModelItem,
    ModelMetric,
)

BRIDGE_PREFIX = "bridge."
MODELS_PREFIX = "models:/"


def model_sid(display_uri: str, model_id: str) -> str:
    return object_source_id(display_uri, f"model/{model_id}")


def own_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """Tags as the source user set them: no ``bridge.*`` bookkeeping of a copy."""
    return {k: v for k, v in sorted((tags or {}).items()) if not k.startswith(BRIDGE_PREFIX)}


def _metrics(model: Any, run_sid: Any) -> list[ModelMetric]:
    """Its metric rows, each run named by ``run_sid(run id)``, in a stable order."""
    rows = [
        ModelMetric(
            key=m.key,
            value=float(m.value),
            step=int(m.step or 0),
            timestamp_ms=int(m.timestamp),
            run_source_id=run_sid(m.run_id) if m.run_id else None,
            dataset_name=m.dataset_name or None,
            dataset_digest=m.dataset_digest or None,
        )
        for m in model.metrics or []
    ]
    return sorted(rows, key=lambda r: (r.run_source_id or "", r.key, r.step, r.timestamp_ms))


def item_of(
    model: Any, header: ItemHeader, files: list[ItemFile], display_uri: str
) -> LoggedModelItem:
    """The neutral record of an MLflow logged model (a source's, or a copy read back),
    runs named by their identity in the store ``display_uri`` it was read from."""

    def run_sid(run_id: str) -> str:
        return object_source_id(display_uri, run_id)

    return LoggedModelItem(
        header=header,
        model_id=model.model_id,
        name=model.name or model.model_id,
        params=dict(sorted((model.params or {}).items())),
        tags=own_tags(model.tags),
        status=logged_read.status_name(model),
        model_type=model.model_type or None,  # a server answers "" for an unset type
        source_run_id=run_sid(model.source_run_id) if model.source_run_id else None,
        metrics=_metrics(model, run_sid),
        files=files,
        created_time_ms=model.creation_timestamp,
    )


class RunlessModelReader(KindReader):
    """Logged models no run made, of ``store.experiments()`` (see the module doc)."""

    def list(self) -> Iterator[ItemHeader]:
        store = self.store
        if store.options.run_ids:
            return
        start = since_ms(store.options.since)
        for exp in store.experiments():
            models = [
                m
                for m in logged_read.listed_models_once(store, exp.experiment_id)
                if not m.source_run_id and (start is None or (m.creation_timestamp or 0) >= start)
            ]
            if not models:
                continue
            project = store.project_of(exp)
            owner = ItemProject(source_id=project.source_id, name=project.name)
            for m in models:
                yield self._header(m, owner)

    def _header(self, model: Any, owner: ItemProject) -> ItemHeader:
        root = str(model.artifact_location or "")
        files = [[p, s] for p, s in self.store.registry._walk(root)] if root else []
        listing = [
            model.model_id,
            model.name,
            logged_read.status_name(model),
            model.last_updated_timestamp,
            model.model_type or None,
            sorted((model.tags or {}).items()),
            sorted((model.params or {}).items()),
            sorted(
                [
                    x.key,
                    repr(x.value),
                    x.step,
                    x.timestamp,
                    x.run_id,
                    x.dataset_name,
                    x.dataset_digest,
                ]
                for x in model.metrics or []
            ),  # fmt: skip
            files,
        ]
        text = json.dumps(listing, default=str, separators=(",", ":"))
        return ItemHeader(
            kind="model",
            source_id=model_sid(self.store.display_uri, model.model_id),
            name=model.name or model.model_id,
            projects=[owner],
            fingerprint=hashlib.sha256(text.encode()).hexdigest(),
            locator={"model_id": model.model_id, "root": root, "files": files},
        )

    def read(self, header: ItemHeader) -> Item:
        store = self.store
        model = store.client.get_logged_model(header.locator["model_id"])
        files = [ItemFile(path=p, size=s) for p, s in header.locator.get("files") or []]
        item = item_of(model, header, files, store.display_uri)
        origin = (model.tags or {}).get(ITEM_SOURCE_TAG)
        if origin is not None:  # a copy an earlier pass made: its identity, for two-way
            header.locator["origin"] = origin
        root = str(header.locator.get("root") or model.artifact_location or "")
        art = ArtifactVersion(name=item.name, type="model", locator={"root": root})

        def opener(path: str) -> IO[bytes]:
            return store.registry.open_entry(art, ManifestEntry(path=path))

        item.attach_opener(opener)
        return item
