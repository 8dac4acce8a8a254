"""`bridge conflicts` (list, resolve) and `bridge status`: what the state store recorded."""

from __future__ import annotations

import click

from bridge.cli.options import state_option
from bridge.cli.output import fail, print_json, say, when
from bridge.errors import BridgeError


@click.group(invoke_without_command=True)
@state_option
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
        fail(str(exc))
        return
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no open conflicts")
    for c in rows:
        res = c.get("resolution")
        settled = f" [settled: {res['choice']} by {res['resolved_by']}]" if res else ""
        say(
            f"#{c['id']} {c['dest_uri']} {c['source_id']} {c['field']}: "
            f"source={c['source_value']!r} dest={c['dest_value']!r} "
            f"last-synced={c['synced_value']!r} ({when(c['detected_at'])}){settled}"
        )


@conflicts.command("resolve")
@click.argument("conflict_id", type=int)
@click.option("--take", type=click.Choice(["source", "dest"]), required=True)
@state_option
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
        fail(str(exc))
        return
    if as_json:
        print_json(done)
    else:
        say(f"conflict #{conflict_id} settled (take {take}): {done['effect']}")


@click.command()
@state_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_url: str | None, as_json: bool) -> None:
    """Per pair: last cycle start/end, result, counts, errors, open conflicts."""
    from bridge import api

    try:
        pairs = api.status(state_url)
    except BridgeError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json(pairs)
        return
    if not pairs:
        click.echo("no cycles recorded yet")
    for p in pairs:
        say(f"{p['source']} -> {p['dest']}")
        c = p["last_cycle"]
        if c is None:  # a first sharded pass: its final step writes the cycle record
            say("  last cycle: none yet (a sharded pass is under way)")
        else:
            counts = c["counts"] or {}
            acts = ", ".join(f"{n} {a}" for a, n in sorted(counts.get("actions", {}).items()))
            say(
                f"  last cycle: {c['state']}, started {when(c['started_at'])}, "
                f"ended {when(c['ended_at'])}, exit {c['result']}"
                + (f"; {acts}; {counts.get('points_written', 0)} points written" if acts else "")
            )
            for err in c["errors"] or []:
                say(f"  error: {err}")
        say(
            f"  last success: {when(p['last_success_at'])}; open conflicts: "
            f"{p['open_conflicts']}; runs known: {p['runs_known']}, deleted at source: "
            f"{p['source_deleted']}"
        )
        for ps in p.get("passes", []):  # sharded passes (bridge sync --shard I/N)
            say(
                f"  pass {ps['pass_id']}: {len(ps['ended'])}/{ps['shards']} shards ended, "
                f"not ended {ps['not_ended'] or '-'}; {ps['runs_written']} runs written; "
                f"final step: {ps['final'] or 'not yet'}"
                + (f"; {ps['incomplete']}" if ps["incomplete"] else "")
            )
