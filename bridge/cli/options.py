"""Options shared by several commands: the source filters, the sync policy, --state."""

from __future__ import annotations

from pathlib import Path

import click

EXIT_HELP = """\b
Exit codes:
  0  all runs synced (warnings allowed)
  1  some run failed (the others were still synced)
  2  usage or configuration error (bad URI, unreachable server, unreadable folder)
  3  conflicts reported and left untouched
"""


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def reader_options(  # noqa: ANN202
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
    no_traces: bool = False,
    no_prompts: bool = False,
    no_datasets: bool = False,
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
        items=item_kinds(no_traces, no_prompts, no_datasets),
    )


def item_kinds(no_traces: bool, no_prompts: bool, no_datasets: bool) -> list[str]:
    """The workspace item kinds a pass copies, after --no-traces/--no-prompts/--no-datasets;
    logged models no run made ("model") always, as they follow the experiment filters."""
    left_out = {"trace": no_traces, "prompt": no_prompts, "dataset": no_datasets, "model": False}
    return [kind for kind, dropped in left_out.items() if not dropped]


COMMON = [
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
    click.option(
        "--since",
        metavar="DATE",
        help="W&B: runs created or active since DATE (ISO); traces (MLflow 3) too: those "
        "requested since DATE.",
    ),
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
    click.option("--no-traces", is_flag=True, help="MLflow 3: do not copy traces."),
    click.option("--no-prompts", is_flag=True, help="MLflow 3: do not copy prompts."),
    click.option("--no-datasets", is_flag=True, help="MLflow 3: do not copy evaluation datasets."),
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


def policy_options(func):  # noqa: ANN001, ANN202
    for decorator in reversed(_POLICY):
        func = decorator(func)
    return func


def common_options(func):  # noqa: ANN001, ANN201
    for decorator in reversed(COMMON):
        func = decorator(func)
    return func


state_option = click.option(
    "--state",
    "state_url",
    metavar="URL",
    help="State store: a file path or SQLAlchemy URL (default: the user's state dir).",
)


#: The sync's source filters, on verify too (its scope when given).
VERIFY_FILTERS = {
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
    "no_traces",
    "no_prompts",
    "no_datasets",
}
