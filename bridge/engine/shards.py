"""Sharded passes: which runs a shard of a pass owns (``--shard I/N``).

A run belongs to shard ``I`` of ``N`` when the first 8 bytes of the SHA-256 of its source
identity, read as a big-endian integer, are ``I`` modulo ``N``: the same answer in every
process, on every machine and Python version (``hash()`` is salted per process). ``I``
counts from 0, like a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``; ``auto/N`` takes
``I`` from that variable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import BridgeError

#: The variable an Indexed Job sets in each pod: its index, from 0.
INDEX_ENV = "JOB_COMPLETION_INDEX"


def shard_of(key: str, count: int) -> int:
    """The shard (0 … count-1) a source identity (or a pair key) falls in."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str, env: Mapping[str, str] | None = None) -> ShardSpec:
    """``I/N`` or ``auto/N`` (``I`` from ``JOB_COMPLETION_INDEX``); a BridgeError (exit 2)
    naming what is wrong otherwise."""
    env = os.environ if env is None else env
    usage = "--shard takes I/N (0 <= I < N) or auto/N"
    head, sep, tail = spec.strip().partition("/")
    if not sep or not tail.strip().isdigit() or int(tail) < 1:
        raise BridgeError(f"{usage}, not {spec!r}")
    count = int(tail)
    if head.strip().lower() == "auto":
        raw = env.get(INDEX_ENV)
        if raw is None or not raw.strip().isdigit():
            shown = "unset" if raw is None else repr(raw)
            raise BridgeError(f"--shard auto/{count}: {INDEX_ENV} is {shown}; {usage}")
        index = int(raw)
    elif head.strip().isdigit():
        index = int(head)
    else:
        raise BridgeError(f"{usage}, not {spec!r}")
    if index >= count:
        raise BridgeError(f"--shard {spec}: index {index} is not below {count}; {usage}")
    return ShardSpec(index, count)
