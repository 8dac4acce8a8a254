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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from bridge.display import for_terminal
from bridge.engine.sampling import downsample

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


def page(title: str, body: Iterable[str]) -> str:
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


def card_row(items: Iterable[tuple[str, object, str]]) -> str:
    out = ["<div class='cards'>"]
    for label, value, kind in items:
        cls = f"card {kind}" if kind else "card"
        out.append(f"<div class='{cls}'><b>{e(value)}</b><span>{e(label)}</span></div>")
    out.append("</div>")
    return "".join(out)


def table(head: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """``rows`` are (row class, already-escaped cells)."""
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cls, cells in rows:
        out.append(f"<tr class='{e(cls)}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def num(value: int | None) -> str:
    return "" if value is None else e(value)


def project_heading(project: str, runs: int) -> str:
    noun = "run" if runs == 1 else "runs"
    return f"<h2>Project {e(project)} <span class='muted'>({runs} {noun})</span></h2>"


def generated() -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<div class='muted'>generated {e(now)} by tracking-bridge</div>"


# ---------------------------------------------------------------------------- plots


def svg_plot(source: Sequence[Sequence[float]], dest: Sequence[Sequence[float]]) -> str:
    """Source (solid blue) and destination (dashed orange) as two polylines, one SVG."""
    src, dst = downsample(source, MAX_PLOT_POINTS), downsample(dest, MAX_PLOT_POINTS)
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


def plot_section(streams: Streams | None, title: str) -> list[str]:
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
