"""Model objects, the registry version map, alias baselines and two-way editable fields."""

from __future__ import annotations

import sqlalchemy as sa

from bridge.state.base import StoreBase
from bridge.state.claims import Fence, check_fence
from bridge.state.sql import upsert
from bridge.state.tables import aliases_table, editable_table, objects_table, versions_table


class RegistryMixin(StoreBase):
    """Objects, versions, aliases and editable fields."""

    # -- model objects, the version map and alias baselines ---------------------------
    def get_object(self, dest_uri: str, source_id: str) -> str | None:
        o = objects_table.c
        with self._tx() as conn:
            return conn.execute(
                sa.select(o.location).where(o.dest_uri == dest_uri, o.source_id == source_id)
            ).scalar_one_or_none()

    def put_object(self, dest_uri: str, source_id: str, location: str) -> None:
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            upsert(conn, objects_table, key, {"location": location})

    def get_version(self, dest_uri: str, source_id: str) -> tuple[str, str] | None:
        """(destination model name, destination version) of a source registry version."""
        v = versions_table.c
        with self._tx() as conn:
            row = conn.execute(
                sa.select(v.model_name, v.dest_version).where(
                    v.dest_uri == dest_uri, v.source_id == source_id
                )
            ).first()
        return (row.model_name, row.dest_version) if row else None

    def put_version(self, dest_uri: str, source_id: str, model_name: str, version: str) -> None:
        with self._tx() as conn:
            key = {"dest_uri": dest_uri, "source_id": source_id}
            upsert(conn, versions_table, key, {"model_name": model_name, "dest_version": version})

    def get_aliases(self, dest_uri: str, model_source_id: str) -> dict[str, tuple[str, str]]:
        """alias -> (source version id, destination version) as last synced."""
        a = aliases_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(a.alias, a.source_version, a.dest_version).where(
                    a.dest_uri == dest_uri, a.model_source_id == model_source_id
                )
            ).all()
        return {r.alias: (r.source_version, r.dest_version) for r in rows}

    def put_alias(
        self,
        dest_uri: str,
        model_source_id: str,
        alias: str,
        source_version: str | None,
        dest_version: str | None,
    ) -> None:
        """Record an alias as synced; both None forgets it (removed on both sides)."""
        key = {"dest_uri": dest_uri, "model_source_id": model_source_id, "alias": alias}
        with self._tx() as conn:
            if source_version is None and dest_version is None:
                a = aliases_table.c
                conn.execute(
                    sa.delete(aliases_table).where(
                        a.dest_uri == dest_uri,
                        a.model_source_id == model_source_id,
                        a.alias == alias,
                    )
                )
                return
            values = {"source_version": source_version, "dest_version": dest_version}
            upsert(conn, aliases_table, key, values)

    def get_editable(self, dest_uri: str, source_id: str) -> dict[str, str | None] | None:
        """Editable fields as last agreed (None: never compared in two-way mode)."""
        e = editable_table.c
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(e.field, e.value).where(e.dest_uri == dest_uri, e.source_id == source_id)
            ).all()
        return {r.field: r.value for r in rows} if rows else None

    def put_editable(
        self,
        dest_uri: str,
        source_id: str,
        values: dict[str, str | None],
        fence: Fence | None = None,
    ) -> None:
        """Replace the agreed values of one run (absent fields are kept as a NULL row, so
        an empty agreement is still an agreement). ``fence``: the pass's claim on the run
        (bridge/state/claims.py ``check_fence``)."""
        e = editable_table.c
        rows = values or {"notes": None}
        with self._tx() as conn:
            check_fence(conn, dest_uri, source_id, fence)
            conn.execute(
                sa.delete(editable_table).where(e.dest_uri == dest_uri, e.source_id == source_id)
            )
            for field, value in rows.items():
                key = {"dest_uri": dest_uri, "source_id": source_id, "field": field}
                upsert(conn, editable_table, key, {"value": value})
