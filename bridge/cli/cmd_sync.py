"""`bridge sync` and `bridge diff`: one pass over a pair, and its dry run."""

from __future__ import annotations

import sys
from typing import Any

import click

from bridge.cli.options import EXIT_HELP, common_options, policy_options, reader_options
from bridge.cli.output import (
    fail,
    format_for,
    print_json,
    print_report,
    progress_wanted,
    say,
    write_chunks,
)
from bridge.errors import BridgeError


@click.command(epilog=EXIT_HELP)
@common_options
@click.option("--dry-run", is_flag=True, help="Plan and report; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Also write the report to FILE (.json, .md or text by extension).",
)
@policy_options
@click.option(
    "--shard",
    metavar="I/N",
    help="Copy only index I (from 0) of N of the runs, by a stable hash of each run's "
    "source identity; auto/N takes I from JOB_COMPLETION_INDEX (a Kubernetes Indexed "
    "Job). The last index to end runs the pass's final step (registry, items, deletions, "
    "the cycle record).",
)
@click.option(
    "--pass-id",
    metavar="ID",
    envvar="BRIDGE_PASS_ID",
    help="With --shard or --finish-pass: the sharded pass (default: the one the other "
    "indices of this pair are in). Env: BRIDGE_PASS_ID.",
)
@click.option(
    "--finish-pass",
    is_flag=True,
    help="Run the final step of a sharded pass whose indices have all ended or died "
    "(no heartbeat within the lease); the pass is reported incomplete (exit 1) if any "
    "index died or failed.",
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
    on_delete: str,
    wait: bool,
    two_way: bool,
    accept_missing_content: bool,
    shard: str | None,
    pass_id: str | None,
    finish_pass: bool,
    **filters: Any,
) -> None:
    """Copy every run of SOURCE into DEST; a re-run writes only what changed.

    One sync per SOURCE/DEST pair runs at a time (a lock in the state store): a second
    one skips and says so (exit 0), or waits with --wait.
    """
    from bridge import api
    from bridge import reporting as report

    try:
        plan = api.sync(
            source,
            dest,
            dry_run=dry_run,
            full=filters.pop("full"),
            state=state_url,
            workers=workers,
            on_conflict=on_conflict,  # type: ignore[arg-type]
            on_delete=on_delete,  # type: ignore[arg-type]
            reader_options=reader_options(workers, **filters),
            show_progress=progress_wanted(as_json),
            wait=wait,
            two_way=two_way,
            accept_missing_content=accept_missing_content,
            shard=shard,
            pass_id=pass_id,
            finish_pass=finish_pass,
        )
    except BridgeError as exc:
        fail(str(exc))
        return
    if plan.skipped:
        if as_json:
            print_json({**report.as_dict(plan), "skipped": plan.skipped})
        else:
            say(f"skipped: {plan.skipped}")
        sys.exit(0)
    if report_path:
        fmt = format_for(report_path)
        plots = _plots(source, dest, plan) if fmt == "html" else None
        write_chunks(report_path, report.render_chunks(plan, fmt, plots))
    if as_json:
        data = report.as_dict(plan, lazy=True)  # runs streamed as printed
        data["resolved"] = [c.model_dump() for c in plan.resolved]
        if plan.pass_id or plan.shard:  # a sharded pass
            data |= {"shard": plan.shard, "pass_id": plan.pass_id, "final_step": plan.final_step}
        print_json(data)
    else:
        for chunk in report.text_chunks(plan):  # the runs read back one at a time
            print_report(chunk)
        for c in plan.resolved:
            say(f"settled: {c.source_id} {c.field}: {c.resolution}")
    sys.exit(plan.exit_code())


@click.command(epilog=EXIT_HELP)
@common_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
    help="html: one self-contained page (no external assets).",
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
    from bridge import reporting as report

    try:
        plan = api.diff(
            source,
            dest,
            full=filters.pop("full"),
            state=state_url,
            workers=workers,
            reader_options=reader_options(workers, **filters),
            show_progress=progress_wanted(fmt != "text"),
        )
    except BridgeError as exc:
        fail(str(exc))
        return
    chunks = report.render_chunks(plan, fmt, _plots(source, dest, plan) if fmt == "html" else None)
    if output:
        write_chunks(output, chunks)
    else:
        for chunk in chunks:
            print_report(chunk)
    sys.exit(plan.exit_code())


def _plots(source: str, dest: str, plan: Any) -> Any:
    """Source-vs-destination samples of changed streams for an HTML page; a page without
    plots (and a warning on stderr) if the histories cannot be read back."""
    from bridge.reporting.plots import changed_streams

    try:
        return changed_streams(source, dest, plan)
    except Exception as exc:  # noqa: BLE001 - the report is still worth writing
        say(f"bridge: warning: no plots in the report: {exc}", err=True)
        return None
