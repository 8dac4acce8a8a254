"""Render a plan or a verify report in one format, credentials removed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

from bridge.engine.lines import RunLines
from bridge.engine.model import Plan
from bridge.engine.verify import VerifyReport
from bridge.redact import redact
from bridge.reporting.html_page import Streams
from bridge.reporting.html_plan import render_html
from bridge.reporting.html_verify import render_verify_html
from bridge.reporting.plan import as_json, as_markdown, as_text, json_chunks, text_chunks
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
    return "".join(render_chunks(report, fmt, streams))


def render_chunks(
    report: Plan | VerifyReport, fmt: str, streams: Streams | None = None
) -> Iterator[str]:
    """:func:`render` in pieces to write as they come: a plan's JSON and text one run at
    a time (a 10,000-run report is never held whole); the other formats in one piece."""
    if fmt in ("json", "text") and isinstance(report, Plan):
        chunks = json_chunks if fmt == "json" else text_chunks
        for chunk in chunks(_redacted(report)):
            yield redact(chunk)  # whole JSON values / whole lines: no secret spans two
        return
    yield _render_whole(report, fmt, streams)


def _render_whole(report: Plan | VerifyReport, fmt: str, streams: Streams | None) -> str:
    report = _redacted(report)
    if isinstance(report, VerifyReport):
        return redact(VERIFY_RENDERERS[fmt](report))
    if fmt == "html":
        return redact(render_html(report, streams))
    return redact(RENDERERS[fmt](report))


_T = TypeVar("_T")


def _redacted(obj: _T) -> _T:
    """:func:`bridge.redact.redact_fields` (every string redacted before a format escapes
    it), copying only what redaction changes: the whole copy of a 10,000-run report was
    the peak of a pass's memory. The renderer sees the same values either way."""
    out: Any = obj
    if isinstance(obj, str):
        red = redact(obj)
        out = obj if red == obj else red
    elif isinstance(obj, BaseModel):
        changed = {}
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            new = _redacted(value)
            if new is not value:
                changed[name] = new
        out = obj.model_copy(update=changed) if changed else obj
    elif isinstance(obj, RunLines):  # plan lines, most on disk: redacted in one pass
        out = obj.transformed(_redacted)
    elif isinstance(obj, dict):
        pairs = [(_redacted(k), _redacted(v)) for k, v in obj.items()]
        same = all(k2 is k and v2 is v for (k2, v2), (k, v) in zip(pairs, obj.items(), strict=True))
        out = obj if same else dict(pairs)
    elif isinstance(obj, list | tuple):
        items = [_redacted(v) for v in obj]
        out = obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    return out  # type: ignore[no-any-return]
