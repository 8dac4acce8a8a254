"""Sharded passes: ``bridge sync SRC DST --shard I/N`` on N workers, then one final step.

Each index of a pass copies the runs it owns (engine/shards.py) under its own lock (the
pair key and the index: two processes of one index never run at once, different indices
do), with a heartbeat in ``bridge_pass_shards``. The work that must happen once per pass —
deletions decided on the whole source's listing, pending parent links, registered models,
workspace items, the cycle record — is the final step: when an index ends (whatever its
exit), it looks whether every index of the pass has ended (an index whose heartbeat is
older than the lease counts as ended, dead: the pass is incomplete); if so it takes the
final step by compare-and-set on the pass row, so exactly one process runs it.
``bridge sync SRC DST --finish-pass`` runs it by hand when no index is left to end.

Shards join the newest pass of (pair, N) whose final step has not run and in which their
own index has not ended, else open one; ``--pass-id`` (env ``BRIDGE_PASS_ID``) names it
(a Kubernetes Indexed Job: the Job's uid).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bridge.cycles import plan_counts, plan_errors
from bridge.engine.model import Plan
from bridge.engine.shards import ShardSpec
from bridge.engine.sync import Stage
from bridge.errors import EXIT_RUN_FAILED, BridgeError
from bridge.locks import LockHeld, pair_lock
from bridge.schema import Warning_
from bridge.state import StateStore

LEASE_ENV = "BRIDGE_PASS_LEASE"
PASS_ID_ENV = "BRIDGE_PASS_ID"
LEASE_SECONDS = 300.0

RunStage = Callable[[Stage], Plan]


def lease_seconds() -> float:
    """How long an index may go without a heartbeat before it counts as dead."""
    raw = os.environ.get(LEASE_ENV)
    try:
        return float(raw) if raw else LEASE_SECONDS
    except ValueError:
        return LEASE_SECONDS


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class _Beat:
    """Calls ``beat`` every lease/4 on a thread until stopped."""

    def __init__(self, beat: Callable[[], None], lease: float) -> None:
        self._stop = threading.Event()
        self._every = max(lease / 4, 0.05)
        self._beat = beat
        self._thread = threading.Thread(target=self._loop, name="bridge-pass-beat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a missed beat; the next one retries
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def sharded_sync(
    store: StateStore,
    source_uri: str,
    dest_uri: str,
    shard: ShardSpec,
    pass_id: str | None,
    run: RunStage,
    *,
    wait: bool = False,
    timeout: float | None = None,
) -> Plan:
    """One index of a pass: its runs, then the final step if it is the last to end."""
    try:
        with pair_lock(
            store.url, source_uri, f"{dest_uri} [shard {shard}]", wait=wait, timeout=timeout
        ):
            return _run_shard(store, source_uri, dest_uri, shard, pass_id, run)
    except LockHeld as held:
        plan = Plan(source=source_uri, dest=dest_uri, dry_run=False, skipped=str(held))
        plan.shard = str(shard)
        return plan


def _run_shard(
    store: StateStore,
    source_uri: str,
    dest_uri: str,
    shard: ShardSpec,
    pass_id: str | None,
    run: RunStage,
) -> Plan:
    holder = _holder()
    try:
        pid = store.join_pass(source_uri, dest_uri, shard.count, shard.index, holder, pass_id)
    except ValueError as exc:
        raise BridgeError(f"--pass-id: {exc}") from exc
    beat = _Beat(lambda: store.beat_shard(pid, shard.index, holder), lease_seconds())
    plan: Plan | None = None
    error: BaseException | None = None
    try:
        plan = run("runs")
    except BaseException as exc:  # recorded as this index's end, then raised again
        error = exc
    finally:
        beat.stop()
    if plan is not None:
        store.end_shard(
            pid, shard.index, holder, plan.exit_code(), plan_counts(plan), plan_errors(plan)
        )
    else:
        code = error.exit_code if isinstance(error, BridgeError) else EXIT_RUN_FAILED
        text = str(error) if isinstance(error, BridgeError) else f"{type(error).__name__}: {error}"
        store.end_shard(pid, shard.index, holder, code, None, [text[:500]])
    if error is not None and not isinstance(error, Exception):
        raise error  # interrupted (^C, SystemExit): no final step from here
    final: Plan | None = None
    try:
        final = finish_pass(store, source_uri, dest_uri, pid, run, holder=holder)
    except BridgeError:
        if error is None:
            raise
    if error is not None:
        raise error
    assert plan is not None
    plan.shard, plan.pass_id, plan.final_step = str(shard), pid, final is not None
    if final is not None:
        _merge(plan, final)
    return plan


def _index_states(
    store: StateStore, pass_row: dict[str, Any], by_hand: bool
) -> dict[int, tuple[str, Any]]:
    """Each index: ("ended", exit), ("dead", None) or ("running", None). An index that never
    started is running (an Indexed Job may start indices later, as others end), except by
    hand (``--finish-pass``): then it is dead."""
    now, lease = time.time(), lease_seconds()
    rows = {r["shard"]: r for r in store.pass_shards(pass_row["pass_id"])}
    out: dict[int, tuple[str, Any]] = {}
    for i in range(int(pass_row["shard_count"])):
        r = rows.get(i)
        if r is None:
            out[i] = ("dead", None) if by_hand else ("running", None)
        elif r["ended_at"] is not None:
            out[i] = ("ended", r["result"])
        elif now - float(r["heartbeat"]) > lease:
            out[i] = ("dead", None)
        else:
            out[i] = ("running", None)
    return out


def finish_pass(
    store: StateStore,
    source_uri: str,
    dest_uri: str,
    pass_id: str | None,
    run: RunStage,
    *,
    holder: str | None = None,
) -> Plan | None:
    """The final step of a pass once every index has ended; None when an index still runs
    or another process took it. ``holder=None`` is ``--finish-pass`` by hand: the newest
    unfinished pass of the pair when no id is given; what stops it is an error (exit 2)."""
    by_hand = holder is None
    if pass_id is None:
        open_ = [p for p in store.passes(source_uri, dest_uri) if p["final_state"] != "done"]
        if not open_:
            raise BridgeError(f"no unfinished sharded pass of {source_uri} -> {dest_uri}")
        pass_id = str(open_[0]["pass_id"])
    row = store.get_pass(pass_id)
    if row is None:
        raise BridgeError(f"no pass {pass_id!r} in the state store")
    states = _index_states(store, row, by_hand)
    running = [i for i, (state, _) in states.items() if state == "running"]
    if running:
        if by_hand:
            shown = ", ".join(map(str, running))
            raise BridgeError(
                f"pass {pass_id}: shard(s) {shown} still running (a heartbeat within "
                f"{lease_seconds():.0f} s); wait for them or retry after the lease"
            )
        return None
    me = holder or _holder()
    stale = time.time() - lease_seconds() if by_hand else None
    if not store.take_final(pass_id, me, stale):
        if by_hand:
            raise BridgeError(f"pass {pass_id}: the final step already ran or is running")
        return None
    final = _final_step(store, source_uri, dest_uri, pass_id, states, run, me)
    if by_hand:  # what was asked for is the pass: an incomplete one exits 1
        final.errors.extend(w.message for w in final.notices if w.code == "pass-incomplete")
    return final


def _final_step(
    store: StateStore,
    source_uri: str,
    dest_uri: str,
    pass_id: str,
    states: dict[int, tuple[str, Any]],
    run: RunStage,
    holder: str,
) -> Plan:
    """Run the once-per-pass work and record the pass as one cycle."""
    parts = [
        f"shard {i} died" if state == "dead" else f"shard {i} ended with exit {code}"
        for i, (state, code) in sorted(states.items())
        if state == "dead" or code != 0
    ]
    incomplete = f"pass incomplete: {'; '.join(parts)}" if parts else None
    cycle = store.start_cycle(source_uri, dest_uri, socket.gethostname(), os.getpid())
    shards = store.pass_shards(pass_id)
    beat = _Beat(lambda: store.beat_final(pass_id, holder), lease_seconds())
    try:
        with pair_lock(store.url, source_uri, dest_uri, wait=True):
            final = run("final")
    except BaseException as exc:
        text = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
        code = exc.exit_code if isinstance(exc, BridgeError) else EXIT_RUN_FAILED
        errors = [e for s in shards for e in s["errors"]] + [f"final step: {text}"[:500]]
        store.end_cycle(cycle, code, errors=errors + ([incomplete] if incomplete else []))
        store.end_final(pass_id, holder, incomplete or f"final step failed: {text}"[:500])
        raise
    finally:
        beat.stop()
    final.pass_id, final.final_step = pass_id, True
    counts = _sum_counts([s["counts"] for s in shards] + [plan_counts(final)])
    errors = [e for s in shards for e in s["errors"]] + plan_errors(final)
    results = [code for state, code in states.values() if state == "ended"]
    result = _worst(results + [final.exit_code()] + ([EXIT_RUN_FAILED] if incomplete else []))
    if incomplete:
        errors.append(incomplete)
        final.notices.append(
            Warning_(source_id=pass_id, code="pass-incomplete", message=incomplete)
        )
    store.end_cycle(cycle, result, counts=counts, errors=errors)
    store.end_final(pass_id, holder, incomplete)
    return final


def _worst(codes: list[int]) -> int:
    """The worst exit: usage (2), then a failure (1), then conflicts (3), then 0."""
    rank = {0: 0, 3: 1, 1: 2, 2: 3}
    return max(codes, key=lambda c: rank.get(c, 4), default=0)


def _sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a cycle summed over the pass's indices and final step (nested dicts)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                out[key] = _sum_counts([out.get(key) or {}, value])
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
    return out


def _merge(plan: Plan, final: Plan) -> None:
    """The final step's lines into the shard's report."""
    plan.runs.extend(final.runs)
    plan.models.extend(final.models)
    plan.items.extend(final.items)
    plan.item_counts.update(final.item_counts)
    plan.errors.extend(final.errors)
    plan.notices.extend(final.notices)
