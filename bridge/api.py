"""What a notebook, a script or an Airflow task calls: the same functions the CLI uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge import passes
from bridge.adapters.base import Reader, ReaderOptions, Writer
from bridge.adapters.features import MappingRules
from bridge.cycles import record_cycle
from bridge.engine.model import OnConflict, OnDelete, Plan
from bridge.engine.shards import parse_shard
from bridge.engine.sync import Stage, check_on_delete, run_sync
from bridge.engine.two_way import check_two_way
from bridge.engine.verify import VerifyReport, pair_scope, recorded_mapping, scope_for
from bridge.errors import BridgeError, PermissionDenied
from bridge.locks import LockHeld, pair_lock
from bridge.state import StateStore
from bridge.telemetry import disable_telemetry
from bridge.uris import open_reader, open_writer


def sync(
    source: str,
    dest: str,
    *,
    dry_run: bool = False,
    full: bool = False,
    state: str | None = None,
    workers: int = 4,
    on_conflict: OnConflict = "skip",
    on_delete: OnDelete = "keep",
    reader_options: ReaderOptions | None = None,
    show_progress: bool = False,
    wait: bool = False,
    wait_timeout: float | None = None,
    mapping: str | None = None,
    two_way: bool = False,
    accept_missing_content: bool = False,
    shard: str | None = None,
    pass_id: str | None = None,
    finish_pass: bool = False,
) -> Plan:
    """Sync every run of ``source`` into ``dest``; returns the plan with outcomes.

    A real sync holds the pair's lock (see :mod:`bridge.locks`) and is recorded as a cycle
    in the state store. If another process holds the lock, it waits (``wait``) or returns
    at once a plan with ``skipped`` set and no runs (exit code 0).
    Raises :class:`bridge.errors.BridgeError` for unusable URIs, stores or state.

    ``shard="I/N"`` (or ``"auto/N"``: I from ``JOB_COMPLETION_INDEX``) copies only the runs
    of index I of a sharded pass (``pass_id`` names it; default: the pass the pair's other
    indices are in) and, if it is the last index to end, runs the pass's final step
    (bridge/passes.py); ``finish_pass`` runs that final step by hand.
    """
    disable_telemetry()
    spec = parse_shard(shard) if shard else None
    if pass_id and not (spec or finish_pass):
        raise BridgeError("--pass-id goes with --shard I/N or --finish-pass")
    if finish_pass and (spec or dry_run):
        raise BridgeError("--finish-pass takes neither --shard nor --dry-run")
    reader = open_reader(source, reader_options)
    writer = open_writer(dest)
    source_writer: Writer | None = None
    try:
        if mapping:
            _use_mapping(writer, mapping)
        if two_way:
            source_writer = _source_writer(source)
            check_two_way(reader, writer, source_writer)
        listing_complete = not _filtered(reader.options)
        if on_delete != "keep":
            check_on_delete(writer, on_delete)
            if not listing_complete:
                raise BridgeError(
                    f"--on-delete {on_delete} needs a complete listing of the source; "
                    "drop the run filters (--runs/--since/--tag/--run-state/--experiment)"
                )
        store = StateStore(state, read_only=dry_run)
    except BaseException:
        _close(reader, writer, source_writer)
        raise

    def run(stage: Stage = "all") -> Plan:
        reader.check()
        writer.check()
        writer.source_uri = reader.display_uri
        plan = run_sync(
            reader,
            writer,
            store,
            dry_run=dry_run,
            full=full,
            workers=workers,
            on_conflict=on_conflict,
            on_delete=on_delete,
            listing_complete=listing_complete,
            two_way=two_way,
            accept_missing_content=accept_missing_content,
            show_progress=show_progress,
            source_writer=source_writer,
            shard=spec,
            stage=stage,
        )
        _refused_everywhere(plan)
        if not dry_run:  # the scope `verify` checks by default
            used = str(Path(mapping).resolve()) if mapping else None  # verify renders with it
            store.put_pair_filters(
                reader.display_uri, writer.display_uri, pair_scope(reader.options, used)
            )
        return plan

    try:
        if dry_run:
            plan = run("runs" if spec else "all")
            plan.shard = str(spec) if spec else None
            return plan
        if finish_pass:
            done = passes.finish_pass(store, reader.display_uri, writer.display_uri, pass_id, run)
            assert done is not None  # by hand: what stops it raises
            return done
        if spec is not None:
            return passes.sharded_sync(
                store,
                reader.display_uri,
                writer.display_uri,
                spec,
                pass_id,
                run,
                wait=wait,
                timeout=wait_timeout,
            )
        try:
            with pair_lock(
                store.url, reader.display_uri, writer.display_uri, wait=wait, timeout=wait_timeout
            ):
                return record_cycle(store, reader.display_uri, writer.display_uri, run)
        except LockHeld as held:
            return Plan(
                source=reader.display_uri, dest=writer.display_uri, dry_run=False, skipped=str(held)
            )
    finally:
        _close(reader, writer, source_writer)
        store.close()


def _refused_everywhere(plan: Plan) -> None:
    """Every run of the pass failed because a backend refused these credentials (HTTP 403,
    :class:`PermissionDenied`): nothing can be done, so the pass is one line (exit 2)."""
    prefix = f"{PermissionDenied.__name__}: "
    errors = [r.error or "" for r in plan.runs]
    if not errors or plan.models or plan.items or not all(e.startswith(prefix) for e in errors):
        return
    if any(r.outcome != "failed" for r in plan.runs):
        return
    projects = {r.project for r in plan.runs}
    more = f" (and {len(projects) - 1} more project(s) refused)" if len(projects) > 1 else ""
    raise BridgeError(f"nothing could be copied: {errors[0][len(prefix) :]}{more}")


def _source_writer(source: str) -> Writer | None:
    """``--two-way``: a writer on the source URI, for the edits carried back (readers never
    write); None when the source's backend has no writer (check_two_way says so)."""
    try:
        return open_writer(source)
    except BridgeError:
        return None


