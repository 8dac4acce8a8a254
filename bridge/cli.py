"""The `bridge` command line: parse options, call bridge.api, print, set the exit code.

Exit codes: 0 all synced (warnings allowed); 1 some run failed (the others were still
synced); 2 usage or configuration error (bad URI, unreachable server, unreadable folder);
3 conflicts were reported (and left untouched). A failed run takes precedence over conflicts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from bridge.display import escape_logging, for_terminal
from bridge.errors import EXIT_USAGE, BridgeError
from bridge.redact import install as install_redaction
from bridge.redact import redact
from bridge.telemetry import disable_telemetry

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


def _say(line: str, err: bool = False) -> None:
    """Print one line that may hold source or server data: its controls are shown, not obeyed."""
    click.echo(for_terminal(redact(line)), err=err)


def _print_report(text: str) -> None:
    """Print a rendered report (fields escaped by the renderer; this is the last guard)."""
    click.echo(for_terminal(redact(text), multiline=True), nl=False)


def _print_json(data: Any) -> None:
    """Print JSON output (escapes its own controls) with credentials removed."""
    click.echo(redact(json.dumps(data, indent=2, default=str)))


def _fail(message: str) -> None:
    _say(f"bridge: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _format_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".html": "html"}
    return formats.get(suffix, "text")


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
    download_references: bool = False,
    models: tuple[str, ...] = (),
    no_registry: bool = False,
    reference_roots: tuple[str, ...] = (),
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
        download_references=download_references,
        reference_roots=[str(Path(r).expanduser().resolve()) for r in reference_roots],
        registries=_split(models),
        registry=not no_registry,
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
        "--download-references",
        is_flag=True,
        help="Copy the targets of reference artifact entries (file://, http(s)://, s3://); "
        "by default they stay references in the copied manifest.",
    ),
    click.option(
        "--reference-root",
        "reference_roots",
        metavar="DIR",
        multiple=True,
        type=click.Path(file_okay=False),
        help="With --download-references: read file:// reference targets of offline "
        "(wandb-offline:) sources only under DIR (repeatable); others are refused. A "
        "server's file:// references are never read.",
    ),
    click.option(
        "--models",
        metavar="NAME,...",
        multiple=True,
        help="Only these registered models / registry collections (name, REGISTRY/NAME or glob).",
    ),
    click.option("--no-registry", is_flag=True, help="Do not copy registered models."),
    click.option(
        "--full",
        is_flag=True,
        help="Compare every run in full, even when its source fingerprint is unchanged.",
    ),
]


_POLICY = [
    click.option(
        "--on-conflict",
        type=click.Choice(["skip", "fail", "source-wins", "dest-wins"]),
        default="skip",
        show_default=True,
        help="skip: leave conflicting runs untouched; fail: write nothing if any conflict; "
        "source-wins: overwrite tags, immutable params go to tag bridge.param_override.<key>; "
        "dest-wins: keep the destination's value as the new baseline.",
    ),
    click.option(
        "--on-delete",
        type=click.Choice(["keep", "tag", "delete"]),
        default="keep",
        show_default=True,
        help="Runs whose source was deleted (checked only with no run filters): keep and "
        "report; tag bridge.source_deleted=true; or delete the copy.",
    ),
    click.option(
        "--wait", is_flag=True, help="If the pair is busy (another sync/mirror), wait for it."
    ),
    click.option(
        "--accept-missing-content",
        is_flag=True,
        help="Artifact content that is missing at the source (e.g. staging copies deleted by "
        "`wandb sync`) is recorded as manifest-only and reported once, instead of failing "
        "the run on every sync until it comes back.",
    ),
    click.option(
        "--two-way",
        is_flag=True,
        help="Also carry edits of notes, tags and registry aliases made in DEST back to "
        "SOURCE (history and params stay one-way); an edit on both sides is a conflict.",
    ),
]


def _policy_options(func):  # noqa: ANN001, ANN202
    for decorator in reversed(_POLICY):
        func = decorator(func)
    return func


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
    disable_telemetry()
    _quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    escape_logging()
    install_redaction()  # after escaping: it runs last on every handler
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
@_policy_options
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
    **filters: Any,
) -> None:
    """Copy every run of SOURCE into DEST; a re-run writes only what changed.

    One sync per SOURCE/DEST pair runs at a time (a lock in the state store): a second
    one skips and says so (exit 0), or waits with --wait.
    """
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
            on_delete=on_delete,  # type: ignore[arg-type]
            reader_options=_reader_options(workers, **filters),
            show_progress=_progress_wanted(as_json),
            wait=wait,
            two_way=two_way,
            accept_missing_content=accept_missing_content,
        )
    except BridgeError as exc:
        _fail(str(exc))
        return
    if plan.skipped:
        if as_json:
            _print_json({**report.as_dict(plan), "skipped": plan.skipped})
        else:
            _say(f"skipped: {plan.skipped}")
        sys.exit(0)
    if report_path:
        fmt = _format_for(report_path)
        text = report.render(plan, fmt, _plots(source, dest, plan) if fmt == "html" else None)
        Path(report_path).write_text(text, encoding="utf-8")
    if as_json:
        data = report.as_dict(plan)
        data["resolved"] = [c.model_dump() for c in plan.resolved]
        _print_json(data)
    else:
        _print_report(report.as_text(plan))
        for c in plan.resolved:
            _say(f"settled: {c.source_id} {c.field}: {c.resolution}")
    sys.exit(plan.exit_code())


@main.command(epilog=EXIT_HELP)
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
    text = report.render(plan, fmt, _plots(source, dest, plan) if fmt == "html" else None)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        _print_report(text)
    sys.exit(plan.exit_code())


def _plots(source: str, dest: str, plan: Any) -> Any:
    """Source-vs-destination samples of changed streams for an HTML page; a page without
    plots (and a warning on stderr) if the histories cannot be read back."""
    from bridge.engine.plots import changed_streams

    try:
        return changed_streams(source, dest, plan)
    except Exception as exc:  # noqa: BLE001 - the report is still worth writing
        _say(f"bridge: warning: no plots in the report: {exc}", err=True)
        return None


_state_option = click.option(
    "--state",
    "state_url",
    metavar="URL",
    help="State store: a file path or SQLAlchemy URL (default: the user's state dir).",
)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@main.group(invoke_without_command=True)
@_state_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_resolved", is_flag=True, help="Also settled conflicts.")
@click.pass_context
def conflicts(
    ctx: click.Context, state_url: str | None, as_json: bool, include_resolved: bool
) -> None:
    """List conflicts recorded by syncs (id, run, field, both values, last synced value)."""
    ctx.ensure_object(dict)
    ctx.obj["state_url"] = state_url
    if ctx.invoked_subcommand is not None:
        return
    from bridge import api

    try:
        rows = api.conflicts(state_url, include_resolved=include_resolved)
    except BridgeError as exc:
        _fail(str(exc))
        return
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no open conflicts")
    for c in rows:
        res = c.get("resolution")
        settled = f" [settled: {res['choice']} by {res['resolved_by']}]" if res else ""
        _say(
            f"#{c['id']} {c['dest_uri']} {c['source_id']} {c['field']}: "
            f"source={c['source_value']!r} dest={c['dest_value']!r} "
            f"last-synced={c['synced_value']!r} ({_when(c['detected_at'])}){settled}"
        )


@conflicts.command("resolve")
@click.argument("conflict_id", type=int)
@click.option("--take", type=click.Choice(["source", "dest"]), required=True)
@_state_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def conflicts_resolve(
    ctx: click.Context, conflict_id: int, take: str, state_url: str | None, as_json: bool
) -> None:
    """Settle conflict CONFLICT_ID by taking the source's or the destination's value.

    \b
    --take dest: the destination's value becomes the synced baseline now; not reported again.
    --take source: the next sync writes the source value (a tag is overwritten; an
      immutable MLflow param keeps its value and the source value goes to tag
      bridge.param_override.<key>; a deleted destination run is written again).
    """
    from bridge import api

    state_url = state_url or (ctx.obj or {}).get("state_url")
    try:
        done = api.resolve_conflict(conflict_id, take, state_url)
    except BridgeError as exc:
        _fail(str(exc))
        return
    if as_json:
        _print_json(done)
    else:
        _say(f"conflict #{conflict_id} settled (take {take}): {done['effect']}")


@main.command()
@_state_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_url: str | None, as_json: bool) -> None:
    """Per pair: last cycle start/end, result, counts, errors, open conflicts."""
    from bridge import api

    try:
        pairs = api.status(state_url)
    except BridgeError as exc:
        _fail(str(exc))
        return
    if as_json:
        _print_json(pairs)
        return
    if not pairs:
        click.echo("no cycles recorded yet")
    for p in pairs:
        c = p["last_cycle"]
        counts = c["counts"] or {}
        acts = ", ".join(f"{n} {a}" for a, n in sorted(counts.get("actions", {}).items()))
        _say(f"{p['source']} -> {p['dest']}")
        _say(
            f"  last cycle: {c['state']}, started {_when(c['started_at'])}, "
            f"ended {_when(c['ended_at'])}, exit {c['result']}"
            + (f"; {acts}; {counts.get('points_written', 0)} points written" if acts else "")
        )
        for err in c["errors"] or []:
            _say(f"  error: {err}")
        _say(
            f"  last success: {_when(p['last_success_at'])}; open conflicts: "
            f"{p['open_conflicts']}; runs known: {p['runs_known']}, deleted at source: "
            f"{p['source_deleted']}"
        )


@main.command(epilog=EXIT_HELP)
@click.argument("source", required=False)
@click.argument("dest", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="bridge.toml")
@click.option("--every", default=None, help="Period between cycle starts: 30s, 15m, 2h ...")
@click.option("--cycles", type=int, help="Stop after N cycles (default: run until stopped).")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="One line per pair and cycle."
)
@click.option("--mapping", type=click.Path(dir_okay=False), help="Mapping overrides (TOML).")
@_policy_options
def mirror(
    source: str | None,
    dest: str | None,
    config_path: str | None,
    every: str | None,
    cycles: int | None,
    log_format: str | None,
    mapping: str | None,
    on_conflict: str,
    on_delete: str,
    wait: bool,
    two_way: bool,
    accept_missing_content: bool,
    state_url: str | None,
    workers: int,
    **filters: Any,
) -> None:
    """Mirror SOURCE into DEST every --every (default 15m), or every pair of --config.

    Runs in the foreground (a container, a systemd service); SIGTERM ends it after the
    cycle under way. Each cycle is a `bridge sync` recorded in the state store (see
    `bridge status`). With --cycles N the exit code is the worst of the last cycle.
    """
    from bridge.config_file import Filters, MirrorConfig, PairConfig, load_config, parse_every
    from bridge.mirror import format_line, stop_on_signals
    from bridge.mirror import mirror as run_mirror

    try:
        if config_path:
            if source or dest:
                raise BridgeError("give either SOURCE DEST or --config, not both")
            cfg = load_config(config_path)
            if state_url:
                cfg.state = state_url
        else:
            if not (source and dest):
                raise BridgeError("mirror needs SOURCE and DEST, or --config FILE")
            opts = _reader_options(workers, **{k: v for k, v in filters.items() if k != "full"})
            pair = PairConfig(
                source=source,
                dest=dest,
                on_conflict=on_conflict,  # type: ignore[arg-type]
                on_delete=on_delete,  # type: ignore[arg-type]
                workers=workers,
                full=filters["full"],
                two_way=two_way,
                accept_missing_content=accept_missing_content,
                mapping=mapping,
                filters=Filters.from_options(opts),
            )
            cfg = MirrorConfig(state=state_url, pairs=[pair])
        if every:
            cfg.every = parse_every(every)
        if log_format:
            cfg.log_format = log_format  # type: ignore[assignment]
        if wait:
            cfg.wait = True
    except BridgeError as exc:
        _fail(str(exc))
        return
    import threading

    stop = threading.Event()
    stop_on_signals(stop)

    def emit(line: dict[str, Any]) -> None:
        click.echo(format_line(line, cfg.log_format))
        sys.stdout.flush()

    sys.exit(run_mirror(cfg, cycles=cycles, emit=emit, stop=stop))


for _option in _common[2:]:  # the sync filters and --state, on mirror too
    mirror = _option(mirror)


@main.command()
@click.argument("source")
@click.argument("dest")
@_state_option
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
def verify(
    source: str,
    dest: str,
    state_url: str | None,
    workers: int,
    digests: bool,
    as_json: bool,
    fmt: str,
    output: str | None,
    **filters: Any,
) -> None:
    """Check that every source run in scope has a copy in DEST that matches SOURCE:
    params/tags, per-metric point counts and checksums over (step, timestamp, value),
    files. The scope: the filters given here, else those of the pair's last sync. Writes
    nothing; exit 1 if anything differs or a run has no copy (runs left out on purpose —
    a deletion settled dest-wins, nothing importable — are listed as not copied)."""
    from bridge import api
    from bridge.engine import report

    given = _reader_options(workers, **filters) if any(filters.values()) else None
    try:
        result = api.verify(
            source, dest, state=state_url, workers=workers, digests=digests, reader_options=given
        )
    except BridgeError as exc:
        _fail(str(exc))
        return
    text = report.render(result, "json" if as_json else fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        _print_report(text)
    sys.exit(result.exit_code())


#: The sync's source filters, on verify too (its scope when given).
_VERIFY_FILTERS = {
    "staging_dir",
    "runs",
    "entity",
    "since",
    "tags",
    "run_states",
    "experiments",
    "include_deleted",
    "models",
    "no_registry",
}
for _option in _common:
    if _option(click.Command("probe")).params[0].name in _VERIFY_FILTERS:
        verify = _option(verify)


if __name__ == "__main__":  # pragma: no cover
    main()
