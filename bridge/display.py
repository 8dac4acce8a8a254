"""Display escaping: names, notes, tags and error strings from sources and servers are data.

Whatever a source or a server sends can carry control characters (ESC sequences that clear
the screen or retitle the window, BEL, CR that overwrites a line, C1 controls), Unicode bidi
overrides that make text read backwards, or Markdown/HTML that forges table rows or links.
Everything the bridge *shows* passes through one of these functions; what it *writes* to a
destination never does (escaping is for display only, values stay byte-identical).

* :func:`for_terminal` — a console line or a log line: controls rendered visibly (``\\x1b``,
  ``\\u202e``); LF too, unless the caller prints several lines on purpose.
* :func:`md_text` / :func:`md_code` — a Markdown table cell or inline text: the same, plus
  HTML (``<``, ``>``, ``&``), ``|``, backslashes, backticks, link/emphasis brackets and a
  leading block marker escaped, so a value can neither end its cell nor add markup.
* :class:`EscapingFilter` / :func:`escape_logging` — the same for log records.
"""

from __future__ import annotations

import logging
import re
import traceback
from types import TracebackType

from bridge.logrecords import install_message_rewrite

#: Bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), the implicit
#: marks, and the Unicode line/paragraph separators some log viewers break lines at.
_BIDI_AND_SEPARATORS = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_SEPARATORS = [0x2028, 0x2029]
_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _visible(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _table(keep: tuple[int, ...] = ()) -> dict[int, str]:
    controls = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]  # C0, DEL, C1
    codes = [*controls, *_BIDI_AND_SEPARATORS, *_SEPARATORS]
    return {c: _visible(c) for c in codes if c not in keep}


_ONE_LINE = _table()
_MULTILINE = _table(keep=(0x0A, 0x09))


def for_terminal(text: object, *, multiline: bool = False) -> str:
    """``text`` safe to print: no control character or bidi override reaches the terminal.

    ``multiline`` keeps LF and TAB (a traceback, a whole report whose fields were escaped
    one line at a time); CR is always escaped, it would overwrite what came before.
    """
    value = "" if text is None else str(text)
    return value.translate(_MULTILINE if multiline else _ONE_LINE)


#: Backslash first, so the escapes added after it are not escaped again.
_MD_BACKSLASH = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})
_MD_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
#: A first character that would start a heading, list, quote or setext underline.
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+=-])")
#: What a code span shows as it is: no backtick (it would end the span), no pipe (it would
#: end the table cell in renderers that split cells first), no HTML for lax renderers.
_MD_CODE_SAFE = re.compile(r"[^`|<>&]*")


def md_text(value: object) -> str:
    """``value`` as Markdown inline text (a table cell): shown, never interpreted."""
    text = for_terminal(value).translate(_MD_BACKSLASH).translate(_MD_HTML)
    return _MD_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text, count=1)


def md_code(value: object) -> str:
    """``value`` as a code span when that shows it verbatim, else as :func:`md_text`.

    Inside a code span nothing can be escaped, so a value a span cannot hold verbatim is
    plain escaped text instead.
    """
    text = for_terminal(value)
    if text and text == str(value) and _MD_CODE_SAFE.fullmatch(text):
        return f"`{text}`"
    return md_text(value)


class EscapingFilter(logging.Filter):
    """Escapes a log record's message (one line) and traceback (lines kept) for display."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = for_terminal(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = escaped_traceback(*record.exc_info)
        if record.stack_info:
            record.stack_info = for_terminal(record.stack_info, multiline=True)
        return True


def escaped_traceback(
    kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> str:
    """A traceback whose exception messages are one line each: the frames are the bridge's
    own code, but a message can hold a server's answer with an LF that would forge a line."""
    parts = []
    for chunk in traceback.format_exception(kind, exc, tb):
        if chunk.startswith(("Traceback (", "  File ", "\n")):
            parts.append(for_terminal(chunk, multiline=True))
        else:  # an exception line ("ValueError: ...") or a note
            parts.append(for_terminal(chunk.removesuffix("\n")) + "\n")
    return "".join(parts).removesuffix("\n")


def escape_logging(logger: logging.Logger | None = None) -> None:
    """Escape what the process logs.

    With ``logger``: an :class:`EscapingFilter` on its handlers. Without: on the handlers of
    the root and of every logger that has its own (``mlflow`` does), and records made from
    now on get their message escaped when made, for handlers libraries add later (``mlflow``
    configures its handler when first imported, inside a command).
    """
    if logger is not None:
        _filter_handlers(logger)
        return
    for known in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        if isinstance(known, logging.Logger):
            _filter_handlers(known)
    install_message_rewrite(for_terminal, "bridge_escaping")


def _filter_handlers(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if not any(isinstance(f, EscapingFilter) for f in handler.filters):
            handler.addFilter(EscapingFilter())
