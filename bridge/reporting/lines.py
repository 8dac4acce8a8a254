"""One line of a text report, one cell of a Markdown table: what a value may not do there."""

from __future__ import annotations

from bridge.display import for_terminal, md_text


def text_lines(lines: list[str]) -> str:
    """Each line as one terminal line: a CR, LF or ESC inside a value is shown, not obeyed."""
    return "".join(for_terminal(line) + "\n" for line in lines)


def md(text: object) -> str:
    """A Markdown table cell: a value cannot end its cell, add rows or inject markup."""
    return md_text(text)
