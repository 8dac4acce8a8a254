"""A plan (dry run, or a sync with its outcomes) as one self-contained HTML page."""

from __future__ import annotations

from collections import Counter
from itertools import groupby

from bridge.engine.model import Plan, RunPlan
from bridge.reporting.html_page import (
    Streams,
    card_row,
    e,
    generated,
    num,
    page,
    plot_section,
    project_heading,
    table,
)
from bridge.reporting.items import plan_items_html


def _run_cells(run: RunPlan) -> list[str]:
    pending = run.outcome in ("pending", "skipped")
    points = run.points_new if pending else run.points_written
    files = run.files_new if pending else run.files_written
    name = f"<br><span class='muted'>{e(run.name)}</span>" if run.name else ""
    return [
        f"<code>{e(run.source_id)}</code>{name}",
        f"<span class='tag {e(run.action)}'>{e(run.action)}</span>",
        f"<span class='tag {e(run.outcome)}'>{e(run.outcome)}</span>",
        f"<span class='mono'>{e(run.dest_id)}</span>",
        num(points),
        num(run.n_params),
        num(run.n_tags),
        num(files) + "".join(f"<br><small>{e(a)}</small>" for a in run.artifacts_new),
        num(len(run.warnings) or None),
        e(run.reason),
        e(run.error),
    ]


def _row_class(run: RunPlan) -> str:
    if run.outcome == "failed":
        return "failed"
    if run.conflicts or run.action == "conflict":
        return "conflict"
    return run.action


def render_html(plan: Plan, streams: Streams | None = None) -> str:
    """The plan (with outcomes, if applied) as one self-contained HTML page.

    ``streams`` optionally maps (run source id, metric key) to (source points, destination
    points) as (step, value) pairs; each becomes an inline SVG plot (≤500 points a side).
    """
    title = ("Dry run" if plan.dry_run else "Sync") + f": {plan.source} → {plan.dest}"
    failed = sum(1 for r in plan.runs if r.outcome == "failed") + sum(
        1 for m in plan.models if m.outcome == "failed"
    )
    failed += sum(1 for i in plan.items if i.outcome == "failed")
    body = [
        f"<h1>{e('Dry run — nothing written' if plan.dry_run else 'Sync report')}</h1>",
        f"<div class='uri'>{e(plan.source)} → {e(plan.dest)}</div>",
        generated(),
    ]
    cards: list[tuple[str, object, str]] = [("runs", len(plan.runs), "")]
    cards += [(action, n, "") for action, n in sorted(plan.counts().items())]
    points = (
        sum(r.points_new or 0 for r in plan.runs)
        if plan.dry_run
        else sum(r.points_written for r in plan.runs)
    )
    cards += [
        ("points to write" if plan.dry_run else "points written", points, ""),
        ("failed", failed, "bad" if failed else ""),
        ("conflicts", len(plan.conflicts), "bad" if plan.conflicts else ""),
        ("warnings", len(plan.warnings), "warn" if plan.warnings else ""),
    ]
    body.append(card_row(cards))
    if plan.skipped:
        body.append(f"<p class='card warn'>not run: {e(plan.skipped)}</p>")
    for err in plan.errors:
        body.append(f"<p class='card bad'>error: {e(err)}</p>")

    # By project, then source id; read back one line at a time (engine/lines.py).
    sizes = Counter(r.project for r in plan.runs)
    ordered = plan.runs.ordered(lambda r: (r.project, r.source_id))
    head = [
        "run",
        "action",
        "outcome",
        "destination id",
        "points",
        "params",
        "tags",
        "files",
        "warnings",
        "reason",
        "error",
    ]
    for project, runs in groupby(ordered, key=lambda r: r.project):
        body.append(project_heading(project, sizes[project]))
        rows = [(_row_class(r), _run_cells(r)) for r in runs]
        body.append(table(head, rows))

    if plan.models:
        body.append("<h2>Registered models</h2>")
        model_rows = [
            (
                "failed" if m.outcome == "failed" else ("conflict" if m.conflicts else ""),
                [
                    f"<code>{e(m.source_id)}</code>",
                    e(m.dest_name),
                    e(m.action),
                    e(m.outcome),
                    "<br>".join(
                        f"{e(v.source_version)} → {e(v.dest_version or 'next')}"
                        + (f" <small>{e(v.note)}</small>" if v.note else "")
                        for v in m.versions
                    ),
                    num(m.bytes_new),
                    "<br>".join(
                        f"<code>{e(a.alias)}</code> {e(a.action)}: {e(a.dest_from or '-')} → "
                        f"{e(a.dest_to or '-')}"
                        + (f" <small>{e(a.note)}</small>" if a.note else "")
                        for a in m.aliases
                    ),
                    e(m.error),
                ],
            )
            for m in plan.models
        ]
        body.append(
            table(
                [
                    "model",
                    "destination",
                    "action",
                    "outcome",
                    "new versions",
                    "bytes",
                    "aliases",
                    "error",
                ],
                model_rows,
            )
        )
    body += plan_items_html(plan)
    if plan.conflicts:
        body.append("<h2>Conflicts (left untouched)</h2>")
        rows = [
            (
                "conflict",
                [
                    f"<code>{e(c.source_id)}</code>",
                    f"<code>{e(c.field)}</code>",
                    f"<span class='val-src'>{e(c.source_value)}</span>",
                    f"<span class='val-dst'>{e(c.dest_value)}</span>",
                    e(c.synced_value),
                    e(c.reason),
                ],
            )
            for c in plan.conflicts
        ]
        body.append(table(["run", "field", "source", "destination", "last synced", "why"], rows))
    if plan.resolved:
        body.append("<h2>Conflicts settled</h2>")
        rows = [
            (
                "resolved",
                [
                    f"<code>{e(c.source_id)}</code>",
                    f"<code>{e(c.field)}</code>",
                    f"<span class='val-src'>{e(c.source_value)}</span>",
                    f"<span class='val-dst'>{e(c.dest_value)}</span>",
                    e(c.synced_value),
                    e(c.resolution),
                ],
            )
            for c in plan.resolved
        ]
        body.append(
            table(["run", "field", "source", "destination", "last synced", "resolution"], rows)
        )
    if plan.warnings:
        body.append("<h2>Warnings</h2>")
        rows = [
            (
                f"warning {w.code}",
                [
                    f"<code>{e(w.source_id)}</code>",
                    f"<span class='tag'>{e(w.code)}</span>",
                    e(w.message),
                ],
            )
            for w in plan.warnings
        ]
        body.append(table(["run", "code", "message"], rows))
    body += plot_section(streams, "Metric streams")
    return page(title, body)
