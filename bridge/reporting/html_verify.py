"""A verify report as one self-contained HTML page, mismatched streams plotted."""

from __future__ import annotations

from bridge.engine.verify import VerifyReport
from bridge.reporting.html_page import (
    card_row,
    e,
    generated,
    num,
    page,
    plot_section,
    project_heading,
    table,
)
from bridge.reporting.items import verify_items_html


def render_verify_html(report: VerifyReport) -> str:
    """A verify report as one self-contained HTML page, mismatched streams plotted."""
    mismatches = report.mismatches
    body = [
        "<h1>Verify report</h1>",
        f"<div class='uri'>{e(report.source)} → {e(report.dest)}</div>",
        f"<div class='muted'>scope: {e(report.scope)}</div>",
        generated(),
    ]
    counts = report.counts()
    cards: list[tuple[str, object, str]] = [("runs", len(report.runs), "")]
    for status, n in sorted(counts.items()):
        kind = "bad" if status in ("mismatch", "unsynced", "error") and n else ""
        cards.append((status, n, kind))
    cards += [
        ("points checked", sum(r.points_checked for r in report.runs), ""),
        ("files checked", sum(r.files_checked for r in report.runs), ""),
        ("mismatches", len(mismatches), "bad" if mismatches else ""),
    ]
    body.append(card_row(cards))
    for err in report.errors:
        body.append(f"<p class='card bad'>error: {e(err)}</p>")

    by_project: dict[str, list] = {}
    for run in report.runs:
        by_project.setdefault(run.project, []).append(run)
    head = [
        "run",
        "status",
        "destination id",
        "params",
        "tags",
        "metrics",
        "points",
        "files",
        "notes",
    ]
    for project, runs in sorted(by_project.items()):
        body.append(project_heading(project, len(runs)))
        rows = []
        for r in sorted(runs, key=lambda r: r.source_id):
            name = f"<br><span class='muted'>{e(r.name)}</span>" if r.name else ""
            notes = [e(n) for n in r.notes]
            if r.stale:
                notes.insert(0, "source changed since the last sync")
            if r.reason:
                notes.insert(0, f"not copied: {e(r.reason)}")
            if r.error:
                notes.append(f"error: {e(r.error)}")
            rows.append(
                (
                    r.status,
                    [
                        f"<code>{e(r.source_id)}</code>{name}",
                        f"<span class='tag {e(r.status)}'>{e(r.status)}</span>",
                        f"<span class='mono'>{e(r.dest_id)}</span>",
                        num(r.params_checked),
                        num(r.tags_checked),
                        num(r.metrics_checked),
                        num(r.points_checked),
                        num(r.files_checked),
                        "<br>".join(notes),
                    ],
                )
            )
        body.append(table(head, rows))
    if mismatches:
        body.append("<h2>Mismatches</h2>")
        rows = [
            (
                "mismatch",
                [
                    f"<code>{e(m.source_id)}</code>",
                    f"<code>{e(m.field)}</code>",
                    f"<span class='val-src'>{e(m.source_value)}</span>",
                    f"<span class='val-dst'>{e(m.dest_value)}</span>",
                    e(m.detail),
                ],
            )
            for m in mismatches
        ]
        body.append(table(["run", "field", "source", "destination", "detail"], rows))
    body += verify_items_html(report)
    body += plot_section(report.streams(), "Mismatched metric streams")
    return page(f"Verify: {report.source} → {report.dest}", body)
