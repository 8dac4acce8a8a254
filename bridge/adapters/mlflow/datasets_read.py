"""MLflow 3 evaluation datasets, read: :class:`DatasetReader` and the helpers the writer
(``datasets_write``) shares — the raw tracking store, record conversion, fingerprints.

Datasets live in SQL tracking stores only (sqlite, PostgreSQL ..., or an ``mlflow server``
with one behind); a file store has none, so nothing is listed there. The calls are the
store's own (``search_datasets``, ``get_dataset``, ``get_dataset_experiment_ids``,
``_load_dataset_records`` paged): ``mlflow.genai.datasets`` wraps the same calls but always
on the process-wide tracking URI, and ``merge_records`` stamps the current user into records.

A dataset is in scope when it is linked to an experiment in scope; its header lists every
linked experiment (in scope or not), named as :meth:`project_of` names it for runs.
Records are matched between source and copy by their inputs, as MLflow itself dedupes them
(:func:`input_hash`); ids and times of datasets and records are each store's own.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import KindReader
from bridge.errors import BridgeError
from bridge.schema_items import (
    RECORD_STAMPS,
    DatasetRecord,
    EvalDataset,
    ItemHeader,
    ItemProject,
)

#: Store kinds that hold evaluation datasets (SQL stores; servers with one behind).
DATASET_STORES = ("sqlite", "sql", "http")
BRIDGE_PREFIX = "bridge."
RECORDS_PAGE = 1000  # records per ``_load_dataset_records`` call
SEARCH_PAGE = 200  # datasets per ``search_datasets`` call
EXPERIMENTS_PER_SEARCH = 100  # experiment ids per ``search_datasets`` call


def raw_store(store: Any) -> Any:
    """The MLflow tracking store behind ``store.client`` (SqlAlchemyStore or RestStore)."""
    found = getattr(getattr(store.client, "_tracking_client", None), "store", None)
    if found is None:
        raise BridgeError(f"{store.display_uri}: no MLflow tracking store behind the client")
    return found


def holds_datasets(store: Any) -> bool:
    """True when ``store`` (an MlflowReader/Writer) can hold evaluation datasets."""
    return str(store.kind) in DATASET_STORES


def normalized_json(text: str | None) -> str | None:
    """A JSON text with sorted keys (MLflow writes schema keys in first-seen order, which
    says nothing about the data), unchanged when it is not JSON."""
    if not text:
        return text
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return text


def input_hash(inputs: dict[str, Any]) -> str:
    """How MLflow dedupes records within a dataset (one record per distinct inputs)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def record_of(rec: Any) -> DatasetRecord:
    """A neutral record from an MLflow ``DatasetRecord``, every field as the store has it."""
    source = rec.source.to_dict() if rec.source is not None else None
    return DatasetRecord(
        source_record_id=rec.dataset_record_id,
        inputs=dict(rec.inputs or {}),
        expectations=rec.expectations,
        outputs=rec.outputs,
        tags=rec.tags,
        source=source,
        created_time_ms=rec.created_time,
        last_update_time_ms=rec.last_update_time,
    )


def record_content(rec: DatasetRecord) -> str:
    """Digest of what a copy of the record must hold (not its id or times)."""
    body = rec.model_dump(mode="json", exclude={"source_record_id", *RECORD_STAMPS})
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def iter_records(raw: Any, dataset_id: str) -> Iterator[DatasetRecord]:
    """Every record, oldest first, a page at a time (the store's cursor paging)."""
    token: str | None = None
    while True:
        page, token = raw._load_dataset_records(
            dataset_id, max_results=RECORDS_PAGE, page_token=token
        )
        for rec in page:
            yield record_of(rec)
        if not token:
            return


def own_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """A dataset's tags without the bridge's bookkeeping (``bridge.*``)."""
    return {
        str(k): str(v) for k, v in sorted((tags or {}).items()) if not k.startswith(BRIDGE_PREFIX)
    }


