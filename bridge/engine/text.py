"""Errors as the one line a plan, report and cycle row keep."""

from __future__ import annotations

from bridge.redact import redact


def one_line(exc: BaseException) -> str:
    """An exception as the one line a plan, report and cycle row keep: a backend's message
    quotes its request URL, so credentials are removed before it is cut."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return redact(f"{type(exc).__name__}: {first}")[:500]
