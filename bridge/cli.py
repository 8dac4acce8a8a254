"""The `bridge` command line: parse options, call bridge.api, print, set the exit code.

Exit codes: 0 all synced (warnings allowed); 1 some run failed (the others were still
synced); 2 usage or configuration error (bad URI, unreachable server, unreadable folder);
3 conflicts were reported (and left untouched). A failed run takes precedence over conflicts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from bridge.errors import EXIT_USAGE, BridgeError

EXIT_HELP = """\b
Exit codes:
  0  all runs synced (warnings allowed)
  1  some run failed (the others were still synced)
  2  usage or configuration error (bad URI, unreachable server, unreadable folder)
  3  conflicts reported and left untouched
"""


def _quiet_libraries() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("alembic", "mlflow", "wandb", "urllib3", "botocore"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _progress_wanted(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty() and not os.environ.get("CI")


def _fail(message: str) -> None:
    click.echo(f"bridge: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _format_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".md": "markdown", ".markdown": "markdown"}.get(suffix, "text")


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _reader_options(  # noqa: ANN202
    workers: int,
    staging_dir: str | None,
    runs: tuple[str, ...],
    entity: str | None,
    since: str | None,
    tags: tuple[str, ...],
    run_states: tuple[str, ...],
    experiments: tuple[str, ...],
    include_deleted: bool,
):
    from bridge.adapters.base import ReaderOptions

    return ReaderOptions(
        workers=workers,
        staging_dir=staging_dir,
        run_ids=_split(runs),
        entity=entity,
        since=since,
        tags=_split(tags),
        states=_split(run_states),
        experiments=list(experiments),
        include_deleted=include_deleted,
    )


_common = [
    click.argument("source"),
    click.argument("dest"),
    click.option(
        "--state",
        "state_url",
        metavar="URL",
        help="State store: a file path or SQLAlchemy URL (default: the user's state dir).",
    ),
    click.option("--workers", default=4, show_default=True, help="Runs processed in parallel."),
    click.option(
        "--staging-dir",
        type=click.Path(file_okay=False),
        help="W&B offline: a moved copy of the SDK's artifact staging folder.",
    ),
    click.option("--runs", metavar="ID,...", multiple=True, help="Only these source run ids."),
    click.option("--entity", help="W&B offline: entity for runs whose log records none."),
    click.option("--since", metavar="DATE", help="W&B: runs created or active since DATE (ISO)."),
    click.option("--tag", "tags", metavar="TAG", multiple=True, help="W&B: runs with this tag."),
    click.option(
        "--run-state",
        "run_states",
        multiple=True,
        type=click.Choice(["finished", "failed", "crashed", "running", "killed"]),
        help="W&B: runs in this state (repeatable).",
    ),
    click.option(
        "--experiment",
        "experiments",
        metavar="NAME",
        multiple=True,
        help="MLflow source: experiment name or glob (repeatable; default all).",
    ),
    click.option("--include-deleted", is_flag=True, help="MLflow source: also deleted runs."),
    click.option(
        "--full",
        is_flag=True,
        help="Compare every run in full, even when its source fingerprint is unchanged.",
    ),
]


def common_options(func):  # noqa: ANN001, ANN201
    for decorator in reversed(_common):
        func = decorator(func)
    return func


@click.group(epilog=EXIT_HELP)
@click.version_option(package_name="tracking-bridge")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """Migrate and mirror experiment history between W&B and MLflow.

    \b
    URIs:
      wandb-offline:DIR       W&B offline run folders (read from .wandb logs, no network)
      wandb:ENTITY/PROJECT    a W&B server through wandb.Api
      mlflow:TRACKING_URI     any MLflow store: sqlite:///f.db, http://host:5000, postgresql://...
    """
    _quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    if not verbose:
        _quiet_libraries()


@main.command(epilog=EXIT_HELP)
@common_options
@click.option("--dry-run", is_flag=True, help="Plan and report; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Also write the report to FILE (.json, .md or text by extension).",
)
@click.option(
    "--on-conflict",
    type=click.Choice(["skip", "fail"]),
    default="skip",
    show_default=True,
    help="skip: leave conflicting runs untouched; fail: write nothing if any conflict.",
)
def sync(
    source: str,
    dest: str,
    state_url: str | None,
    workers: int,
    dry_run: bool,
    as_json: bool,
    report_path: str | None,
    on_conflict: str,
    **filters: Any,
) -> None:
    """Copy every run of SOURCE into DEST; a re-run writes only what changed."""
    from bridge import api
    from bridge.engine import report

    try:
        plan = api.sync(
            source,
            dest,
            dry_run=dry_run,
            full=filters.pop("full"),
            state=state_url,
            workers=workers,
            on_conflict=on_conflict,  # type: ignore[arg-type]
            reader_options=_reader_options(workers, **filters),
            show_progress=_progress_wanted(as_json),
        )
    except BridgeError as exc:
        _fail(str(exc))
        return
    if report_path:
        Path(report_path).write_text(report.render(plan, _format_for(report_path)))
    click.echo(report.as_json(plan) if as_json else report.as_text(plan), nl=False)
    sys.exit(plan.exit_code())


@main.command(epilog=EXIT_HELP)
@common_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report to FILE.")
def diff(
    source: str,
    dest: str,
    state_url: str | None,
    workers: int,
    fmt: str,
    output: str | None,
    **filters: Any,
) -> None:
    """Show what `sync` would do (a dry run): nothing is written, not even state."""
    from bridge import api
    from bridge.engine import report

    try:
        plan = api.diff(
            source,
            dest,
            full=filters.pop("full"),
            state=state_url,
            workers=workers,
            reader_options=_reader_options(workers, **filters),
            show_progress=_progress_wanted(fmt != "text"),
        )
    except BridgeError as exc:
        _fail(str(exc))
        return
    text = report.render(plan, fmt)
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)
    sys.exit(plan.exit_code())


if __name__ == "__main__":  # pragma: no cover
    main()
