"""Bench: what one history commit costs in the state store for a run with many metric keys.

After every flush the applier records per-key watermarks and stream digests. Before issue
11 it rewrote the watermark of *every* key the run had, one upsert statement per key, then
the digests of the keys written to, one statement each, in a second transaction. Now it
writes only the keys written to since the last commit, watermarks and digests in one
transaction, one ``executemany`` statement per table.

This times both on the same state store (sqlite file by default, ``--state URL`` for
PostgreSQL), for a run of ``--keys`` metric keys (default 20,000) whose watermarks all
exist already, with ``--changed`` keys written to per commit (default 1,000: a batch of
1,000 points of a server destination, one point per key) and with every key changed.

    python bench/watermark_commit.py [--keys 20000] [--changed 1000] [--commits 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bridge.state import StateStore, _upsert, stream_digests_table, streams_table

DEST, SOURCE = "mlflow:bench", "run-1"


def old_commit(
    state: StateStore, watermarks: dict[str, int], recorded: dict[str, tuple[int, str]]
) -> None:
    """The commit as it was before: every key's watermark, then the changed keys' digests,
    one statement per key (``StateStore.set_watermarks`` / ``set_stream_digests`` then)."""
    with state._tx() as conn:
        for key, count in watermarks.items():
            row = {"dest_uri": DEST, "source_id": SOURCE, "key": key}
            _upsert(conn, streams_table, row, {"points": count}, keep_max=("points",))
    with state._tx() as conn:
        for key, (points, digest) in recorded.items():
            row = {"dest_uri": DEST, "source_id": SOURCE, "key": key}
            _upsert(conn, stream_digests_table, row, {"points": points, "digest": digest})


def new_commit(
    state: StateStore, watermarks: dict[str, int], recorded: dict[str, tuple[int, str]]
) -> None:
    """The commit now (``apply._commit_streams``): the changed keys only, one transaction."""
    del watermarks  # not needed any more: that is the point
    state.set_watermarks(
        DEST, SOURCE, {k: n for k, (n, _) in recorded.items()}, digests=dict(recorded)
    )


Commit = Callable[[StateStore, dict[str, int], dict[str, tuple[int, str]]], None]


def time_commits(
    state: StateStore, commit: Commit, keys: list[str], changed: int, commits: int
) -> float:
    """Median seconds per commit; each commit raises ``changed`` keys by one point."""
    watermarks = state.get_watermarks(DEST, SOURCE)
    times = []
    for c in range(commits):
        start = (c * changed) % len(keys)
        touched = [keys[(start + i) % len(keys)] for i in range(changed)]
        for key in touched:
            watermarks[key] += 1
        recorded = {key: (watermarks[key], f"{watermarks[key]:016x}") for key in touched}
        t0 = time.perf_counter()
        commit(state, watermarks, recorded)
        times.append(time.perf_counter() - t0)
    got = state.get_watermarks(DEST, SOURCE)
    assert got == watermarks, "the commit lost or lowered a watermark"
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--changed", type=int, default=1_000)
    ap.add_argument("--commits", type=int, default=5)
    ap.add_argument("--state", help="state store URL (default: a temp sqlite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.state or f"sqlite:///{Path(tmp) / 'state.db'}"
        state = StateStore(url)
        keys = [f"layer{i // 100}/unit{i % 100}/activation" for i in range(args.keys)]
        new_commit(state, {}, {k: (1, f"{1:016x}") for k in keys})  # the run's first commit
        print(f"state store: {url.split('://')[0]}, run with {args.keys:,} metric keys")
        for changed in sorted({min(args.changed, args.keys), args.keys}):
            old = time_commits(state, old_commit, keys, changed, args.commits)
            new = time_commits(state, new_commit, keys, changed, args.commits)
            print(
                f"  {changed:>6,} keys changed per commit: before {old * 1000:8.1f} ms/commit, "
                f"now {new * 1000:8.1f} ms/commit ({old / new:5.1f}x)"
            )
        state.forget_run(DEST, SOURCE)  # a shared PostgreSQL store keeps nothing of it
        state.engine.dispose()


if __name__ == "__main__":
    main()
