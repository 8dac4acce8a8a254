"""The workspace-items section of every report (traces, prompts, evaluation datasets):
per kind how many the source listed and what became of them, then one line per item
created, updated, in conflict (or settled) or failed with what it adds or changes (in a
dry run: the diff)."""

from __future__ import annotations

from typing import Any

from bridge.display import md_code
from bridge.engine.model import ItemPlan, Plan
from bridge.engine.verify import ItemVerify, VerifyReport
from bridge.reporting.html_page import e, table
from bridge.reporting.lines import md

_ORDER = ("prompt", "dataset", "model", "trace")


#: Count keys that are nouns: (singular, plural).
_NOUNS = {"copies": ("copy", "copies")}


def counts_text(counts: dict[str, int]) -> str:
    """``3 listed, 1 create, 2 unchanged``, ``1 listed, 1 copy, 1 ok``: listed always, the
    rest when not zero."""
    parts = [f"{counts.get('listed', 0)} listed"]
    for k, n in counts.items():
        if k != "listed" and n:
            word = _NOUNS[k][0 if n == 1 else 1] if k in _NOUNS else k
            parts.append(f"{n} {word}")
    return ", ".join(parts)


def _kinds(counts: dict[str, dict[str, int]]) -> list[str]:
    return sorted(counts, key=lambda k: (_ORDER.index(k) if k in _ORDER else 9, k))


def _plan_kinds(plan: Plan) -> list[str]:
    """The plan's kinds worth a line: those the source listed something of, or with a line.
    None: no section at all (a source with no workspace items says nothing of them)."""
    lined = {i.kind for i in plan.items}
    return [k for k in _kinds(plan.item_counts) if plan.item_counts[k].get("listed") or k in lined]


def _listed_kinds(report: VerifyReport) -> list[str]:
    """Verify's kinds worth a line: those the source listed something of."""
    return [k for k in _kinds(report.item_counts) if report.item_counts[k].get("listed")]


def _label(line: ItemPlan) -> str:
    return "FAILED" if line.outcome == "failed" else line.action


def _what(line: ItemPlan) -> str:
    parts = list(line.changes)
    if line.conflicts:
        parts.append("left untouched: the copy was edited in the destination (see conflicts)")
    parts += [c.resolution for c in line.resolved if c.resolution]
    if line.error:
        parts.append(f"error: {line.error}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- sync plan


def plan_items_dict(plan: Plan) -> dict[str, Any]:
    """The JSON form: counts per kind and the item lines."""
    return {
        "item_counts": plan.item_counts,
        "items": [i.model_dump(exclude={"warnings"}) for i in plan.items],
    }


def plan_items_text(plan: Plan) -> list[str]:
    kinds = _plan_kinds(plan)
    if not kinds and not plan.items:
        return []
    out = ["workspace items"]
    for kind in kinds:
        out.append(f"  {kind}s: {counts_text(plan.item_counts.get(kind, {}))}")
        for line in (i for i in plan.items if i.kind == kind):
            dest = f" -> {line.dest_id}" if line.dest_id else ""
            what = _what(line)
            out.append(
                f"    {_label(line):<9} {line.name} [{line.source_id}]{dest}"
                + (f": {what}" if what else "")
            )
    return out


def plan_items_markdown(plan: Plan) -> list[str]:
    kinds = _plan_kinds(plan)
    if not kinds and not plan.items:
        return []
    out = ["", "### Workspace items", "", "| kind | counts |", "|---|---|"]
    for kind in kinds:
        out.append(f"| {md(kind)} | {md(counts_text(plan.item_counts.get(kind, {})))} |")
    if plan.items:
        out += [
            "",
            "| kind | item | destination | action | outcome | changes |",
            "|---|---|---|---|---|---|",
        ]
        for i in plan.items:
            out.append(
                f"| {md(i.kind)} | {md(i.name)} {md_code(i.source_id)} | {md(i.dest_id)} "
                f"| {i.action} | {i.outcome} | {md(_what(i))} |"
            )
    return out


def plan_items_html(plan: Plan) -> list[str]:
    kinds = _plan_kinds(plan)
    if not kinds and not plan.items:
        return []
    out = ["<h2>Workspace items</h2>"]
    rows = [("", [e(k), e(counts_text(plan.item_counts.get(k, {})))]) for k in kinds]
    out.append(table(["kind", "counts"], rows))
    if plan.items:
        item_rows = [
            (
                "failed" if i.outcome == "failed" else i.action,
                [
                    e(i.kind),
                    f"{e(i.name)}<br><code>{e(i.source_id)}</code>",
                    f"<span class='mono'>{e(i.dest_id)}</span>",
                    f"<span class='tag {e(i.action)}'>{e(i.action)}</span>",
                    f"<span class='tag {e(i.outcome)}'>{e(i.outcome)}</span>",
                    "<br>".join(e(c) for c in i.changes),
                    e(i.error),
                ],
            )
            for i in plan.items
        ]
        head = ["kind", "item", "destination id", "action", "outcome", "changes", "error"]
        out.append(table(head, item_rows))
    return out


# --------------------------------------------------------------------------- verify


def verify_items_dict(report: VerifyReport) -> dict[str, Any]:
    return {
        "item_counts": report.item_counts,
        "items": [i.model_dump() for i in report.items],
    }


def _verify_line(i: ItemVerify) -> str:
    stale = " [source changed since the last sync]" if i.stale else ""
    error = f": {i.error}" if i.error else ""
    return f"    {i.status:<10} {i.name} [{i.source_id}]{stale}{error}"


def verify_items_text(report: VerifyReport) -> list[str]:
    if not _listed_kinds(report) and not report.items:
        return []
    out = ["workspace items"]
    for kind in _listed_kinds(report):
        out.append(f"  {kind}s: {counts_text(report.item_counts[kind])}")
        for i in (i for i in report.items if i.kind == kind):
            out.append(_verify_line(i))
            out += [f"      {f}" for f in i.findings]
    return out


def verify_items_markdown(report: VerifyReport) -> list[str]:
    if not _listed_kinds(report) and not report.items:
        return []
    out = ["", "### Workspace items", "", "| kind | counts |", "|---|---|"]
    for kind in _listed_kinds(report):
        out.append(f"| {md(kind)} | {md(counts_text(report.item_counts[kind]))} |")
    if report.items:
        out += ["", "| kind | item | status | findings |", "|---|---|---|---|"]
        for i in report.items:
            found = "; ".join(i.findings + ([i.error] if i.error else []))
            out.append(
                f"| {md(i.kind)} | {md(i.name)} {md_code(i.source_id)} | {i.status} | {md(found)} |"
            )
    return out


def verify_items_html(report: VerifyReport) -> list[str]:
    if not _listed_kinds(report) and not report.items:
        return []
    out = ["<h2>Workspace items</h2>"]
    rows = [("", [e(k), e(counts_text(report.item_counts[k]))]) for k in _listed_kinds(report)]
    out.append(table(["kind", "counts"], rows))
    if report.items:
        item_rows = [
            (
                i.status,
                [
                    e(i.kind),
                    f"{e(i.name)}<br><code>{e(i.source_id)}</code>",
                    f"<span class='tag {e(i.status)}'>{e(i.status)}</span>",
                    f"<span class='mono'>{e(i.dest_id)}</span>",
                    "<br>".join(e(f) for f in i.findings + ([i.error] if i.error else [])),
                ],
            )
            for i in report.items
        ]
        out.append(table(["kind", "item", "status", "destination id", "findings"], item_rows))
    return out