def _close(*adapters: Reader | Writer | None) -> None:
    for adapter in adapters:
        if adapter is not None:
            adapter.close()


def _filtered(options: ReaderOptions) -> bool:
    """True when the listing is restricted, so a missing run may just be filtered out."""
    return bool(
        options.run_ids or options.since or options.tags or options.states or options.experiments
    )


def _use_mapping(writer: Writer, path: str) -> None:
    """Per-pair mapping overrides: the writer's mapping rules from a TOML file, read with the
    writer's own mapping model (the rules differ per pair of backends)."""
    if not isinstance(writer, MappingRules):
        raise BridgeError(f"the {writer.scheme}: destination takes no mapping file")
    writer.load_mapping(Path(path))


def _verify_mapping(
    writer: Writer, given: str | None, store: StateStore, source_uri: str
) -> str | None:
    """Load into the writer the mapping its copy was made with, as sync does: the file
    given, else the one the pair's last sync recorded; returns its path (None: defaults)."""
    path = given or recorded_mapping(store, source_uri, writer.display_uri)
    if path is None:
        return None
    if not given and not Path(path).is_file():
        raise BridgeError(
            f"the last sync of this pair used the mapping file {path}, which is gone; "
            "give the same rules with --mapping FILE"
        )
    _use_mapping(writer, path)
    return path


def diff(source: str, dest: str, **kwargs: Any) -> Plan:
    """The plan a sync would carry out, with nothing written (no destination object, no state)."""
    kwargs["dry_run"] = True
    return sync(source, dest, **kwargs)


def verify(
    source: str,
    dest: str,
    *,
    state: str | None = None,
    workers: int = 4,
    digests: bool = False,
    reader_options: ReaderOptions | None = None,
    mapping: str | None = None,
) -> VerifyReport:
    """Compare the destination copy of every source run in scope with its source; nothing
    is written. The scope: ``reader_options`` if given, else the filters of the pair's last
    real sync (``report.scope`` says which). The copy is rendered with ``mapping`` (the
    file ``sync`` takes), else with the mapping file the pair's last sync recorded, else
    with the writer's defaults (``report.mapping`` says which file).

    ``report.exit_code()`` is 1 when any run differs, has no copy (and was not left out on
    purpose) or could not be checked, else 0.
    """
    from bridge.engine.verify import verify as run_verify

    disable_telemetry()
    reader = open_reader(source, reader_options)
    writer = open_writer(dest)
    store = StateStore(state, read_only=True)
    try:
        scope = scope_for(store, reader.display_uri, writer.display_uri, reader_options)
        used = _verify_mapping(writer, mapping, store, reader.display_uri)
        if scope.origin == "last sync":  # list what that sync listed
            reader.close()
            reader = open_reader(source, scope.options(workers))
        reader.check()
        # Read-only: check the destination as a source (a missing store is not created).
        probe = open_reader(dest)
        try:
            probe.check()
        finally:
            probe.close()
        writer.source_uri = reader.display_uri
        report = run_verify(reader, writer, store, workers=workers, digests=digests, scope=scope)
        if used is not None:
            report.mapping = used
            report.scope += f"; mapping {used}" + ("" if mapping else " (of the last sync)")
        return report
    finally:
        reader.close()
        writer.close()
        store.close()


def conflicts(state: str | None = None, include_resolved: bool = False) -> list[dict[str, Any]]:
    """Conflicts in the state store (open ones; all with ``include_resolved``), oldest first."""
    from bridge.conflicts import list_conflicts

    return list_conflicts(state, include_resolved=include_resolved)


def resolve_conflict(
    conflict_id: int, take: str, state: str | None = None, by: str | None = None
) -> dict[str, Any]:
    """Settle one conflict: ``take="source"`` or ``"dest"``; returns what was done."""
    from bridge.conflicts import resolve

    return resolve(conflict_id, take, state, by=by)


def status(state: str | None = None) -> list[dict[str, Any]]:
    """Per pair: the last cycle (times, result, counts, errors) and open conflicts."""
    from bridge.status import pair_status

    return pair_status(state)
