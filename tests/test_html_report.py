"""The HTML report: content, escaping of user text, and what a real browser makes of it."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bridge.engine.model import Conflict, Plan, RunPlan
from bridge.engine.verify import Mismatch, RunVerify, StreamSample, VerifyReport
from bridge.reporting import MAX_PLOT_POINTS, render, render_html, render_verify_html
from bridge.schema import Warning_

EVIL = "<script>alert(1)</script>"
EVIL_NOTE = '"><img src=x onerror=alert(2)>'


def _plan() -> Plan:
    plan = Plan(source="wandb-offline:/data/wandb", dest="mlflow:sqlite:///m.db", dry_run=False)
    plan.runs = [
        RunPlan(
            source_id="wandb:acme/demo/aaa",
            name=EVIL,
            project="demo",
            action="create",
            outcome="done",
            dest_id="d1",
            params_to_write={"lr": "0.1", "bs": "32"},
            tags_to_write={"t": "1"},
            points_written=1234,
            files_written=3,
            warnings=[
                Warning_(
                    source_id="wandb:acme/demo/aaa",
                    code="truncated",
                    message=f"param 'blob' is 100000 chars {EVIL_NOTE}",
                ),
                Warning_(
                    source_id="wandb:acme/demo/aaa",
                    code="non-finite",
                    message="metric 'acc': 2 ±inf point(s) cannot be stored faithfully",
                ),
            ],
        ),
        RunPlan(
            source_id="wandb:acme/demo/bbb",
            name="second",
            project="demo",
            action="conflict",
            outcome="skipped",
            dest_id="d2",
            reason="conflict: left untouched",
            conflicts=[
                Conflict(
                    source_id="wandb:acme/demo/bbb",
                    field="param:lr",
                    source_value="0.5",
                    dest_value="0.25",
                    synced_value="0.125",
                    reason="changed at the source; the destination's params are immutable",
                )
            ],
            resolved=[
                Conflict(
                    source_id="wandb:acme/demo/bbb",
                    field="tag:team",
                    source_value="vision",
                    dest_value="nlp",
                    synced_value="vision-old",
                    reason="changed in the destination since the last sync",
                    resolution="dest-wins: kept the destination's value",
                )
            ],
        ),
        RunPlan(
            source_id="wandb:acme/other/ccc",
            project="other",
            action="update",
            outcome="failed",
            error="RunError: boom & <b>bust</b>",
        ),
    ]
    return plan


def _streams() -> dict:
    src = [(float(i), 1.0 / (i + 1)) for i in range(2000)]
    dst = [(float(i), 1.0 / (i + 1) + (0.5 if i == 700 else 0.0)) for i in range(2000)]
    dst.append((2000.0, float("inf")))  # not plottable: dropped, not a crash
    return {("wandb:acme/demo/aaa", "loss"): (src, dst)}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.polylines: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "polyline":
            self.polylines.append(dict(attrs))


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_plan_page_content() -> None:
    page = render_html(_plan(), _streams())
    assert page.startswith("<!DOCTYPE html>")
    # summary counts
    assert re.search(r"<b>3</b><span>runs</span>", page)
    assert re.search(r"<b>1234</b><span>points written</span>", page)
    assert re.search(r"<b>1</b><span>conflicts</span>", page)
    assert re.search(r"<b>1</b><span>failed</span>", page)
    assert re.search(r"<b>2</b><span>warnings</span>", page)
    # one table per project
    assert "Project demo" in page and "Project other" in page
    # the conflict row: both values and the last synced one, highlighted
    row = re.search(r"<tr class='conflict'><td><code>wandb:acme/demo/bbb</code></td>.*?</tr>", page)
    assert row is not None
    for value in ("param:lr", ">0.5<", ">0.25<", ">0.125<", "immutable"):
        assert value in row.group(0)
    # a conflict settled by policy: its resolution, not highlighted as open
    settled = re.search(r"<tr class='resolved'>.*?</tr>", page)
    assert settled is not None and "dest-wins: kept" in settled.group(0)
    assert ">vision<" in settled.group(0) and ">nlp<" in settled.group(0)
    # warnings, by code
    assert "<span class='tag'>truncated</span>" in page
    assert "<span class='tag'>non-finite</span>" in page and "±inf" in page
    # error text escaped, failed row marked
    assert "RunError: boom &amp; &lt;b&gt;bust&lt;/b&gt;" in page
    assert "<tr class='failed'>" in page
    # plot: two polylines, each downsampled to ≤ 500 points
    tags = _parse(page)
    assert tags.tags.count("svg") == 1
    assert len(tags.polylines) == 2
    for line in tags.polylines:
        points = (line["points"] or "").split()
        assert 2 <= len(points) <= MAX_PLOT_POINTS
        assert all(re.fullmatch(r"-?\d+\.\d,-?\d+\.\d", p) for p in points)
    # self-contained: no script, no external asset
    assert "script" not in tags.tags
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "Content-Security-Policy" in page


def test_user_text_is_escaped() -> None:
    page = render_html(_plan())
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "script" not in _parse(page).tags
    assert "img" not in _parse(page).tags


def test_registered_in_report_render() -> None:
    plan = _plan()

    def undated(page: str) -> str:
        return re.sub(r"generated [^<]*", "generated", page)

    assert undated(render(plan, "html")) == undated(render_html(plan))
    assert render(plan, "text").startswith("sync:")


def _verify_report() -> VerifyReport:
    sid = "wandb:acme/demo/aaa"
    return VerifyReport(
        source="wandb-offline:/d",
        dest="mlflow:sqlite:///m.db",
        runs=[
            RunVerify(
                source_id=sid,
                name=EVIL,
                project="demo",
                dest_id="d1",
                status="mismatch",
                points_checked=150,
                files_checked=2,
                mismatches=[
                    Mismatch(
                        source_id=sid,
                        field="metric:loss",
                        source_value="50 points, checksum 00aa",
                        dest_value="50 points, checksum 00bb",
                        detail="1 only at the source (e.g. step 3 ts 1 value 0.25)",
                    )
                ],
            ),
            RunVerify(source_id="wandb:acme/demo/b", project="demo", status="ok"),
        ],
        samples=[
            StreamSample(source_id=sid, key="loss", source=[(0, 1.0), (1, 0.5)], dest=[(0, 1.0)])
        ],
    )


def test_verify_page() -> None:
    report = _verify_report()
    page = render_verify_html(report)
    assert render(report, "html").count("<tr class='mismatch'>") == 2  # run row + mismatch row
    assert re.search(r"<b>1</b><span>mismatches</span>", page)
    assert re.search(r"<b>150</b><span>points checked</span>", page)
    assert "checksum 00aa" in page and "checksum 00bb" in page and "value 0.25" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and EVIL not in page
    assert len(_parse(page).polylines) == 2
    assert "metric:loss" in render(report, "text") and "metric:loss" in render(report, "markdown")


# ---------------------------------------------------------------------------- a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.e2e
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_headless_chromium_renders_escaped_name(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(_plan(), _streams()), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0 and "<body" in dom, proc.stderr[-2000:]
    tags = _parse(dom)
    # the name is text in the DOM (serialized escaped), never an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "script" not in tags.tags
    assert "img" not in tags.tags  # the attribute-breaking note did not become an element
    # the browser parsed the plot as SVG with both lines
    assert tags.tags.count("svg") == 1 and len(tags.polylines) == 2
    assert "wandb:acme/demo/bbb" in dom and "0.125" in dom
