"""One self-contained HTML page for a plan (dry run or sync) or a verify report.

For reviewers who will not read a terminal: summary counts, per-project run tables,
conflicts with both values and the last synced one, warnings, and small inline SVG plots of
source vs destination for changed or mismatched metric streams.

The page works offline and runs nothing: inline CSS only, no script, no external asset,
and a Content-Security-Policy that forbids scripts and remote loads anyway. Every piece of
source text (run names, notes, keys, values, messages) is user input and goes through
:func:`html.escape`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from bridge.display import for_terminal
from bridge.engine.model import Plan, RunPlan

if TYPE_CHECKING:
    from bridge.engine.verify import VerifyReport

#: (run source id, metric key) → (source points, destination points), points as (x, y).
Streams = Mapping[tuple[str, str], tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]]

MAX_PLOT_POINTS = 500
PLOT_W, PLOT_H, PAD = 560, 170, 34

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d232a}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.uri{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:90px}
.card b{display:block;font-size:20px} .card span{color:#57606a;font-size:12px}
.card.bad{border-color:#cf222e;background:#ffebe9} .card.warn{border-color:#bf8700;background:#fff8c5}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
tr.conflict td,tr.mismatch td{background:#fff1e5} tr.failed td,tr.error td{background:#ffebe9}
tr.unsynced td{background:#ffebe9} tr.unchanged td,tr.ok td,tr.not-copied td{color:#57606a}
.val-src{color:#0550ae} .val-dst{color:#953800} .muted{color:#57606a}
.tag{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;background:#eaeef2}
.tag.conflict,.tag.mismatch{background:#ffd8b5} .tag.failed,.tag.error{background:#ffcecb}
.tag.unsynced{background:#ffcecb}
.tag.done,.tag.ok{background:#dafbe1}
figure{display:inline-block;margin:6px 12px 12px 0;border:1px solid #d0d7de;border-radius:6px;padding:6px}
figcaption{font-size:12px;margin-bottom:4px} svg text{font:10px ui-monospace,monospace;fill:#57606a}
.legend-src{color:#0969da} .legend-dst{color:#bc4c00}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def e(value: object) -> str:
    """Escape anything for HTML text or an attribute value (controls and bidi overrides
    shown, not obeyed: the page may be printed to a terminal, and U+202E would reverse it)."""
    return html.escape(for_terminal(value), quote=True)


def _page(title: str, body: Iterable[str]) -> str:
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
            "<meta name='viewport' content='width=device-width,initial-scale=1'>",
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n",
            *body,
            "\n</body></html>\n",
        ]
    )


def _cards(items: Iterable[tuple[str, object, str]]) -> str:
    out = ["<div class='cards'>"]
    for label, value, kind in items:
        cls = f"card {kind}" if kind else "card"
        out.append(f"<div class='{cls}'><b>{e(value)}</b><span>{e(label)}</span></div>")
    out.append("</div>")
    return "".join(out)


def _table(head: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """``rows`` are (row class, already-escaped cells)."""
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cls, cells in rows:
        out.append(f"<tr class='{e(cls)}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _num(value: int | None) -> str:
    return "" if value is None else e(value)


def _project_heading(project: str, runs: int) -> str:
    noun = "run" if runs == 1 else "runs"
    return f"<h2>Project {e(project)} <span class='muted'>({runs} {noun})</span></h2>"


def _generated() -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<div class='muted'>generated {e(now)} by tracking-bridge</div>"


# ---------------------------------------------------------------------------- plots


def downsample(points: Sequence[Sequence[float]], limit: int = MAX_PLOT_POINTS) -> list:
    """At most ``limit`` finite points, evenly spaced (first and last kept)."""
    finite = [
        (float(p[0]), float(p[1]))
        for p in points
        if math.isfinite(float(p[0])) and math.isfinite(float(p[1]))
    ]
    n = len(finite)
    if n <= limit:
        return finite
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [finite[i] for i in idx]


def svg_plot(source: Sequence[Sequence[float]], dest: Sequence[Sequence[float]]) -> str:
    """Source (solid blue) and destination (dashed orange) as two polylines, one SVG."""
    src, dst = downsample(source), downsample(dest)
    both = src + dst
    if not both:
        return "<div class='muted'>no finite points to plot</div>"
    xs = [p[0] for p in both]
    ys = [p[1] for p in both]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    iw, ih = PLOT_W - 2 * PAD, PLOT_H - 2 * PAD + 14

    def coords(points: list[tuple[float, float]]) -> str:
        return " ".join(
            f"{PAD + (x - x0) / (x1 - x0) * iw:.1f},{PLOT_H - PAD + 6 - (y - y0) / (y1 - y0) * ih:.1f}"
            for x, y in points
        )

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{PLOT_W}' height='{PLOT_H}' "
        f"viewBox='0 0 {PLOT_W} {PLOT_H}' role='img'>",
        f"<rect x='{PAD}' y='{PAD - 8}' width='{iw}' height='{ih}' fill='none' stroke='#d0d7de'/>",
        f"<text x='2' y='{PAD}'>{e(f'{y1:.4g}')}</text>",
        f"<text x='2' y='{PLOT_H - PAD + 6}'>{e(f'{y0:.4g}')}</text>",
        f"<text x='{PAD}' y='{PLOT_H - 4}'>{e(f'{x0:.6g}')}</text>",
        f"<text x='{PLOT_W - PAD}' y='{PLOT_H - 4}' text-anchor='end'>{e(f'{x1:.6g}')}</text>",
    ]
    if src:
        parts.append(
            f"<polyline class='src' fill='none' stroke='#0969da' stroke-width='1.5' "
            f"points='{coords(src)}'/>"
        )
    if dst:
        parts.append(
            f"<polyline class='dst' fill='none' stroke='#bc4c00' stroke-width='1.5' "
            f"stroke-dasharray='4 3' points='{coords(dst)}'/>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _plots(streams: Streams | None, title: str) -> list[str]:
    if not streams:
        return []
    out = [
        f"<h2>{e(title)}</h2><div class='muted'><span class='legend-src'>━ source</span> "
        "<span class='legend-dst'>╍ destination</span> (x: step)</div>"
    ]
    for (source_id, key), (src, dst) in sorted(streams.items()):
        out.append(
            f"<figure><figcaption><code>{e(source_id)}</code> · <b>{e(key)}</b> "
            f"<span class='muted'>({len(src)} source / {len(dst)} destination points)</span>"
            f"</figcaption>{svg_plot(src, dst)}</figure>"
        )
    return out


# ---------------------------------------------------------------------------- plan


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
        _num(points),
        _num(len(run.params_to_write)),
        _num(len(run.tags_to_write)),
        _num(files) + "".join(f"<br><small>{e(a)}</small>" for a in run.artifacts_new),
        _num(len(run.warnings) or None),
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
    body = [
        f"<h1>{e('Dry run — nothing written' if plan.dry_run else 'Sync report')}</h1>",
        f"<div class='uri'>{e(plan.source)} → {e(plan.dest)}</div>",
        _generated(),
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
    body.append(_cards(cards))
    if plan.skipped:
        body.append(f"<p class='card warn'>not run: {e(plan.skipped)}</p>")
    for err in plan.errors:
        body.append(f"<p class='card bad'>error: {e(err)}</p>")

    by_project: dict[str, list[RunPlan]] = {}
    for run in plan.runs:
        by_project.setdefault(run.project, []).append(run)
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
    for project, runs in sorted(by_project.items()):
        body.append(_project_heading(project, len(runs)))
        rows = [(_row_class(r), _run_cells(r)) for r in sorted(runs, key=lambda r: r.source_id)]
        body.append(_table(head, rows))

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
                    _num(m.bytes_new),
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
            _table(
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
        body.append(_table(["run", "field", "source", "destination", "last synced", "why"], rows))
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
            _table(["run", "field", "source", "destination", "last synced", "resolution"], rows)
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
        body.append(_table(["run", "code", "message"], rows))
    body += _plots(streams, "Metric streams")
    return _page(title, body)


# ---------------------------------------------------------------------------- verify


def render_verify_html(report: VerifyReport) -> str:
    """A verify report as one self-contained HTML page, mismatched streams plotted."""
    mismatches = report.mismatches
    body = [
        "<h1>Verify report</h1>",
        f"<div class='uri'>{e(report.source)} → {e(report.dest)}</div>",
        f"<div class='muted'>scope: {e(report.scope)}</div>",
        _generated(),
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
    body.append(_cards(cards))
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
        body.append(_project_heading(project, len(runs)))
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
                        _num(r.params_checked),
                        _num(r.tags_checked),
                        _num(r.metrics_checked),
                        _num(r.points_checked),
                        _num(r.files_checked),
                        "<br>".join(notes),
                    ],
                )
            )
        body.append(_table(head, rows))
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
        body.append(_table(["run", "field", "source", "destination", "detail"], rows))
    body += _plots(report.streams(), "Mismatched metric streams")
    return _page(f"Verify: {report.source} → {report.dest}", body)
