"""Content shared by runs of several processes is placed once per destination.

An artifact version (a model object, content linked by registry versions) is keyed in
state by its content-addressed source identity (``StateStore.put_object``). Two processes
that reach the same version at once — shards of one pass whose runs log or register it —
would both find no copy and both write one. The first to arrive claims the version in the
state store (the run claims' table, key ``object:<source id>``, same leases and takeover
of a dead holder); the others wait until the copy is recorded, or the claim comes free.
Worker threads of one process queue on a lock first (a pass's claim is its own: a second
thread of the holder would pass straight through).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.engine.context import SyncContext

POLL_SECONDS = 0.5

#: Striped: a bounded set of locks, whatever the number of versions a pass meets.
_LOCKS = [threading.Lock() for _ in range(64)]


def object_key(source_id: str) -> str:
    """The claim key of an artifact version (never a run's source id: they have no prefix)."""
    return f"object:{source_id}"


@contextmanager
def claimed_object(ctx: SyncContext, source_id: str) -> Iterator[None]:
    """Hold the version's claim for the block, or return once another process recorded
    its copy (the caller looks the copy up again first thing inside the block)."""
    key = object_key(source_id)
    with _LOCKS[hash(key) % len(_LOCKS)], _claimed(ctx, source_id, key):
        yield


@contextmanager
def _claimed(ctx: SyncContext, source_id: str, key: str) -> Iterator[None]:
    while True:
        if ctx.claim_run(key) is None:
            break
        if ctx.state.get_object(ctx.dest_uri, source_id) is not None:
            yield  # the holder finished it: nothing to claim
            return
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        ctx.release_run(key)
