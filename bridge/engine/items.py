"""The item pass of a sync: workspace items (prompts, evaluation datasets, traces) after
the runs and registered models, so traces link to the runs and logged models copied before.

Per kind: list headers (cheap); an item whose fingerprint equals the one recorded with its
copy is unchanged and its body is never read (unless ``--full``); the others are read,
planned against their copy (found in state, else by the writer's identity tag, so a lost
state store never duplicates) and, unless a dry run, applied and recorded. Items run in
parallel; one that fails is reported on its line and never stops the others. A destination
that cannot store a kind says so once per pass, with how many were not copied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from bridge.adapters.features import ItemSink, ItemSource
from bridge.engine.context import SyncContext
from bridge.engine.item_conflicts import (
    close_stale,
    edited_copy,
    item_conflict,
    settle_item,
    written_digest,
)
from bridge.engine.item_links import StateLinks
from bridge.engine.model import ItemPlan, Plan
from bridge.engine.text import one_line
from bridge.errors import BridgeError
from bridge.schema import Warning_
from bridge.schema_items import ITEM_KINDS, ItemHeader, ItemKind

log = logging.getLogger(__name__)

#: The order kinds are copied in: traces last, as they link to runs and logged models.
PASS_ORDER: tuple[ItemKind, ...] = ("prompt", "dataset", "model", "trace")
#: What ``Plan.item_counts`` counts per kind.
COUNT_KEYS = ("listed", "create", "update", "unchanged", "failed", "not-copied")


def wanted_kinds(ctx: SyncContext) -> list[ItemKind]:
    """The kinds this pass copies: the reader's, minus those the options leave out."""
    source = ctx.features.item_source
    if source is None:
        return []
    keep = set(ctx.reader.options.items)
    have = source.item_kinds()
    return [k for k in PASS_ORDER if k in keep and k in have and k in ITEM_KINDS]


def sync_items(ctx: SyncContext, report: Plan, workers: int) -> None:
    """Every kind in pass order into ``report`` (counts for all, lines for items created,
    updated, in conflict or failed). A kind that cannot be listed is an error of the pass
    (exit 1); the other kinds still run."""
    ItemPass(ctx, report, workers).run()


class ItemPass:
    """One pass's items: listed (and counted) when made; then written (:meth:`run`), or,
    with ``--on-conflict fail``, first checked for edited copies (:meth:`check`) and held
    back (:meth:`hold`) when the pass found conflicts."""

    def __init__(self, ctx: SyncContext, report: Plan, workers: int) -> None:
        self.ctx, self.report, self.workers = ctx, report, workers
        self.listed: list[tuple[ItemKind, list[ItemHeader], dict[str, int]]] = []
        self.source = ctx.features.item_source
        self.sink = ctx.features.item_sink
        self.links = StateLinks(
            ctx.state,
            ctx.writer,
            create=not ctx.dry_run,
            logged_models=ctx.features.logged_models,
        )
        # The check before anything is written looks experiments up, never makes them.
        self.lookup = StateLinks(
            ctx.state, ctx.writer, create=False, logged_models=ctx.features.logged_models
        )
        if self.source is not None:
            self._list(self.source)

    def _list(self, source: ItemSource) -> None:
        ctx, report = self.ctx, self.report
        try:
            kinds = wanted_kinds(ctx)
        except Exception as exc:
            log.debug("item kinds of %s", ctx.reader.display_uri, exc_info=True)
            report.errors.append(f"cannot read items of {ctx.reader.display_uri}: {one_line(exc)}")
            return
        for kind in kinds:
            try:
                headers = list(source.list_items(kind))
            except Exception as exc:
                log.debug("listing %ss failed", kind, exc_info=True)
                why = str(exc) if isinstance(exc, BridgeError) else one_line(exc)
                report.errors.append(f"cannot list {kind}s of {ctx.reader.display_uri}: {why}")
                continue
            counts = dict.fromkeys(COUNT_KEYS, 0)
            counts["listed"] = len(headers)
            report.item_counts[kind] = counts
            if self.sink is None or kind not in self.sink.item_kinds():
                counts["not-copied"] = len(headers)
                if headers:
                    report.notices.append(_not_copied(ctx, kind, len(headers)))
                continue
            for header in headers:
                self.links.know(header.projects)
                self.lookup.know(header.projects)
            self.listed.append((kind, headers, counts))

    def _map(
        self, fn: Callable[[ItemHeader], ItemPlan | None], headers: list[ItemHeader]
    ) -> list[ItemPlan | None]:
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(fn, headers))

    def check(self) -> int:
        """``--on-conflict fail``, before anything is written: the items whose copy was
        edited in the destination, as conflict lines (recorded); returns how many."""
        found = 0
        for _kind, headers, counts in self.listed:
            assert self.source is not None and self.sink is not None
            fn = partial(_check, self.ctx, self.source, self.sink, self.lookup)
            for line in self._map(fn, headers):
                if line is not None and line.action == "conflict":
                    counts["conflict"] = counts.get("conflict", 0) + 1
                    self.report.items.append(line)
                    found += 1
        return found

    def hold(self, why: str) -> None:
        """Nothing written: one notice saying how many listed items were not and why."""
        n = sum(len(h) for _k, h, _c in self.listed)
        if n:
            self.report.notices.append(
                Warning_(
                    source_id=self.ctx.reader.display_uri,
                    code="items-not-written",
                    message=f"items-not-written: {n} workspace items listed, none written ({why})",
                )
            )
        self.report.notices.extend(_notices(self.ctx, None))

    def run(self) -> None:
        """Each listed item planned and, unless a dry run, written (or left in conflict)."""
        for kind, headers, counts in self.listed:
            assert self.source is not None and self.sink is not None
            self.sink.prepare_items(kind, headers)  # finds may be read ahead in bulk
            fn = partial(_one, self.ctx, self.source, self.sink, self.links)
            for line in self._map(fn, headers):
                assert line is not None
                key = "failed" if line.outcome == "failed" else line.action
                counts[key] = counts.get(key, 0) + 1
                shown = line.action in ("create", "update", "conflict") or line.resolved
                if shown or line.outcome == "failed":
                    self.report.items.append(line)
        self.report.notices.extend(_notices(self.ctx, None))  # what names no item


