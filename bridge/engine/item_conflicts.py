"""Item copies edited in the destination since the bridge wrote them: conflicts, never
overwritten ("conflicts are reported, never papered over").

The item pass records, beside each copy's source fingerprint, the digest of the copy as
written. When the source changed and the copy read back no longer has that digest,
someone edited the copy in the destination (a tag, a record, an alias): writing the
source over it would lose the edit. Like a run's conflicting tag it is settled by an
earlier resolution (``bridge conflicts resolve``) or the pair's ``--on-conflict`` policy,
else left untouched, recorded in the state's conflicts table and reported (exit 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.adapters.features import ItemChange, ItemSink
from bridge.engine.context import SyncContext
from bridge.engine.model import Conflict, ItemPlan
from bridge.engine.settle import settle_choice
from bridge.engine.verify.items import differing_parts
from bridge.schema_items import Item, ItemHeader, item_digest
from bridge.state import ItemMark, conflict_key

log = logging.getLogger(__name__)

#: The conflicts-table field of an item conflict (the whole item: its copy was edited).
FIELD = "item"


@dataclass
class Edited:
    """A copy that no longer holds what the bridge wrote, as read back."""

    copy: Item
    digest: str


def edited_copy(sink: ItemSink, header: ItemHeader, mark: ItemMark | None) -> Edited | None:
    """The copy when it differs from what was recorded when it was written; None when no
    digest was recorded (an older or lost state: applied as before), the copy is gone, or
    it still holds what the bridge wrote."""
    if mark is None or mark.digest is None:
        return None
    copy = sink.read_item_back(header.kind, mark.dest_id)
    if copy is None:
        return None
    digest = item_digest(copy)
    return None if digest == mark.digest else Edited(copy=copy, digest=digest)


def item_conflict(item: Item, edited: Edited, mark: ItemMark, change: ItemChange) -> Conflict:
    """The conflict, its values the digests (source now, copy now, copy as written) so an
    earlier resolution is matched exactly; the reason names what differs and what the
    source side would write."""
    parts = ", ".join(differing_parts(item, edited.copy))
    would = "; ".join(change.changes) or change.action
    return Conflict(
        source_id=item.header.source_id,
        field=FIELD,
        source_value=item_digest(item),
        dest_value=edited.digest,
        synced_value=mark.digest,
        reason=(
            f"{item.header.kind} copy {mark.dest_id} was edited in the destination since the "
            f"last sync (differs from the source in: {parts}); the source would write: {would}"
        ),
    )


def settle_item(
    ctx: SyncContext, line: ItemPlan, conflict: Conflict, *, record: bool
) -> str | None:
    """ "source" (write over the edit), "dest" (keep it) or None (left open: put on the
    line, and recorded unless ``record`` is False). A policy's settlement is recorded here
    when ``record``; a person's was recorded by ``bridge conflicts resolve``."""
    settled = ctx.state.resolutions(ctx.dest_uri, conflict.source_id)
    decided: list[tuple[Conflict, str]] = []
    got = settle_choice(ctx, settled, conflict, decided)
    if got is None:
        line.action, line.outcome = "conflict", "skipped"
        line.conflicts.append(conflict)
        if record:
            ctx.state.record_conflict(
                ctx.dest_uri,
                conflict.source_id,
                FIELD,
                conflict.source_value,
                conflict.dest_value,
                conflict.synced_value,
            )
            close_stale(ctx, conflict.source_id, conflict)
        return None
    choice, by = got
    if choice == "dest":
        conflict.resolution = (
            f"{by}: the destination's copy is kept as the synced baseline "
            "(until the source changes again)"
        )
    else:
        conflict.resolution = f"{by}: the source's item is written over the destination's edit"
    line.resolved.append(conflict)
    if record and decided:
        ctx.state.resolve_conflict(
            ctx.dest_uri,
            conflict.source_id,
            FIELD,
            conflict.source_value,
            conflict.dest_value,
            choice,
            f"policy:{ctx.on_conflict}",
            note=conflict.resolution,
        )
    return choice


def close_stale(ctx: SyncContext, source_id: str, current: Conflict | None = None) -> None:
    """Open item conflicts of this item no longer found (the edit was undone, the source
    moved on): closed as superseded."""
    keys = set()
    if current is not None:
        keys.add(conflict_key(FIELD, current.source_value, current.dest_value))
    ctx.state.close_stale_conflicts(ctx.dest_uri, source_id, keys, fields=(FIELD,))


def written_digest(
    sink: ItemSink, item: Item, change: ItemChange, dest_id: str, edited: Edited | None
) -> str | None:
    """The digest of the copy as this pass left it: the source item's when the writer kept
    everything; read back when it said it could not (a link left out, a new trace id), so
    a copy that is not faithful is not taken for an edited one later. None: unknown (the
    next change is applied as before)."""
    if change.action == "unchanged" and edited is not None:
        return edited.digest  # the copy already holds what the source has now
    if not change.warnings:
        return item_digest(item)
    try:
        copy = sink.read_item_back(item.header.kind, dest_id)
    except Exception:  # the copy is written; only its baseline is unknown
        log.debug("reading back %s failed", item.header.source_id, exc_info=True)
        return None
    return item_digest(copy) if copy is not None else None
