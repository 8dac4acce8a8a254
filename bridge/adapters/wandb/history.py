"""History rules shared by the offline and the online W&B readers.

Both readers must name keys and place summary-only points identically, so that a run read
from an offline folder and later from the server maps to the same destination content.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

from bridge.schema import MetricChunk


def is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float))  # bool is an int: logged as 0/1


def flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    """Nested dicts -> ``a.b`` keys (the W&B UI's naming); media dicts stay whole."""
    if isinstance(value, dict) and "_type" not in value and value:
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def summary_only_points(
    summary: dict[str, Any], seen: set[str], last_step: int, last_ts: int
) -> Iterator[MetricChunk]:
    """Numeric summary values never logged in history: one point each, at the last step and
    the last history row's time (both readers know that time to the millisecond, while
    the server gives a run's end time in whole seconds). ``_``-keys are W&B internals and
    dicts under a logged key are define_metric aggregates ({"max": ..}), not values."""
    flat: list[tuple[str, Any]] = []
    for k, v in summary.items():
        if k.startswith("_") or (isinstance(v, dict) and k in seen):
            continue
        flatten(k, v, flat)
    for key, v in flat:
        if key not in seen and is_number(v):
            yield MetricChunk(key=key, steps=[last_step], timestamps=[last_ts], values=[float(v)])


def absolute_folder_target(target: str) -> str:
    """An offline folder target (``DIR`` or ``DIR?query``) with DIR made absolute, so the
    same folder is one key in state and tags whatever the working directory."""
    path, q, query = target.partition("?")
    return f"{Path(path).expanduser().resolve()}{q}{query}"
