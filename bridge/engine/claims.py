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
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
import weakref

from bridge.state import StateStore

#: A claim whose heartbeat is older than this is free to take (its holder stopped).
LEASE_SECONDS = 300.0

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
    """The claims one sync pass holds in the state store, with their heartbeat."""

    def __init__(self, state: StateStore, dest_uri: str, lease: float = LEASE_SECONDS) -> None:
        self.state = state
        self.dest_uri = dest_uri
        self.lease = lease
        self.host = socket.gethostname()
        self.nonce = uuid.uuid4().hex[:12]
        self.holder = f"{self.host}:{os.getpid()}:{self.nonce}"
        self._held: set[str] = set()
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
        busy = self.state.take_claim(self.dest_uri, source_id, self.holder, self.is_stale)
        if busy is None:
            with self._lock:
                self._held.add(source_id)
                if self._beat is None:
                    self._beat = _start_heartbeat(self)
        return busy

    def release(self, source_id: str) -> None:
        """Give back one claim (a no-op when this pass does not hold it)."""
        with self._lock:
            if source_id not in self._held:
                return
            self._held.discard(source_id)
        self.state.release_claim(self.dest_uri, source_id, self.holder)

    def release_all(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Give back every claim of this pass except those in ``keep``."""
        with self._lock:
            drop = sorted(self._held - set(keep))
        for source_id in drop:
            self.release(source_id)

    def close(self) -> None:
        """Give back everything and stop the heartbeat."""
        with self._lock:
            self._held.clear()
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
    """Renew the pass's claims every fifth of the lease, while the pass is alive."""
    ref = weakref.ref(claims)
    stop, every = claims._stop, claims.lease / 5

    def beat() -> None:
        while not stop.wait(every):
            alive = ref()
            if alive is None:
                return
            try:
                alive.state.touch_claims(alive.holder)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease is long
                pass
            del alive

    thread = threading.Thread(target=beat, name="bridge-claims-heartbeat", daemon=True)
    thread.start()
    return thread
