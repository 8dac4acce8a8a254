"""A :class:`~bridge.engine.verify.VerifyReport` as text, JSON or Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bridge.display import md_code
from bridge.engine.verify import VerifyReport
from bridge.reporting.items import verify_items_dict, verify_items_markdown, verify_items_text
from bridge.reporting.lines import md, text_lines


def verify_as_dict(report: VerifyReport) -> dict[str, Any]:
    """The machine-readable verify result (`bridge verify --json`)."""
    return {
        "source": report.source,
        "dest": report.dest,
        "exit_code": report.exit_code(),
        "scope": report.scope,
        "filters": report.filters,
        "counts": report.counts(),
        "points_checked": sum(r.points_checked for r in report.runs),
        "files_checked": sum(r.files_checked for r in report.runs),
        "runs": [r.model_dump(exclude={"mismatches"}) for r in report.runs],
        "mismatches": [m.model_dump() for m in report.mismatches],
        **verify_items_dict(report),
        "errors": report.errors,
    }


def verify_as_json(report: VerifyReport) -> str:
    return json.dumps(verify_as_dict(report), indent=2, default=str)


def verify_as_text(report: VerifyReport) -> str:
    """One line per mismatch: run, field, source value, destination value (and why)."""
    lines = [f"verify: {report.source} -> {report.dest}", f"scope: {report.scope}"]
    for run in sorted(report.runs, key=lambda r: (r.project, r.source_id)):
        name = f" ({run.name})" if run.name else ""
        extra = f": {run.error or run.reason}" if run.error or run.reason else ""
        stale = " [source changed since the last sync]" if run.stale else ""
        lines.append(f"  {run.status:<10} {run.source_id}{name}{stale}{extra}")
    if report.mismatches:
        lines.append("mismatches:")
        for m in report.mismatches:
            detail = f" — {m.detail}" if m.detail else ""
            lines.append(
                f"  {m.source_id} {m.field}: source={m.source_value!r} "
                f"dest={m.dest_value!r}{detail}"
            )
    lines.extend(verify_items_text(report))
    for err in report.errors:
        lines.append(f"error: {err}")
    lines.append(
        f"summary: {report.counts_line()}; {sum(r.points_checked for r in report.runs)} points and "
        f"{sum(r.files_checked for r in report.runs)} files checked; "
        f"{len(report.mismatches)} mismatches"
    )
    return text_lines(lines)


def verify_as_markdown(report: VerifyReport) -> str:
    out = [f"## Verify: {md_code(report.source)} → {md_code(report.dest)}", ""]
    out += [f"Scope: {md(report.scope)}", ""]
    out += [f"{report.counts_line()}; {len(report.mismatches)} mismatches", ""]
    without = [r for r in report.runs if r.status in ("unsynced", "not-copied")]
    if without:
        out += ["| run | status | why |", "|---|---|---|"]
        for r in without:
            why = r.reason or "; ".join(r.notes)
            out.append(f"| {md_code(r.source_id)} | {r.status} | {md(why)} |")
        out.append("")
    if report.mismatches:
        out += [
            "| run | field | source | destination | detail |",
            "|---|---|---|---|---|",
        ]
        for m in report.mismatches:
            out.append(
                f"| {md_code(m.source_id)} | {md(m.field)} | {md(m.source_value)} "
                f"| {md(m.dest_value)} | {md(m.detail)} |"
            )
    else:
        out.append("No mismatches.")
    out += verify_items_markdown(report)
    return "\n".join(out) + "\n"


def iter_lines(report: VerifyReport) -> Iterator[str]:
    """The mismatch lines (run, field, source value, dest value) as tab-separated text."""
    for m in report.mismatches:
        yield "\t".join([m.source_id, m.field, str(m.source_value), str(m.dest_value)])
