"""Run claims: one process at a time copies a given source run into a given destination.

Two syncs into one destination can read sources that yield the same run identities (an
offline folder and the server URI of the same project; two copies of a folder). The pair
lock (bridge/locks.py) is keyed on the URI strings, so it cannot see that; a claim row per
(destination, source identity) in the shared state store can. A sync claims a run before
it plans work on it and gives the claim back when the run's apply ends, so processes
working on *different* runs of one destination proceed in parallel.

A claim names its holder ``host:pid:nonce`` (one nonce per sync pass) and carries a
heartbeat renewed by a background thread. Another process takes a claim over when its
holder is dead: same host and the pid is gone, or the heartbeat is older than the lease
(another machine that stopped). A run claimed by a live holder is skipped this pass with
its name: the holder copies it.

**Leases and fencing tokens.** A claim is a lease: the heartbeat renews it every fifth of
``lease``; unrenewed for longer (a process paused or cut off from the store), it is free to
take over. Every take or takeover bumps the run's fencing token (``bridge_claim_fences``,
in the take's transaction; never reset), and the pass keeps (holder, token) per run: a
:class:`~bridge.state.claims.Fence`. The pass's view of the store (:class:`FencedStore`,
``SyncContext.state``) hands each per-run state write the fence of its run, and the store
checks it in the write's own transaction (``check_fence``): a holder that outlived its
lease is refused (:class:`~bridge.errors.LeaseLost`, nothing written) once a successor took
the run, so it cannot overwrite the successor's watermarks, files or run row. The
destination cannot be fenced: a renewal that finds a claim gone marks the run lost, and
the apply checks (:meth:`RunClaims.check`, between history chunks, before each file, before
creating and finishing a run; one store round trip when renewals are overdue, e.g. after a
pause) so the stale holder stops writing that run as soon as it can; the run fails on its
line ("lease lost to HOST:PID — the successor finishes it") and the successor copies it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable

from bridge.errors import LeaseLost
from bridge.state import RunState, StateStore
from bridge.state.claims import Fence

#: A claim whose heartbeat is older than this is free to take (its holder stopped).
LEASE_SECONDS = 300.0
#: Overrides the lease of the passes of a process (seconds; tests use short leases).
LEASE_ENV = "BRIDGE_CLAIM_LEASE"


def default_lease() -> float:
    """``BRIDGE_CLAIM_LEASE`` when set, else :data:`LEASE_SECONDS`."""
    value = os.environ.get(LEASE_ENV, "").strip()
    return float(value) if value else LEASE_SECONDS


#: Nonces of the passes of this process that hold claims now (a claim with our pid and a
#: nonce not here was left by an earlier pass of this process: stale).
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class RunClaims:
    """The claims one sync pass holds in the state store, with their heartbeat and the
    fence (holder, token) of each (module docstring)."""

    def __init__(self, state: StateStore, dest_uri: str, lease: float | None = None) -> None:
        self.state = state
        self.dest_uri = dest_uri
        self.lease = default_lease() if lease is None else lease
        self.host = socket.gethostname()
        self.nonce = uuid.uuid4().hex[:12]
        self.holder = f"{self.host}:{os.getpid()}:{self.nonce}"
        self._held: dict[str, int] = {}  # source id -> fencing token of our take
        self._lost: dict[str, str | None] = {}  # source id -> its successor (host:pid)
        self._renewed_at = time.time()  # when the last renewal of every held claim began
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        with _LIVE_LOCK:
            _LIVE.add(self.nonce)
        # A pass that ends without releasing (an exception escaped) gives its claims back
        # when it is garbage-collected or the interpreter exits; a killed process's claims
        # are taken over by the next sync (dead pid / expired lease).
        self._finalizer = weakref.finalize(
            self, _release_all, state, self.holder, self.nonce, self._stop
        )

    def take(self, source_id: str) -> str | None:
        """Claim ``source_id``; None when this pass holds it now, else its live holder."""
        taken = self.state.take_fenced_claim(self.dest_uri, source_id, self.holder, self.is_stale)
        if isinstance(taken, str):
            return taken
        with self._lock:
            if not self._held:
                self._renewed_at = time.time()
            self._held[source_id] = taken.token
            self._lost.pop(source_id, None)
            if self._beat is None:
                self._beat = _start_heartbeat(self)
        return None

    def fence(self, source_id: str) -> Fence | None:
        """The fence a state write of ``source_id`` carries: None when this pass does not
        hold the run (the write is not fenced); :class:`LeaseLost` when its lease went to
        another holder."""
        with self._lock:
            token = self._held.get(source_id)
            if token is None:
                return None
            if source_id in self._lost:
                raise LeaseLost(source_id, self._lost[source_id])
        return Fence(self.holder, token)

    def check(self, source_id: str) -> None:
        """Before writing more of ``source_id`` to the destination: raise
        :class:`LeaseLost` when its lease went to another holder. Free while renewals are
        on time; when they are overdue (half a lease: this process was paused, or the
        store unreachable) the claims are renewed first, which finds a takeover."""
        with self._lock:
            held = source_id in self._held
            overdue = time.time() - self._renewed_at > self.lease / 2
        if held and overdue:
            self.renew()
        self.fence(source_id)

    def renew(self) -> None:
        """Renew the lease of every claim held (one heartbeat); a claim found in another
        holder's hands is marked lost (its writes are refused from now on)."""
        with self._lock:
            snapshot = dict(self._held)
        began = time.time()
        still = self.state.touch_claims(self.holder)
        gone = {sid: token for sid, token in snapshot.items() if sid not in still}
        successors = {sid: self.state.claim_taker(self.dest_uri, sid) for sid in gone}
        with self._lock:
            self._renewed_at = began
            for sid, token in gone.items():
                # released, or released and taken again, since the snapshot: not lost
                if self._held.get(sid) == token and sid not in self._lost:
                    successor = successors[sid]
                    if successor is None or successor == self.holder:
                        self._lost[sid] = None  # given back, not taken
                    else:
                        self._lost[sid] = holder_name(successor)

    def lost(self) -> dict[str, str | None]:
        """Runs whose lease went to another holder (source id -> ``host:pid`` or None)."""
        with self._lock:
            return dict(self._lost)

    def release(self, source_id: str) -> None:
        """Give back one claim (a no-op when this pass does not hold it; a lost claim is
        the successor's and stays)."""
        with self._lock:
            if source_id not in self._held:
                return
            del self._held[source_id]
            self._lost.pop(source_id, None)
        self.state.release_claim(self.dest_uri, source_id, self.holder)

    def release_all(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Give back every claim of this pass except those in ``keep``."""
        with self._lock:
            drop = sorted(set(self._held) - set(keep))
        for source_id in drop:
            self.release(source_id)

    def close(self) -> None:
        """Give back everything and stop the heartbeat."""
        with self._lock:
            self._held.clear()
            self._lost.clear()
        self._finalizer()

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def is_stale(self, holder: str, heartbeat: float) -> bool:
        """True when the claim's holder can no longer be copying the run."""
        if time.time() - heartbeat > self.lease:
            return True
        host, _, rest = holder.partition(":")
        pid_text, _, nonce = rest.partition(":")
        if host != self.host or not pid_text.isdigit():
            return False  # another machine: only its lease tells
        if int(pid_text) == os.getpid():
            with _LIVE_LOCK:
                return nonce not in _LIVE  # an earlier pass of this process
        return not _pid_alive(int(pid_text))


class FencedStore(StateStore):
    """The pass's view of the state store: the same connection, with every per-run write
    carrying the fence of the pass's claim on that run (``fence_of(dest_uri, source_id)``:
    None when the pass does not hold it, so the write is unfenced as before). Callers
    write as they always did; a write of a run whose lease was lost raises
    :class:`LeaseLost` and writes nothing."""

    def __init__(self, inner: StateStore, fence_of: Callable[[str, str], Fence | None]) -> None:
        # No second engine: the store's connection, lock and settings, shared.
        vars(self).update(vars(inner))
        self.inner = inner
        self._fence_of = fence_of

    def _fence(self, dest_uri: str, source_id: str, fence: Fence | None) -> Fence | None:
        return fence if fence is not None else self._fence_of(dest_uri, source_id)

    def put_run(
        self, dest_uri: str, source_id: str, state: RunState, fence: Fence | None = None
    ) -> None:
        super().put_run(dest_uri, source_id, state, self._fence(dest_uri, source_id, fence))

    def reset_run(
        self, dest_uri: str, source_id: str, state: RunState, fence: Fence | None = None
    ) -> None:
        super().reset_run(dest_uri, source_id, state, self._fence(dest_uri, source_id, fence))

    def forget_run(self, dest_uri: str, source_id: str, fence: Fence | None = None) -> None:
        super().forget_run(dest_uri, source_id, self._fence(dest_uri, source_id, fence))

    def set_watermarks(
        self,
        dest_uri: str,
        source_id: str,
        points: dict[str, int],
        digests: dict[str, tuple[int, str]] | None = None,
        fence: Fence | None = None,
    ) -> None:
        if not points and not digests:
            return
        fence = self._fence(dest_uri, source_id, fence)
        super().set_watermarks(dest_uri, source_id, points, digests, fence)

    def put_file(
        self, dest_uri: str, source_id: str, path: str, digest: str, fence: Fence | None = None
    ) -> None:
        fence = self._fence(dest_uri, source_id, fence)
        super().put_file(dest_uri, source_id, path, digest, fence)

    def put_editable(
        self,
        dest_uri: str,
        source_id: str,
        values: dict[str, str | None],
        fence: Fence | None = None,
    ) -> None:
        super().put_editable(dest_uri, source_id, values, self._fence(dest_uri, source_id, fence))

    def record_conflict(
        self,
        dest_uri: str,
        source_id: str,
        field: str,
        source_value: str | None,
        dest_value: str | None,
        synced_value: str | None,
        fence: Fence | None = None,
    ) -> None:
        fence = self._fence(dest_uri, source_id, fence)
        super().record_conflict(
            dest_uri, source_id, field, source_value, dest_value, synced_value, fence
        )

    def resolve_conflict(
        self,
        dest_uri: str,
        source_id: str,
        field: str,
        source_value: str | None,
        dest_value: str | None,
        choice: str,
        resolved_by: str,
        note: str | None = None,
        fence: Fence | None = None,
    ) -> int:
        fence = self._fence(dest_uri, source_id, fence)
        return super().resolve_conflict(
            dest_uri, source_id, field, source_value, dest_value, choice, resolved_by, note, fence
        )

    def close_stale_conflicts(
        self,
        dest_uri: str,
        source_id: str,
        current: set[str],
        fields: tuple[str, ...] | None = None,
        fence: Fence | None = None,
    ) -> int:
        fence = self._fence(dest_uri, source_id, fence)
        return super().close_stale_conflicts(dest_uri, source_id, current, fields, fence)


def holder_name(holder: str) -> str:
    """``host:pid`` of a claim holder (its nonce only tells passes of a process apart)."""
    return holder.rsplit(":", 1)[0]


def _release_all(state: StateStore, holder: str, nonce: str, stop: threading.Event) -> None:
    stop.set()
    with _LIVE_LOCK:
        _LIVE.discard(nonce)
    try:
        state.release_claims(holder)
    except Exception:  # noqa: BLE001 - at exit the store may be gone; the lease frees them
        pass


def _start_heartbeat(claims: RunClaims) -> threading.Thread:
    """Renew the pass's claims every fifth of the lease, while the pass is alive; a claim
    found taken over is marked lost (:meth:`RunClaims.renew`)."""
    ref = weakref.ref(claims)
    stop, every = claims._stop, claims.lease / 5

    def beat() -> None:
        while not stop.wait(every):
            alive = ref()
            if alive is None:
                return
            try:
                alive.renew()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease is long
                pass
            del alive

    thread = threading.Thread(target=beat, name="bridge-claims-heartbeat", daemon=True)
    thread.start()
    return thread
