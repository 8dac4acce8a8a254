"""An evaluation dataset's schema, which MLflow computes and nobody can set.

MLflow (3.17, ``SqlAlchemyStore._update_dataset_schema``) types each inputs / outputs /
expectations key by the FIRST record that carries it, in the order records are upserted,
and never revises a type. Records one ``merge_records`` call inserted share a creation time
and get random ids, so the source's own order within a call is lost: replayed in listing
order, a key whose records disagree on type ("42" in one, 4 in another) can come out typed
differently. :func:`schema_order` orders the records so that each key is first met with the
type the source's schema names; :func:`simulate_schema` is MLflow's rule, to tell ahead of
writing whether the copy's schema will match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.schema_items import DatasetRecord

Field = tuple[str, str | None]  # (section, key); ("outputs", None): a non-dict output


def _type(value: Any) -> str:
    """MLflow's ``_infer_field_type``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unknown"


def _fields(rec: DatasetRecord) -> dict[Field, str]:
    found: dict[Field, str] = {}
    for key, value in (rec.inputs or {}).items():
        found[("inputs", key)] = _type(value)
    if isinstance(rec.outputs, dict):
        for key, value in rec.outputs.items():
            found[("outputs", key)] = _type(value)
    elif rec.outputs is not None:
        found[("outputs", None)] = _type(rec.outputs)
    for key, value in (rec.expectations or {}).items():
        found[("expectations", key)] = _type(value)
    return found


def _typed(schema: dict[str, Any], field: Field) -> str | None:
    section, key = field
    part = schema.get(section)
    if key is None:
        return part if isinstance(part, str) else None
    return part.get(key) if isinstance(part, dict) else None


def simulate_schema(existing: str | None, records: Sequence[DatasetRecord]) -> str | None:
    """The schema MLflow stores after upserting ``records`` in this order onto a dataset
    whose schema is ``existing`` (sorted-key JSON, as the reader normalizes it)."""
    if not records and not existing:
        return existing
    schema: dict[str, Any] = (
        json.loads(existing)
        if existing
        else {"inputs": {}, "outputs": {}, "expectations": {}, "version": "1.0"}
    )
    for rec in records:
        for key, value in (rec.inputs or {}).items():
            schema["inputs"].setdefault(key, _type(value))
        if rec.outputs is not None:
            outputs = schema["outputs"]
            if isinstance(rec.outputs, dict):
                if isinstance(outputs, dict):
                    for key, value in rec.outputs.items():
                        outputs.setdefault(key, _type(value))
            elif not outputs:
                schema["outputs"] = _type(rec.outputs)
        for key, value in (rec.expectations or {}).items():
            schema["expectations"].setdefault(key, _type(value))
    return json.dumps(schema, sort_keys=True)


def schema_order(records: Sequence[DatasetRecord], schema_json: str | None) -> list[int]:
    """Indexes of ``records``, source order kept except that records which first meet a
    key with the source schema's type go first (the first such record, repeatedly, until
    no record adds a key that way). Bounded: one scan per schema key at most."""
    if not schema_json:
        return list(range(len(records)))
    try:
        schema = json.loads(schema_json)
    except ValueError:
        return list(range(len(records)))
    decided: set[Field] = set()
    chosen: list[int] = []
    taken: set[int] = set()
    while True:
        pick: int | None = None
        for index, rec in enumerate(records):
            if index in taken:
                continue
            fresh = {f: t for f, t in _fields(rec).items() if f not in decided}
            if fresh and all(_typed(schema, f) == t for f, t in fresh.items()):
                pick = index
                break
        if pick is None:
            break
        chosen.append(pick)
        taken.add(pick)
        decided.update(_fields(records[pick]))
    return chosen + [i for i in range(len(records)) if i not in taken]
