"""Test-only crash hooks: SIGKILL the process at a named point or after a seeded delay.

The kill campaign (``tests/test_kill_campaign.py``) proves the write order crash-safe by
killing ``bridge sync`` with SIGKILL — no ``finally``, no flush, no atexit — at named points
along the write path (planning, run creation, metadata, every history flush, files, model
objects, registry versions and aliases, the completion marker), then re-running it and
checking that nothing was duplicated or lost. The hooks are driven by the environment only:

* ``BRIDGE_KILL_AT=NAME`` kills at the first hit of ``kill_point(NAME)`` in this process;
  ``NAME#N`` at its N-th hit (counted across threads).
* ``BRIDGE_KILL_AFTER_MS=MS`` arms a timer at the first ``kill_point`` call (when the pass
  has listed its source) that kills after a delay drawn uniformly from ``[0, MS]`` ms with
  ``random.Random(BRIDGE_KILL_SEED)`` — the same seed gives the same delay, so a failure is
  reproducible from the seed the campaign prints. Without a seed the delay is exactly MS.

Before dying the process writes one line ``bridge.faults: SIGKILL at ...`` to stderr, so a
test can tell its own kill from any other death. Harmless in production: with neither
variable set, ``kill_point`` costs one dict lookup (the environment is read once).
"""

from __future__ import annotations

import os
import random
import signal
import threading

KILL_AT_ENV = "BRIDGE_KILL_AT"
KILL_AFTER_ENV = "BRIDGE_KILL_AFTER_MS"
KILL_SEED_ENV = "BRIDGE_KILL_SEED"

_targets: dict[str, int] | None = None  # point name -> the hit that kills (1-based)
_hits: dict[str, int] = {}
_lock = threading.Lock()


def kill_point(name: str) -> None:
    """SIGKILL this process here if ``BRIDGE_KILL_AT`` names this point (and hit)."""
    targets = _targets if _targets is not None else _load()
    nth = targets.get(name)
    if nth is None:
        return
    with _lock:
        hit = _hits[name] = _hits.get(name, 0) + 1
    if hit == nth:
        die(f"at {name}#{hit}")


def die(why: str) -> None:
    """Say why on stderr (unbuffered), then SIGKILL the whole process at once."""
    os.write(2, f"bridge.faults: SIGKILL {why} (pid {os.getpid()})\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


def parse_target(spec: str) -> tuple[str, int]:
    """``name`` or ``name#N`` -> (name, N); N defaults to 1."""
    name, _, nth = spec.strip().partition("#")
    count = int(nth) if nth else 1
    if not name or count < 1:
        raise ValueError(f"{KILL_AT_ENV}: bad kill point {spec!r} (want NAME or NAME#N, N >= 1)")
    return name, count


def kill_delay_ms(bound_ms: float, seed: str | None) -> float:
    """The random delay the timer waits: uniform in [0, bound] for a seed, else the bound."""
    if seed is None:
        return bound_ms
    return random.Random(seed).uniform(0.0, bound_ms)


def _load() -> dict[str, int]:
    """Read the environment once; arm the random-delay timer if asked."""
    global _targets
    with _lock:
        if _targets is None:
            spec = os.environ.get(KILL_AT_ENV, "").strip()
            _targets = dict([parse_target(spec)]) if spec else {}
            _arm_timer(os.environ.get(KILL_AFTER_ENV), os.environ.get(KILL_SEED_ENV))
        return _targets


def _arm_timer(bound: str | None, seed: str | None) -> None:
    if not bound:
        return
    delay = kill_delay_ms(float(bound), seed)
    timer = threading.Timer(delay / 1000.0, die, args=(f"after {delay:.0f} ms (seed {seed})",))
    timer.daemon = True
    timer.start()
