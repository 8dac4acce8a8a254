"""What the commands print: every line that may hold source or server data goes through
the terminal escaping and the credential redaction here."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from bridge.display import for_terminal
from bridge.errors import EXIT_USAGE
from bridge.redact import redact
from bridge.reporting.jsonstream import iter_json


def progress_wanted(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty() and not os.environ.get("CI")


def say(line: str, err: bool = False) -> None:
    """Print one line that may hold source or server data: its controls are shown, not obeyed."""
    click.echo(for_terminal(redact(line)), err=err)


def print_report(text: str) -> None:
    """Print a rendered report (fields escaped by the renderer; this is the last guard)."""
    click.echo(for_terminal(redact(text), multiline=True), nl=False)


def print_json(data: Any) -> None:
    """Print JSON output (escapes its own controls) with credentials removed; a dict's
    generator values (a plan's runs) are written one element at a time."""
    if isinstance(data, dict):
        for chunk in iter_json(data):  # whole JSON values: no secret spans two pieces
            click.echo(redact(chunk), nl=False)
        click.echo()
        return
    click.echo(redact(json.dumps(data, indent=2, default=str)))


def write_chunks(path: str, chunks: Iterable[str]) -> None:
    """A rendered report written to ``path`` piece by piece (reporting.render_chunks)."""
    with open(path, "w", encoding="utf-8") as fh:
        for chunk in chunks:
            fh.write(chunk)


def fail(message: str) -> None:
    say(f"bridge: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def format_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".html": "html"}
    return formats.get(suffix, "text")


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
