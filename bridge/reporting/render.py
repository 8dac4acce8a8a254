"""Render a plan or a verify report in one format, credentials removed."""

from __future__ import annotations

from collections.abc import Callable

from bridge.engine.model import Plan
from bridge.engine.verify import VerifyReport
from bridge.redact import redact, redact_fields
from bridge.reporting.html_page import Streams
from bridge.reporting.html_plan import render_html
from bridge.reporting.html_verify import render_verify_html
from bridge.reporting.plan import as_json, as_markdown, as_text
from bridge.reporting.verify import verify_as_json, verify_as_markdown, verify_as_text

RENDERERS: dict[str, Callable[[Plan], str]] = {
    "text": as_text,
    "json": as_json,
    "markdown": as_markdown,
    "html": render_html,
}
VERIFY_RENDERERS: dict[str, Callable[[VerifyReport], str]] = {
    "text": verify_as_text,
    "json": verify_as_json,
    "markdown": verify_as_markdown,
    "html": render_verify_html,
}


def render(report: Plan | VerifyReport, fmt: str, streams: Streams | None = None) -> str:
    """``report`` in ``fmt`` (text, json, markdown or html; html plots ``streams``).

    Credentials are removed (:mod:`bridge.redact`) from every field before the format
    escapes it, and from the result."""
    report = redact_fields(report)
    if isinstance(report, VerifyReport):
        return redact(VERIFY_RENDERERS[fmt](report))
    if fmt == "html":
        return redact(render_html(report, streams))
    return redact(RENDERERS[fmt](report))
