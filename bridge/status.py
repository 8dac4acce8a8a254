"""`bridge status`: per pair, the last cycle and what is waiting for a person."""

from __future__ import annotations

from typing import Any

from bridge.locks import LockHeld, pair_lock
from bridge.state import StateStore

_CYCLE_FIELDS = ("started_at", "ended_at", "result", "counts", "errors", "host", "pid")


def pair_status(state: str | None) -> list[dict[str, Any]]:
    """One entry per (source, dest) pair that has run a cycle or started a sharded pass,
    newest data only (``last_cycle`` is null until the pair's first cycle record).

    ``last_cycle.state`` is ``done``, ``running`` (no end yet and the pair's lock is held)
    or ``interrupted`` (no end and nobody holds the lock: the process was killed).
    ``open_conflicts`` are those in the pair's destination (conflicts are kept per
    destination and source run); ``source_deleted`` counts runs a complete listing lost.
    """
    store = StateStore(state, read_only=True)
    try:
        conflicts = store.open_conflicts()
        out: list[dict[str, Any]] = []
        for source_uri, dest_uri in store.pairs():
            cycles = store.cycles(source_uri, dest_uri, limit=50)
            last: dict[str, Any] | None = None
            if cycles:  # none yet during a pair's first sharded pass
                last = {k: cycles[0][k] for k in _CYCLE_FIELDS}
                last["state"] = "done"
                if last["ended_at"] is None:
                    last["state"] = _running_or_interrupted(store.url, source_uri, dest_uri)
            ok = next((c for c in cycles if c["result"] == 0), None)
            known, deleted = store.count_pair_members(source_uri, dest_uri)
            mine = [c for c in conflicts if c["dest_uri"] == dest_uri]
            out.append(
                {
                    "source": source_uri,
                    "dest": dest_uri,
                    "last_cycle": last,
                    "last_success_at": ok["ended_at"] if ok else None,
                    "open_conflicts": len(mine),
                    "conflicts": [
                        {
                            k: c[k]
                            for k in ("id", "source_id", "field", "source_value", "dest_value")
                        }
                        for c in mine
                    ],
                    "runs_known": known,
                    "source_deleted": deleted,
                    "passes": _passes(store, source_uri, dest_uri),
                }
            )
        return out
    finally:
        store.close()


def _passes(store: StateStore, source_uri: str, dest_uri: str) -> list[dict[str, Any]]:
    """The pair's last sharded passes (bridge/passes.py): indices ended or not, and
    whether the final step ran (``final``: null, running, done) and the pass is complete."""
    out = []
    for p in store.passes(source_uri, dest_uri, limit=5):
        shards = store.pass_shards(p["pass_id"])
        ended = sorted(s["shard"] for s in shards if s["ended_at"] is not None)
        out.append(
            {
                "pass_id": p["pass_id"],
                "shards": p["shard_count"],
                "started_at": p["started_at"],
                "ended": ended,
                "not_ended": [i for i in range(p["shard_count"]) if i not in ended],
                "final": p["final_state"],
                "incomplete": p["incomplete"],
                # progress while the indices run: copies completed since the pass began
                "runs_written": store.count_runs(dest_uri, complete_since=p["started_at"]),
            }
        )
    return out


def _running_or_interrupted(state_url: str, source_uri: str, dest_uri: str) -> str:
    if state_url == "sqlite://":
        return "interrupted"
    try:
        with pair_lock(state_url, source_uri, dest_uri, wait=False):
            return "interrupted"
    except LockHeld:
        return "running"
