"""Workspace items against their copies: per kind, how many the source lists and how many
copies exist; per item, the content digest (``bridge.schema_items.item_digest``) of the
source item against the copy as the writer reads it back. A copy that differs is named
with the parts that differ ("trace tr-1: span tree differs"); one that is missing is a
finding too ("prompt p: missing"). Items are counted, only findings are listed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

from bridge.adapters.features import ItemSink, ItemSource
from bridge.engine.item_links import StateLinks
from bridge.engine.text import one_line
from bridge.engine.verify.report import ItemVerify, VerifyReport
from bridge.schema_items import Item, ItemHeader, ItemKind, item_digest

if TYPE_CHECKING:
    from bridge.adapters.base import Reader, Writer
    from bridge.adapters.features import LoggedModels
    from bridge.state import StateStore

#: The order kinds are checked in (as the sync copies them).
KINDS: tuple[ItemKind, ...] = ("prompt", "dataset", "model", "trace")
#: How a differing field is named in a finding.
_LABELS = {
    "spans": "span tree",
    "run_source_id": "run link",
    "model_source_id": "logged model link",
    "columns_json": "record schema",
    "execution_duration_ms": "execution duration",
    "request_time_ms": "request time",
}


def differing_parts(source: Item, copy: Item) -> list[str]:
    """The fields of ``source`` whose value in ``copy`` changes the digest, by name: the
    copy's value put in place of the source's, one field at a time."""
    if type(source) is not type(copy):
        return [f"kind ({type(copy).__name__.lower()})"]
    base = item_digest(source)
    out: list[str] = []
    for name in type(source).model_fields:
        if name == "header":
            continue
        hybrid = source.model_copy(update={name: getattr(copy, name)})
        if item_digest(hybrid) != base:
            out.append(_LABELS.get(name, name.replace("_", " ")))
    return out or ["content"]


def verify_items(
    report: VerifyReport,
    reader: Reader,
    writer: Writer,
    state: StateStore,
    *,
    logged_models: LoggedModels | None = None,
    workers: int = 4,
) -> None:
    """Every item kind the reader has and its options keep, into ``report``."""
    if not isinstance(reader, ItemSource):
        return
    sink = writer if isinstance(writer, ItemSink) else None
    try:
        have = reader.item_kinds()
    except Exception as exc:
        report.errors.append(f"items of {reader.display_uri}: {one_line(exc)}")
        return
    links = StateLinks(state, writer, create=False, logged_models=logged_models)
    for kind in KINDS:
        if kind not in have or kind not in reader.options.items:
            continue
        try:
            headers = list(reader.list_items(kind))
        except Exception as exc:
            report.errors.append(f"cannot list {kind}s of {reader.display_uri}: {one_line(exc)}")
            continue
        counts = {"listed": len(headers), "copies": 0}
        report.item_counts[kind] = counts
        if sink is None or kind not in sink.item_kinds():
            counts["not-copied"] = len(headers)
            if headers:  # left out on purpose by every sync: listed, not a finding
                report.items.append(_not_copied(reader, writer, kind, len(headers)))
            continue
        for header in headers:
            links.know(header.projects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            lines = list(pool.map(partial(_one, reader, sink, state, links), headers))
        for line in lines:
            counts[line.status] = counts.get(line.status, 0) + 1
            if line.dest_id is not None:
                counts["copies"] += 1
            if line.status != "ok":
                report.items.append(line)


def _not_copied(reader: Reader, writer: Writer, kind: str, n: int) -> ItemVerify:
    return ItemVerify(
        kind=kind,
        source_id=reader.display_uri,
        name=f"{n} {kind}s",
        status="not-copied",
        findings=[f"{kind}s-not-copied: {n} ({writer.item_gap(kind)})"],
    )


def _one(
    source: ItemSource, sink: ItemSink, state: StateStore, links: StateLinks, header: ItemHeader
) -> ItemVerify:
    """One item: its copy found (state, else identity tag), read back and compared."""
    line = ItemVerify(kind=header.kind, source_id=header.source_id, name=header.name)
    what = f"{header.kind} {header.name}"
    try:
        mark = state.get_item(links.dest_uri, header.source_id)
        line.stale = mark is not None and mark.fingerprint != header.fingerprint
        dest_id = mark.dest_id if mark is not None else sink.find_item(header, links)
        copy = sink.read_item_back(header.kind, dest_id) if dest_id is not None else None
        if copy is None and mark is not None:  # recorded, but gone: maybe copied anew since
            dest_id = sink.find_item(header, links)
            copy = sink.read_item_back(header.kind, dest_id) if dest_id is not None else None
        if copy is None:
            line.status = "unsynced"
            line.findings.append(f"{what}: missing")
            return line
        line.dest_id = dest_id
        item = source.read_item(header)
        if item_digest(item) != item_digest(copy):
            line.status = "mismatch"
            line.findings += [f"{what}: {part} differs" for part in differing_parts(item, copy)]
    except Exception as exc:
        line.status = "error"
        line.error = one_line(exc)
        line.findings.append(f"{what}: could not be checked")
    return line
