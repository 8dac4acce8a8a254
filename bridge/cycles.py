"""Every real sync is one cycle, recorded in the state store (for `bridge status`).

The row is written when the cycle starts, so a process killed mid-cycle leaves a row with
no end: `bridge status` shows it as interrupted (or running, while the lock is held).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from bridge.engine.model import Plan
from bridge.errors import EXIT_RUN_FAILED, BridgeError
from bridge.state import StateStore


def plan_counts(plan: Plan) -> dict[str, Any]:
    """What a cycle row and a mirror log line carry about one plan."""
    return {
        "actions": plan.counts(),
        "outcomes": plan.outcomes(),
        "points_written": sum(r.points_written for r in plan.runs),
        "files_written": sum(r.files_written for r in plan.runs),
        "conflicts": len(plan.conflicts),
        "resolved": len(plan.resolved),
        "warnings": len(plan.warnings),
        "items": plan.item_counts,  # per workspace item kind: listed, create, update ...
    }


def plan_errors(plan: Plan) -> list[str]:
    items = [f"{i.source_id}: {i.error}" for i in plan.items if i.error]
    return list(plan.errors) + [f"{r.source_id}: {r.error}" for r in plan.runs if r.error] + items


def record_cycle(
    store: StateStore, source_uri: str, dest_uri: str, run: Callable[[], Plan]
) -> Plan:
    """Run one cycle and record start, end, exit code, counts and errors."""
    cycle = store.start_cycle(source_uri, dest_uri, socket.gethostname(), os.getpid())
    try:
        plan = run()
    except BridgeError as exc:
        store.end_cycle(cycle, exc.exit_code, errors=[str(exc)])
        raise
    except BaseException as exc:
        store.end_cycle(cycle, EXIT_RUN_FAILED, errors=[f"{type(exc).__name__}: {exc}"[:500]])
        raise
    store.end_cycle(cycle, plan.exit_code(), counts=plan_counts(plan), errors=plan_errors(plan))
    return plan