def dataset_fingerprint(ds: Any, experiment_ids: list[str]) -> str:
    """Changes on any upsert (last update time, digest), record deletion (profile), tag
    change and experiment link: all from the listing plus one link call, no records."""
    body = {
        "name": ds.name,
        "digest": ds.digest,
        "updated": ds.last_update_time,
        "tags": dict(sorted((ds.tags or {}).items())),
        "schema": normalized_json(ds.schema),
        "profile": normalized_json(ds.profile),
        "experiments": sorted(experiment_ids),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def dataset_of(header: ItemHeader, ds: Any, records: list[DatasetRecord]) -> EvalDataset:
    """The neutral dataset: entity fields as the store has them, schema keys sorted."""
    return EvalDataset(
        header=header,
        name=ds.name,
        tags=own_tags(ds.tags),
        columns_json=normalized_json(ds.schema),
        profile_json=normalized_json(ds.profile),
        created_by=ds.created_by,
        created_time_ms=ds.created_time,
        records=records,
    )


class DatasetReader(KindReader):
    """Lists the datasets linked to the experiments in scope; reads one whole."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._experiments: dict[str, Any] = {}  # id -> experiment, in scope or looked up

    def list(self) -> Iterator[ItemHeader]:
        if not holds_datasets(self.store):
            return
        raw = raw_store(self.store)
        in_scope = {str(e.experiment_id): e for e in self.store.experiments()}
        self._experiments.update(in_scope)
        ids = sorted(in_scope, key=lambda i: (len(i), i))
        seen: set[str] = set()
        for start in range(0, len(ids), EXPERIMENTS_PER_SEARCH):
            chunk = ids[start : start + EXPERIMENTS_PER_SEARCH]
            for ds in self._search(raw, chunk):
                if ds.dataset_id in seen:
                    continue
                seen.add(ds.dataset_id)
                linked = [str(i) for i in raw.get_dataset_experiment_ids(ds.dataset_id)]
                yield ItemHeader(
                    kind="dataset",
                    source_id=object_source_id(self.store.display_uri, f"dataset/{ds.dataset_id}"),
                    name=ds.name,
                    projects=self._projects(linked),
                    fingerprint=dataset_fingerprint(ds, linked),
                    locator={"dataset_id": ds.dataset_id},
                )

    def _search(self, raw: Any, experiment_ids: Sequence[str]) -> Iterator[Any]:
        return search_pages(raw, experiment_ids=experiment_ids)

    def _projects(self, experiment_ids: Sequence[str]) -> builtins.list[ItemProject]:
        """Every linked experiment as its runs' project would name it (out-of-scope ones
        too: the writer links the copy to them when they have a copy); a deleted one that
        cannot be looked up is left out."""
        found: builtins.list[ItemProject] = []
        for exp_id in sorted(set(experiment_ids), key=lambda i: (len(i), i)):
            exp = self._experiments.get(exp_id)
            if exp is None:
                try:
                    exp = self.store.client.get_experiment(exp_id)
                except Exception:  # gone meanwhile: nothing to link to
                    continue
                self._experiments[exp_id] = exp
            project = self.store.project_of(exp)
            found.append(ItemProject(source_id=project.source_id, name=project.name))
        return found

    def read(self, header: ItemHeader) -> EvalDataset:
        raw = raw_store(self.store)
        dataset_id = str(header.locator.get("dataset_id") or header.source_id.rsplit("/", 1)[-1])
        ds = raw.get_dataset(dataset_id)
        # The neutral record holds every record (a list): ~1 KB each, so 100k records are
        # ~100 MB in memory for the one dataset being copied.
        return dataset_of(header, ds, list(iter_records(raw, dataset_id)))


def search_pages(raw: Any, **filters: Any) -> Iterator[Any]:
    """Every dataset a store's ``search_datasets`` finds, oldest first, page by page."""
    token: str | None = None
    while True:
        page = raw.search_datasets(
            **filters, max_results=SEARCH_PAGE, order_by=["created_time ASC"], page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return
