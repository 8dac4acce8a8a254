"""Decoding the records of a ``.wandb`` transaction log: JSON values, key paths,
timestamps, history rows and metric definitions."""

from __future__ import annotations

import json
import math
from typing import Any

from bridge.adapters.wandb.txlog import pb

INTERNAL_KEYS = ("_step", "_timestamp", "_runtime")


def json_value(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json  # not JSON: keep the raw text rather than lose it


def path_of(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def set_path(d: dict[str, Any], path: list[str], value: Any) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[path[-1]] = value


def del_path(d: dict[str, Any], path: list[str]) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            return
        d = nxt
    d.pop(path[-1], None)


def ts_ms(ts: Any) -> int:
    return int(ts.seconds * 1000 + ts.nanos // 1_000_000)


def history_value(item: Any) -> Any:
    """Decoded value of a history item (``value_json`` in 0.31; typed fields in newer SDKs)."""
    if item.value_json:
        return json_value(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return json_value(item.json)
    return getattr(item, kind)


def fast_value(item: Any) -> Any:
    """Like :func:`_history_value`, but numbers skip the JSON parser (the hot path)."""
    vj = item.value_json
    if vj:
        try:
            return float(vj) if vj[0] not in '"[{tfn' else json_value(vj)
        except ValueError:
            return json_value(vj)
    return history_value(item)


def row_meta(history: Any) -> tuple[int, int | None]:
    """(step, timestamp ms) of one history row: ``_step``/``_timestamp``, else ``step.num``."""
    step: int | None = None
    ts: int | None = None
    for item in history.item:
        nk = item.nested_key
        head = nk[0] if len(nk) == 1 else (item.key if not nk else "")
        if head == "_step" or head == "_timestamp":
            v = history_value(item)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            if head == "_step":
                step = int(v)
            else:
                ts = int(v * 1000)
    return (int(history.step.num) if step is None else step), ts


def metric_def(m: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if m.name:
        d["name"] = m.name
    if m.glob_name:
        d["glob_name"] = m.glob_name
    if m.step_metric:
        d["step_metric"] = m.step_metric
    if m.HasField("options"):
        if m.options.step_sync:
            d["step_sync"] = True
        if m.options.hidden:
            d["hidden"] = True
    if m.HasField("summary"):
        aggs = [f.name for f, v in m.summary.ListFields() if v is True]
        if aggs:
            d["summary"] = aggs
    if m.goal:
        d["goal"] = pb.MetricRecord.MetricGoal.Name(m.goal).removeprefix("GOAL_").lower()
    if m.expanded_from_glob:
        d["expanded_from_glob"] = True
    return d
