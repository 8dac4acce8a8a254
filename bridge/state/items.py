"""Workspace items (traces, prompts, evaluation datasets): where each copy lives, the source
fingerprint it was made from (equal: the item is skipped without reading it) and the digest
of the copy as written (a different digest read back later: the copy was edited there)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.records import ItemMark
from bridge.state.sql import upsert
from bridge.state.tables import items_table

_i = items_table.c
_COLUMNS = (_i.source_id, _i.kind, _i.dest_id, _i.fingerprint, _i.digest)


def _mark(row: Any) -> ItemMark:
    return ItemMark(
        kind=row.kind, dest_id=row.dest_id, fingerprint=row.fingerprint, digest=row.digest
    )


class ItemsMixin(StoreBase):
    """The item marks of each destination."""

    def get_item(self, dest_uri: str, source_id: str) -> ItemMark | None:
        """The copy of a source item in this destination, as last recorded (None: none)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(*_COLUMNS).where(_i.dest_uri == dest_uri, _i.source_id == source_id)
            ).first()
        return _mark(row) if row is not None else None

    def put_item(
        self,
        dest_uri: str,
        source_id: str,
        kind: str,
        dest_id: str,
        fingerprint: str,
        digest: str | None = None,
    ) -> None:
        """Record that the copy ``dest_id`` holds the source item as of ``fingerprint``, and
        (``digest``) what the copy held when the bridge wrote or last settled it."""
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            values = {
                "kind": kind,
                "dest_id": dest_id,
                "fingerprint": fingerprint,
                "digest": digest,
            }
            upsert(conn, items_table, key, values)

    def item_marks(self, dest_uri: str, kind: str) -> dict[str, ItemMark]:
        """Every recorded copy of one kind in this destination, by source id."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(*_COLUMNS).where(_i.dest_uri == dest_uri, _i.kind == kind)
            ).all()
        return {r.source_id: _mark(r) for r in rows}
