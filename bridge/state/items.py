"""Workspace items (traces, prompts, evaluation datasets): where each copy lives and the
source fingerprint it was made from, so an unchanged item is skipped without reading it."""

from __future__ import annotations

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.records import ItemMark
from bridge.state.sql import upsert
from bridge.state.tables import items_table


class ItemsMixin(StoreBase):
    """The item marks of each destination."""

    def get_item(self, dest_uri: str, source_id: str) -> ItemMark | None:
        """The copy of a source item in this destination, as last recorded (None: none)."""
        i = items_table.c
        with self._tx() as conn:
            row = conn.execute(
                sa.select(i.kind, i.dest_id, i.fingerprint).where(
                    i.dest_uri == dest_uri, i.source_id == source_id
                )
            ).first()
        if row is None:
            return None
        return ItemMark(kind=row.kind, dest_id=row.dest_id, fingerprint=row.fingerprint)

    def put_item(
        self, dest_uri: str, source_id: str, kind: str, dest_id: str, fingerprint: str
    ) -> None:
        """Record that the copy ``dest_id`` holds the source item as of ``fingerprint``."""
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            values = {"kind": kind, "dest_id": dest_id, "fingerprint": fingerprint}
            upsert(conn, items_table, key, values)

    def item_marks(self, dest_uri: str, kind: str) -> dict[str, ItemMark]:
        """Every recorded copy of one kind in this destination, by source id."""
        i = items_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(i.source_id, i.kind, i.dest_id, i.fingerprint).where(
                    i.dest_uri == dest_uri, i.kind == kind
                )
            ).all()
        return {
            r.source_id: ItemMark(kind=r.kind, dest_id=r.dest_id, fingerprint=r.fingerprint)
            for r in rows
        }
