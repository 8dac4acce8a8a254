"""One sync pass: list, plan every run, then apply, in parallel across runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from tqdm import tqdm

from bridge.adapters.base import Reader, Writer
from bridge.engine.apply import apply_run
from bridge.engine.model import Plan, RunPlan
from bridge.engine.plan import Planned, SyncContext, plan_run
from bridge.errors import BridgeError, RunError
from bridge.schema import RunHeader, Warning_
from bridge.state import StateStore

log = logging.getLogger(__name__)

OnConflict = Literal["skip", "fail"]


def _failed_plan(header: RunHeader, exc: BaseException) -> Planned:
    """A run that could not be planned. A reader's RunError means "nothing importable
    here" (e.g. a log the process never flushed): skipped and reported, not a failure."""
    plan = RunPlan(
        source_id=header.source_id,
        name=header.name,
        project=header.project.name,
        action="skip",
        reason=str(exc) if isinstance(exc, RunError) else "could not be read or planned",
        outcome="skipped" if isinstance(exc, RunError) else "failed",
        error=None if isinstance(exc, RunError) else _one_line(exc),
    )
    if isinstance(exc, RunError):
        plan.warnings.append(Warning_(source_id=header.source_id, code="skipped", message=str(exc)))
    return Planned(plan=plan, header=header)


def _waves(planned: list[Planned]) -> list[list[Planned]]:
    """Split runs into waves by depth in the parent chain (within this batch)."""
    by_id = {p.plan.source_id: p for p in planned}
    depth: dict[str, int] = {}

    def depth_of(p: Planned, seen: frozenset[str] = frozenset()) -> int:
        sid = p.plan.source_id
        if sid not in depth:
            parent_id = p.run.parent_source_id if p.run is not None else None
            parent = by_id.get(parent_id) if parent_id else None
            if parent is None or parent_id in seen:
                depth[sid] = 0
            else:
                depth[sid] = depth_of(parent, seen | {sid}) + 1
        return depth[sid]

    waves: dict[int, list[Planned]] = {}
    for p in planned:
        waves.setdefault(depth_of(p), []).append(p)
    return [waves[d] for d in sorted(waves)]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


def run_sync(
    reader: Reader,
    writer: Writer,
    state: StateStore,
    *,
    dry_run: bool = False,
    full: bool = False,
    workers: int = 4,
    on_conflict: OnConflict = "skip",
    show_progress: bool = False,
    on_run_done: Callable[[RunPlan], None] | None = None,
) -> Plan:
    """Plan every source run against state and destination, then apply (unless dry run).

    One bad run never stops the others: its error is recorded on its plan line.
    With ``on_conflict="fail"`` nothing is written if any run has a conflict. ``full``
    compares every run's body, history length and files even when its fingerprint matches
    (what a periodic full pass runs, for edits that do not change a source's fingerprint).
    """
    ctx = SyncContext(reader=reader, writer=writer, state=state, dry_run=dry_run, full=full)
    report = Plan(source=reader.display_uri, dest=writer.display_uri, dry_run=dry_run)
    try:
        headers = list(reader.list_runs())
    except BridgeError:
        raise
    except Exception as exc:
        raise BridgeError(f"cannot list runs of {reader.display_uri}: {_one_line(exc)}") from exc

    workers = max(1, workers)
    bar_lock = threading.Lock()
    runs_bar = tqdm(
        total=len(headers),
        desc="plan" if dry_run else "sync",
        unit="run",
        disable=not show_progress,
        position=0,
    )
    slots = list(range(workers))

    def plan_one(header: RunHeader) -> Planned:
        try:
            return plan_run(ctx, header)
        except Exception as exc:
            log.debug("planning %s failed", header.source_id, exc_info=True)
            return _failed_plan(header, exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        planned = list(pool.map(plan_one, headers))
    report.runs = [p.plan for p in planned]

    for p in planned:
        for c in p.plan.conflicts:
            if not dry_run:
                state.record_conflict(
                    ctx.dest_uri,
                    c.source_id,
                    c.field,
                    c.source_value,
                    c.dest_value,
                    c.synced_value,
                )
        if p.plan.conflicts:
            p.plan.outcome = "skipped"
            p.plan.reason = p.plan.reason or "conflict: left untouched"

    to_apply = [
        p
        for p in planned
        if p.plan.action in ("create", "resume", "update") and p.plan.outcome == "pending"
    ]
    if dry_run or (on_conflict == "fail" and report.conflicts):
        for p in to_apply:
            p.plan.outcome = "skipped"
            if not dry_run:
                p.plan.reason = "not applied: --on-conflict fail and conflicts were found"
        runs_bar.update(len(headers))
        runs_bar.close()
        return report

    runs_bar.update(len(headers) - len(to_apply))

    def apply_one(p: Planned) -> None:
        with bar_lock:
            slot = slots.pop(0) if slots else 0
        points_bar = tqdm(
            desc=(p.plan.name or p.plan.source_id)[:30],
            unit="pt",
            leave=False,
            disable=not show_progress,
            position=slot + 1,
        )
        try:
            apply_run(ctx, p, progress=points_bar.update)
        except Exception as exc:
            log.debug("applying %s failed", p.plan.source_id, exc_info=True)
            p.plan.outcome = "failed"
            p.plan.error = _one_line(exc)
        finally:
            points_bar.close()
            with bar_lock:
                slots.append(slot)
                runs_bar.update(1)
            if on_run_done is not None:
                on_run_done(p.plan)
            p.run = None  # free the body as soon as the run is written

    # Parents before children, so a child can name its parent's destination id.
    for wave in _waves(to_apply):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(apply_one, wave))
    runs_bar.close()
    return report
