"""MLflow 3 evaluation datasets, written: :class:`DatasetWriter`.

A copy is created with the store's own ``create_dataset`` (not the client's, which adds
the current user as ``mlflow.user``) carrying the source's tags plus the identity tag
``bridge.source_id`` — in the same call, so a copy is always found again — and its records
go in with ``upsert_dataset_records`` (not ``merge_records``, which stamps the current
user into every record). MLflow assigns dataset and record ids and times itself; the
source's creation time and author are kept in ``bridge.source_created_time`` /
``bridge.source_created_by``.

Records are matched by their inputs (MLflow keeps one record per distinct inputs). An
update writes only what differs: new records, changed ones (upserted; MLflow merges
expectations and tags key by key, so a record that lost a key or changed its source is
deleted and inserted again), records deleted at the source, tag changes, new experiment
links. The schema MLflow computes from the records; it cannot be set, so a schema that
comes out different is a warning.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.adapters.mlflow.datasets_read import (
    BRIDGE_PREFIX,
    dataset_fingerprint,
    dataset_of,
    holds_datasets,
    input_hash,
    iter_records,
    normalized_json,
    raw_store,
    record_content,
    search_pages,
)
from bridge.adapters.mlflow.datasets_schema import schema_order, simulate_schema
from bridge.adapters.mlflow.dest_index import _filter_literal
from bridge.adapters.mlflow.ids import object_source_id
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindWriter
from bridge.adapters.mlflow.names import SOURCE_ID_TAG
from bridge.errors import BridgeError
from bridge.schema_items import DatasetRecord, EvalDataset, ItemHeader, ItemProject

SOURCE_CREATED_TIME_TAG = "bridge.source_created_time"
SOURCE_CREATED_BY_TAG = "bridge.source_created_by"
UPSERT_BATCH = 500  # records per upsert call (one request body on a server)
STAMPS_WARNING = (
    "evaluation datasets: MLflow assigns dataset and record ids and creation/update times "
    "itself; the source's creation time and author are kept in the copy's tags "
    f"{SOURCE_CREATED_TIME_TAG} / {SOURCE_CREATED_BY_TAG}"
)


def _merged(dest: DatasetRecord, src: DatasetRecord) -> DatasetRecord:
    """What MLflow's upsert makes of ``dest`` given ``src`` (SqlEvaluationDatasetRecord.
    merge: outputs replaced, expectations and tags updated key by key, source kept)."""
    expectations = dest.expectations
    if src.expectations:
        expectations = {**(dest.expectations or {}), **src.expectations}
    tags = dest.tags
    if src.tags:
        tags = {**(dest.tags or {}), **src.tags}
    return dest.model_copy(
        update={"outputs": src.outputs, "expectations": expectations, "tags": tags}
    )


def _upsert_dict(rec: DatasetRecord) -> dict[str, Any]:
    return {
        "inputs": rec.inputs,
        "outputs": rec.outputs,
        "expectations": rec.expectations,
        "tags": rec.tags,
        "source": rec.source,
    }


class DatasetWriter(KindWriter):
    """Creates, updates and reads back copies of evaluation datasets."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._stamps_said = False

    def stored(self) -> bool:
        return holds_datasets(self.store)

    def _raw(self) -> Any:
        if not holds_datasets(self.store):
            raise BridgeError(
                f"{self.store.display_uri}: evaluation datasets need a SQL tracking store "
                "(sqlite, PostgreSQL, MySQL, or an mlflow server with one behind); "
                f"this is a {self.store.kind} store"
            )
        return raw_store(self.store)

    # ------------------------------------------------------------------ find

    def find(self, header: ItemHeader, links: ItemLinks) -> str | None:
        if not holds_datasets(self.store):
            return None
        raw = self._raw()
        quoted = _filter_literal(header.source_id)
        # MLflow 3.17 keeps backticks in a dataset filter's tag key (tags.`a.b` matches
        # nothing), so the dotted key goes bare: tags.bridge.source_id.
        key = f"tags.{ITEM_SOURCE_TAG}"
        filt = f"{key} = {quoted}" if quoted else f"{key} LIKE '%'"
        for ds in search_pages(raw, filter_string=filt):  # oldest first: the first copy wins
            if (ds.tags or {}).get(ITEM_SOURCE_TAG) == header.source_id:
                return str(ds.dataset_id)
        return None

    def _get(self, raw: Any, dest_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return raw.get_dataset(dest_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    # ------------------------------------------------------------------ plan

    def _want_tags(self, item: EvalDataset) -> dict[str, str]:
        tags = dict(item.tags)
        tags[ITEM_SOURCE_TAG] = item.header.source_id
        if item.created_time_ms is not None:
            tags[SOURCE_CREATED_TIME_TAG] = str(item.created_time_ms)
        if item.created_by:
            tags[SOURCE_CREATED_BY_TAG] = item.created_by
        return tags

    def _want_links(
        self, item: EvalDataset, links: ItemLinks, warnings: list[str]
    ) -> dict[str, str]:
        """Destination experiment id -> source experiment name, of every linked
        experiment that has a copy; a warning for each one that has none."""
        found: dict[str, str] = {}
        for project in item.header.projects:
            dest = links.project(project.source_id)
            if dest is None:
                warnings.append(
                    f"dataset {item.name!r}: linked experiment {project.name!r} has no copy "
                    "at the destination; that link is not made"
                )
            else:
                found.setdefault(str(dest), project.name)
        return found

    def plan(self, item: Any, dest_id: str | None, links: ItemLinks) -> ItemChange:
        assert isinstance(item, EvalDataset)
        raw = self._raw()
        warnings: list[str] = []
        want_links = self._want_links(item, links, warnings)
        want_tags = self._want_tags(item)
        dest = self._get(raw, dest_id) if dest_id else None
        if dest is None:
            if not self._stamps_said:
                warnings.append(STAMPS_WARNING)
                self._stamps_said = True
            every = list(range(len(item.records)))
            self._schema_warning(item, simulate_schema(None, self._ordered(item, every)), warnings)
            lines = [f"new dataset {item.name}", f"+{len(item.records)} records"]
            lines += [f"+link experiment {name}" for name in want_links.values()]
            created = {"tags": want_tags, "links": list(want_links)}
            return ItemChange(action="create", changes=lines, warnings=warnings, payload=created)
        assert dest_id is not None
        changes: list[str] = []
        if dest.name != item.name:
            warnings.append(
                f"dataset {item.name!r}: the copy is named {dest.name!r} (MLflow cannot "
                "rename a dataset)"
            )
        dest_tags = {str(k): str(v) for k, v in (dest.tags or {}).items()}
        set_tags = {k: v for k, v in want_tags.items() if dest_tags.get(k) != v}
        for key, value in sorted(set_tags.items()):
            old = dest_tags.get(key)
            changes.append(f"+tag {key}" if old is None else f"tag {key}: {old} -> {value}")
        del_tags = sorted(
            k for k in dest_tags if k not in want_tags and not k.startswith(BRIDGE_PREFIX)
        )
        changes += [f"-tag {key}" for key in del_tags]
        have_links = {str(i) for i in raw.get_dataset_experiment_ids(dest_id)}
        add_links = [i for i in want_links if i not in have_links]
        changes += [f"+link experiment {want_links[i]}" for i in add_links]
        upsert, delete, counts = self._plan_records(raw, item, dest_id)
        new, changed, replaced, removed = counts
        parts = ([f"+{new} records"] if new else []) + ([f"{changed} changed"] if changed else [])
        if parts:
            changes.append(", ".join(parts))
        if replaced:
            changes.append(f"{replaced} re-inserted (a key or source removed at the source)")
        if removed:
            changes.append(f"-{removed} records")
        after = simulate_schema(normalized_json(dest.schema), self._ordered(item, upsert))
        self._schema_warning(item, after, warnings)
        payload: dict[str, Any] = {
            "set_tags": set_tags,
            "del_tags": del_tags,
            "links": add_links,
            "upsert": upsert,
            "delete": delete,
        }
        busy = set_tags or del_tags or add_links or upsert or delete
        return ItemChange(
            action="update" if busy else "unchanged",
            dest_id=dest_id,
            changes=changes,
            warnings=warnings,
            payload=payload,
        )

    def _ordered(self, item: EvalDataset, indexes: list[int]) -> list[DatasetRecord]:
        """These records in the order that gives the copy the source's schema."""
        chosen = [item.records[i] for i in indexes]
        return [chosen[i] for i in schema_order(chosen, item.columns_json)]

    def _schema_warning(self, item: EvalDataset, after: str | None, warnings: list[str]) -> None:
        if after != item.columns_json and (after or item.columns_json):
            warnings.append(
                f"dataset {item.name!r}: the copy's schema will differ from the source's "
                "(MLflow types each key by the first record that has it and the schema "
                f"cannot be set): {after} vs {item.columns_json}"
            )

    def _plan_records(
        self, raw: Any, item: EvalDataset, dest_id: str
    ) -> tuple[list[int], list[str], tuple[int, int, int, int]]:
        """(source record indexes to upsert in source order, copy record ids to delete,
        (new, changed, replaced, removed) counts). Only records that differ are held."""
        wanted = {input_hash(r.inputs): i for i, r in enumerate(item.records)}
        digests = {h: record_content(item.records[i]) for h, i in wanted.items()}
        seen: set[str] = set()
        upsert: list[int] = []
        delete: list[str] = []
        changed = replaced = removed = 0
        for rec in iter_records(raw, dest_id):
            h = input_hash(rec.inputs)
            index = wanted.get(h)
            if index is None or h in seen:  # gone at the source (or a duplicate)
                delete.append(str(rec.source_record_id))
                removed += 1
                continue
            seen.add(h)
            if record_content(rec) == digests[h]:
                continue
            src = item.records[index]
            changed += 1
            upsert.append(index)
            if record_content(_merged(rec, src)) != digests[h]:
                delete.append(str(rec.source_record_id))  # an upsert would keep a stale key
                replaced += 1
        new = [i for h, i in wanted.items() if h not in seen]
        upsert = sorted(upsert + new)
        return upsert, delete, (len(new), changed, replaced, removed)

    # ------------------------------------------------------------------ apply

    def apply(self, item: Any, change: ItemChange, links: ItemLinks) -> str:
        assert isinstance(item, EvalDataset)
        payload = change.payload
        if change.action == "unchanged":
            assert change.dest_id is not None
            return change.dest_id
        raw = self._raw()
        if change.action == "create":
            created = raw.create_dataset(
                name=item.name, tags=payload["tags"], experiment_ids=payload["links"] or None
            )
            dest_id = str(created.dataset_id)
            self._upsert(raw, dest_id, self._ordered(item, list(range(len(item.records)))))
            return dest_id
        dest_id = str(change.dest_id)
        if payload["set_tags"]:
            raw.set_dataset_tags(dest_id, payload["set_tags"])
        for key in payload["del_tags"]:
            raw.delete_dataset_tag(dest_id, key)
        if payload["links"]:
            raw.add_dataset_to_experiments(dest_id, payload["links"])
        doomed = list(payload["delete"])
        for start in range(0, len(doomed), UPSERT_BATCH):  # before the re-inserts
            raw.delete_dataset_records(dest_id, doomed[start : start + UPSERT_BATCH])
        self._upsert(raw, dest_id, self._ordered(item, list(payload["upsert"])))
        return dest_id

    def _upsert(self, raw: Any, dest_id: str, records: list[DatasetRecord]) -> None:
        """In the order given (:meth:`_ordered`), a batch at a time."""
        for start in range(0, len(records), UPSERT_BATCH):
            batch = [_upsert_dict(r) for r in records[start : start + UPSERT_BATCH]]
            raw.upsert_dataset_records(dest_id, batch)

    # ------------------------------------------------------------------ read back

    def read_back(self, dest_id: str) -> EvalDataset | None:
        """The copy without bookkeeping tags; its experiment links named by the source
        identity their experiments carry; creation time/author as the source had them."""
        if not holds_datasets(self.store):
            return None
        raw = self._raw()
        ds = self._get(raw, dest_id)
        if ds is None:
            return None
        tags = {str(k): str(v) for k, v in (ds.tags or {}).items()}
        linked = [str(i) for i in raw.get_dataset_experiment_ids(dest_id)]
        header = ItemHeader(
            kind="dataset",
            source_id=tags.get(ITEM_SOURCE_TAG)
            or object_source_id(self.store.display_uri, f"dataset/{dest_id}"),
            name=ds.name,
            projects=[self._project(i) for i in sorted(linked, key=lambda i: (len(i), i))],
            fingerprint=dataset_fingerprint(ds, linked),
            locator={"dataset_id": dest_id},
        )
        item = dataset_of(header, ds, list(iter_records(raw, dest_id)))
        if SOURCE_CREATED_TIME_TAG in tags:
            item.created_time_ms = int(tags[SOURCE_CREATED_TIME_TAG])
        item.created_by = tags.get(SOURCE_CREATED_BY_TAG, item.created_by)
        return item

    def _project(self, exp_id: str) -> ItemProject:
        own = object_source_id(self.store.display_uri, f"experiment:{exp_id}")
        try:
            exp = self.store.client.get_experiment(exp_id)
        except Exception:
            return ItemProject(source_id=own, name=exp_id)
        return ItemProject(source_id=(exp.tags or {}).get(SOURCE_ID_TAG) or own, name=exp.name)
