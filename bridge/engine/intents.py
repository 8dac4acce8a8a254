"""What planning decided to record, carried out once the run is settled.

Planning reads the source, the state and the destination and decides; it writes
nothing. The state rows a plan implies (a destination run adopted by its identity tag,
a new fingerprint after a ``--full`` pass found nothing to write, a deleted copy
forgotten so the source can write it again, file digests hashed while comparing) travel
on the :class:`~bridge.engine.context.Planned` run as intents and are recorded here, in
the scheduling thread, by real (not dry) passes only.
"""

from __future__ import annotations

from bridge.engine.context import Planned, SyncContext
from bridge.faults import kill_point


def record_intents(ctx: SyncContext, planned: Planned) -> None:
    """Record one planned run's state intents (never called by a dry run)."""
    state, dest_uri, sid = ctx.state, ctx.dest_uri, planned.plan.source_id
    for stat_key, md5 in planned.digests.items():
        state.put_digest(stat_key, md5)
    planned.digests = {}
    if planned.forget:
        state.forget_run(dest_uri, sid)
        state.resolve_conflict(dest_uri, sid, "run", None, None, "source", "policy:source-wins")
        planned.forget = False
    if planned.relink is not None:
        kill_point("plan.relink.before_state")
        # The watermarks before the run row: a row marked complete without them looks
        # unchanged for good, and the next append would re-send every point (a crash in
        # between just re-links again).
        state.set_watermarks(dest_uri, sid, planned.relink.counts)
        kill_point("plan.relink.between")
        state.put_run(dest_uri, sid, planned.relink.state)
        planned.relink = None
    if planned.refingerprint is not None:
        state.put_run(dest_uri, sid, planned.refingerprint)
        planned.refingerprint = None
