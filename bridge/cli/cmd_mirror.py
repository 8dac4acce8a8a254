"""`bridge mirror`: a sync every period, or every pair of a config file."""

from __future__ import annotations

import sys
from typing import Any

import click

from bridge.cli.options import COMMON, EXIT_HELP, policy_options, reader_options
from bridge.cli.output import fail
from bridge.errors import BridgeError


@click.command(epilog=EXIT_HELP)
@click.argument("source", required=False)
@click.argument("dest", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="bridge.toml")
@click.option("--every", default=None, help="Period between cycle starts: 30s, 15m, 2h ...")
@click.option("--cycles", type=int, help="Stop after N cycles (default: run until stopped).")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="One line per pair and cycle."
)
@click.option("--mapping", type=click.Path(dir_okay=False), help="Mapping overrides (TOML).")
@click.option(
    "--shard",
    metavar="I/N",
    help="With --config: run only the pairs of worker I of N (stable hash of each pair's "
    "SOURCE -> DEST); auto/N takes I from JOB_COMPLETION_INDEX.",
)
@policy_options
def mirror(
    source: str | None,
    dest: str | None,
    config_path: str | None,
    every: str | None,
    cycles: int | None,
    log_format: str | None,
    mapping: str | None,
    shard: str | None,
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
            opts = reader_options(workers, **{k: v for k, v in filters.items() if k != "full"})
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
        if shard:
            if not config_path:
                raise BridgeError(
                    "mirror --shard spreads the pairs of --config over workers; to split "
                    "one pair's runs use `bridge sync SOURCE DEST --shard I/N`"
                )
            from bridge.engine.shards import parse_shard
            from bridge.mirror import shard_pairs

            cfg.pairs = shard_pairs(cfg.pairs, parse_shard(shard))
        if every:
            cfg.every = parse_every(every)
        if log_format:
            cfg.log_format = log_format  # type: ignore[assignment]
        if wait:
            cfg.wait = True
    except BridgeError as exc:
        fail(str(exc))
        return
    import threading

    stop = threading.Event()
    stop_on_signals(stop)

    def emit(line: dict[str, Any]) -> None:
        click.echo(format_line(line, cfg.log_format))
        sys.stdout.flush()

    sys.exit(run_mirror(cfg, cycles=cycles, emit=emit, stop=stop))


for _option in COMMON[2:]:  # the sync filters and --state, on mirror too
    mirror = _option(mirror)