def _not_copied(ctx: SyncContext, kind: str, n: int) -> Warning_:
    code = f"{kind}s-not-copied"
    return Warning_(
        source_id=ctx.reader.display_uri,
        code=code,
        message=f"{code}: {n} ({ctx.writer.item_gap(kind)})",
    )


def _check(
    ctx: SyncContext, source: ItemSource, sink: ItemSink, links: StateLinks, header: ItemHeader
) -> ItemPlan | None:
    """An item to plan whose copy was edited since it was written: its line (written
    nothing; a conflict recorded), else None. A failure here is left to the writing pass."""
    try:
        mark = ctx.state.get_item(ctx.dest_uri, header.source_id)
        if mark is None or (mark.fingerprint == header.fingerprint and not ctx.full):
            return None
        if edited_copy(sink, header, mark) is None:
            return None
    except Exception:
        log.debug("checking %s failed", header.source_id, exc_info=True)
        return None
    return _one(ctx, source, sink, links, header, write=False)


def _one(
    ctx: SyncContext,
    source: ItemSource,
    sink: ItemSink,
    links: StateLinks,
    header: ItemHeader,
    write: bool = True,
) -> ItemPlan:
    """Plan one item and, unless a dry run (or ``write`` False), apply it; a copy edited in
    the destination since it was written is settled or left as a conflict
    (engine/item_conflicts.py); any error fails this item only."""
    line = ItemPlan(kind=header.kind, source_id=header.source_id, name=header.name)
    apply = write and not ctx.dry_run
    try:
        mark = ctx.state.get_item(ctx.dest_uri, header.source_id)
        if mark is not None and mark.fingerprint == header.fingerprint and not ctx.full:
            line.dest_id, line.outcome = mark.dest_id, "unchanged"
            return line
        dest_id = mark.dest_id if mark is not None else sink.find_item(header, links)
        item = source.read_item(header)
        change = sink.plan_item(item, dest_id, links)
        line.action = change.action
        line.dest_id = change.dest_id or dest_id
        line.changes = list(change.changes)
        line.warnings += [
            Warning_(source_id=header.source_id, code=f"{header.kind}-not-kept", message=w)
            for w in change.warnings
        ]
        edited = edited_copy(sink, header, mark) if change.action != "unchanged" else None
        if edited is not None and mark is not None:
            conflict = item_conflict(item, edited, mark, change)
            choice = settle_item(ctx, line, conflict, record=not ctx.dry_run)
            if choice is None:
                return line  # left untouched, reported (and recorded unless a dry run)
            if choice == "dest":
                line.action, line.outcome, line.changes = "skip", "skipped", []
                if apply:  # the edit is the new baseline until the source changes again
                    ctx.state.put_item(
                        ctx.dest_uri,
                        header.source_id,
                        header.kind,
                        mark.dest_id,
                        header.fingerprint,
                        edited.digest,
                    )
                return line
        elif apply and mark is not None and mark.digest is not None:
            close_stale(ctx, header.source_id)  # an edit undone by hand: no conflict now
        if not apply:
            line.outcome = "unchanged" if change.action == "unchanged" else "pending"
            return line
        if change.action != "unchanged":
            line.dest_id = sink.apply_item(item, change, links)
            line.outcome = "done"
        else:
            line.outcome = "unchanged"
        if line.dest_id is not None:  # also an unchanged copy found without state
            digest = written_digest(sink, item, change, line.dest_id, edited)
            ctx.state.put_item(
                ctx.dest_uri,
                header.source_id,
                header.kind,
                line.dest_id,
                header.fingerprint,
                digest,
            )
    except Exception as exc:
        log.debug("item %s failed", header.source_id, exc_info=True)
        line.outcome = "failed"
        line.error = one_line(exc)
    finally:
        line.warnings.extend(_notices(ctx, header.source_id))
    return line


def _notices(ctx: SyncContext, source_id: str | None) -> list[Warning_]:
    """What the pass's adapters reported about one item (or everything left)."""
    sides = (ctx.reader, ctx.writer, ctx.source_writer)
    return [w for side in sides if side is not None for w in side.notices.drain(source_id)]
