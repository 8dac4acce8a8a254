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
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from bridge.adapters.features import ItemSink, ItemSource
from bridge.engine.context import SyncContext
from bridge.engine.item_links import StateLinks
from bridge.engine.model import ItemPlan, Plan
from bridge.engine.text import one_line
from bridge.errors import BridgeError
from bridge.schema import Warning_
from bridge.schema_items import ITEM_KINDS, ItemHeader, ItemKind

log = logging.getLogger(__name__)

#: The order kinds are copied in: traces last, as they link to runs and logged models.
PASS_ORDER: tuple[ItemKind, ...] = ("prompt", "dataset", "trace")
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
    updated or failed). A kind that cannot be listed is an error of the pass (exit 1);
    the other kinds still run."""
    source = ctx.features.item_source
    if source is None:
        return
    try:
        kinds = wanted_kinds(ctx)
    except Exception as exc:
        log.debug("item kinds of %s", ctx.reader.display_uri, exc_info=True)
        report.errors.append(f"cannot read items of {ctx.reader.display_uri}: {one_line(exc)}")
        return
    links = StateLinks(
        ctx.state,
        ctx.writer,
        create=not ctx.dry_run,
        logged_models=ctx.features.logged_models,
    )
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
        sink = ctx.features.item_sink
        if sink is None or kind not in sink.item_kinds():
            counts["not-copied"] = len(headers)
            if headers:
                report.notices.append(_not_copied(ctx, kind, len(headers)))
            continue
        for header in headers:
            links.know(header.projects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            lines = list(pool.map(partial(_one, ctx, source, sink, links), headers))
        for line in lines:
            counts["failed" if line.outcome == "failed" else line.action] += 1
            if line.action in ("create", "update") or line.outcome == "failed":
                report.items.append(line)
    report.notices.extend(_notices(ctx, None))  # what names no item


def _not_copied(ctx: SyncContext, kind: str, n: int) -> Warning_:
    code = f"{kind}s-not-copied"
    return Warning_(
        source_id=ctx.reader.display_uri,
        code=code,
        message=f"{code}: {n} ({ctx.writer.item_gap(kind)})",
    )


def _one(
    ctx: SyncContext, source: ItemSource, sink: ItemSink, links: StateLinks, header: ItemHeader
) -> ItemPlan:
    """Plan one item and, unless a dry run, apply it; any error fails this item only."""
    line = ItemPlan(kind=header.kind, source_id=header.source_id, name=header.name)
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
        if ctx.dry_run:
            line.outcome = "unchanged" if change.action == "unchanged" else "pending"
            return line
        if change.action != "unchanged":
            line.dest_id = sink.apply_item(item, change, links)
            line.outcome = "done"
        else:
            line.outcome = "unchanged"
        if line.dest_id is not None:  # also an unchanged copy found without state
            ctx.state.put_item(
                ctx.dest_uri, header.source_id, header.kind, line.dest_id, header.fingerprint
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
