"""Reports for people and tools: a sync plan (dry run or with outcomes) and a verify
report as text, JSON, Markdown or one self-contained HTML page, with plots.

The engine produces the data (:class:`~bridge.engine.model.Plan`,
:class:`~bridge.engine.verify.VerifyReport`) and knows nothing of how it is shown; this
package reads that data and never the other way round.
"""

from __future__ import annotations

from bridge.reporting.html_page import MAX_PLOT_POINTS, Streams, svg_plot
from bridge.reporting.html_plan import render_html
from bridge.reporting.html_verify import render_verify_html
from bridge.reporting.plan import as_dict, as_json, as_markdown, as_text, model_lines, text_chunks
from bridge.reporting.render import RENDERERS, VERIFY_RENDERERS, render, render_chunks
from bridge.reporting.verify import (
    verify_as_dict,
    verify_as_json,
    verify_as_markdown,
    verify_as_text,
)

__all__ = [
    "MAX_PLOT_POINTS",
    "RENDERERS",
    "VERIFY_RENDERERS",
    "Streams",
    "as_dict",
    "as_json",
    "as_markdown",
    "as_text",
    "model_lines",
    "render",
    "render_chunks",
    "render_html",
    "render_verify_html",
    "svg_plot",
    "text_chunks",
    "verify_as_dict",
    "verify_as_json",
    "verify_as_markdown",
    "verify_as_text",
]
