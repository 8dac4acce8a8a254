"""Retries for calls to a W&B server: exponential backoff with jitter on transient
failures. ``wandb-core`` retries some failures itself, but not all, and a listing must not
lose a page."""

from __future__ import annotations

import random
import time
import urllib.error
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

_T = TypeVar("_T")
_PERMANENT = ("not implemented", "could not find", "not found", "permission", "unauthorized")
_NEVER = ("AuthenticationError", "RunNotFoundError", "UsageError", "Unreachable")


def transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help (HTTP 429/5xx, network trouble), not a refusal."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    if type(exc).__name__ in _NEVER:
        return False
    text = str(exc).lower()
    return not any(p in text for p in _PERMANENT)


def retry(
    fn: Callable[[], _T],
    *,
    attempts: int = 6,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    slot: AbstractContextManager[object] | None = None,
) -> _T:
    """Call ``fn`` (inside ``slot``, a concurrency bound) with exponential backoff +
    jitter on transient failures; ``Retry-After`` of an HTTP answer is honoured."""
    delay = base_delay
    for attempt in range(attempts):
        try:
            with slot if slot is not None else nullcontext():
                return fn()
        except StopIteration:
            raise
        except Exception as exc:
            if attempt == attempts - 1 or not transient(exc):
                raise
            wait = delay
            if isinstance(exc, urllib.error.HTTPError):
                ra = exc.headers.get("Retry-After") if exc.headers else None
                if ra and ra.isdigit():
                    wait = max(wait, float(ra))
            time.sleep(min(max_delay, wait) * (1 + random.random() * 0.5))
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
