"""`bridge verify`: check a copy against its source, writing nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli.options import COMMON, VERIFY_FILTERS, reader_options, state_option
from bridge.cli.output import fail, print_report
from bridge.errors import BridgeError


@click.command()
@click.argument("source")
@click.argument("dest")
@state_option
@click.option("--workers", default=4, show_default=True, help="Runs checked in parallel.")
@click.option(
    "--digests",
    is_flag=True,
    help="Also hash file content where a side records no digest (reads every file).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
)
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report to FILE.")
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    help="Mapping overrides (TOML) the sync used (default: the file the last sync recorded).",
)
def verify(
    source: str,
    dest: str,
    state_url: str | None,
    workers: int,
    digests: bool,
    as_json: bool,
    fmt: str,
    output: str | None,
    mapping: str | None,
    **filters: Any,
) -> None:
    """Check that every source run in scope has a copy in DEST that matches SOURCE:
    params/tags, per-metric point counts and checksums over (step, timestamp, value),
    files. The scope: the filters given here, else those of the pair's last sync. Writes
    nothing; exit 1 if anything differs or a run has no copy (runs left out on purpose —
    a deletion settled dest-wins, nothing importable — are listed as not copied)."""
    from bridge import api
    from bridge import reporting as report

    given = reader_options(workers, **filters) if any(filters.values()) else None
    try:
        result = api.verify(
            source,
            dest,
            state=state_url,
            workers=workers,
            digests=digests,
            reader_options=given,
            mapping=mapping,
        )
    except BridgeError as exc:
        fail(str(exc))
        return
    text = report.render(result, "json" if as_json else fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        print_report(text)
    sys.exit(result.exit_code())


for _option in COMMON:
    if _option(click.Command("probe")).params[0].name in VERIFY_FILTERS:
        verify = _option(verify)
