"""List and settle conflicts recorded in the state store (`bridge conflicts`).

A resolution is recorded (who, when, which side) and the planner honours it on every later
sync of the run, as long as both sides still hold the values it was made for:

* ``take dest``: the destination's value becomes the synced baseline at once; later syncs
  keep it (a later *new* source value is synced normally, a new destination edit is a new
  conflict). For a deleted destination run: it stays deleted.
* ``take source``: the next sync of the pair writes the source value — a tag is
  overwritten; a param the destination cannot change (MLflow params are immutable) keeps
  its old value and the source value is written to tag ``bridge.param_override.<key>``.
  For a deleted destination run: the state row is dropped now and the next sync writes
  the run again. (Writing needs the source run, which the next sync reads anyway.)
* A workspace item (field ``item``: its copy was edited in the destination): the next
  sync writes the source item over the copy (source) or keeps the copy (dest).
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from bridge.engine.marks import PARAM_OVERRIDE_PREFIX
from bridge.errors import BridgeError
from bridge.state import StateStore, resolutions_table


def whoami() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def list_conflicts(state: str | None, include_resolved: bool = False) -> list[dict[str, Any]]:
    """Open conflicts (and, with ``include_resolved``, settled ones with their resolution)."""
    import sqlalchemy as sa

    from bridge.state import conflicts_table

    store = StateStore(state, read_only=True)
    try:
        if not include_resolved:
            return store.open_conflicts()
        with store.engine.connect() as conn:
            ids = [r.id for r in conn.execute(sa.select(conflicts_table.c.id).order_by("id"))]
        return [c for c in (store.get_conflict(i) for i in ids) if c is not None]
    finally:
        store.close()


def resolve(
    conflict_id: int, take: str, state: str | None, by: str | None = None
) -> dict[str, Any]:
    """Settle conflict ``conflict_id`` by taking the ``source`` or the ``dest`` side."""
    if take not in ("source", "dest"):
        raise BridgeError(f"--take must be source or dest, not {take!r}")
    store = StateStore(state)
    try:
        c = store.get_conflict(conflict_id)
        if c is None:
            raise BridgeError(f"no conflict #{conflict_id} in {_safe(store.url)}")
        if c["resolved"]:
            r = c["resolution"] or {}
            raise BridgeError(
                f"conflict #{conflict_id} is already settled"
                + (f" ({r.get('choice')} by {r.get('resolved_by')})" if r else "")
            )
        dest_uri, sid, field = c["dest_uri"], c["source_id"], c["field"]
        kind, _, key = field.partition(":")
        st = store.get_run(dest_uri, sid)
        if field == "run":
            if take == "source":
                store.forget_run(dest_uri, sid)
                effect = "the state row was dropped; the next sync writes the run again"
            else:
                effect = "the destination run stays deleted; syncs skip it"
        elif kind == "alias":
            # Registered-model aliases: the planner applies the resolution on the next sync
            # (moves the alias to the source's version, or keeps it and re-baselines).
            effect = (
                f"the next sync moves alias {key!r} to version {c['source_value']}"
                if take == "source"
                else f"alias {key!r} stays on version {c['dest_value']}; "
                "it becomes the synced baseline"
            )
        elif field == "item":
            # A workspace item whose copy was edited in the destination: the item pass
            # applies the resolution on the next sync (engine/item_conflicts.py), while the
            # source item and the copy still hold what the conflict was recorded with.
            effect = (
                "the next sync writes the source's item over the destination's edited copy"
                if take == "source"
                else "the destination's edited copy is kept; the next sync records it as "
                "the synced baseline (until the source item changes again)"
            )
        elif take == "dest":
            if st is not None:
                target = st.written_params if kind == "param" else st.written_tags
                target[key] = c["dest_value"] or ""
                store.put_run(dest_uri, sid, st)
            effect = f"the destination's value {c['dest_value']!r} is kept as the synced baseline"
        else:
            if st is not None:
                st.fingerprint = None  # make the next sync compare this run in full
                store.put_run(dest_uri, sid, st)
            if kind == "param":
                effect = (
                    f"the next sync writes {c['source_value']!r}: to the param if the "
                    "destination can change params, else (MLflow: params are immutable) to "
                    f"tag {PARAM_OVERRIDE_PREFIX}{key}, the param keeping {c['dest_value']!r}"
                )
            else:
                effect = f"the next sync writes the source value {c['source_value']!r} to the tag"
        res_id = store.resolve_conflict(
            dest_uri,
            sid,
            field,
            c["source_value"],
            c["dest_value"],
            take,
            by or whoami(),
            note=effect,
        )
        return {
            "conflict_id": conflict_id,
            "resolution_id": res_id,
            "dest": dest_uri,
            "source_id": sid,
            "field": field,
            "take": take,
            "effect": effect,
        }
    finally:
        store.close()


def _safe(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


__all__ = ["list_conflicts", "resolve", "resolutions_table", "whoami"]
