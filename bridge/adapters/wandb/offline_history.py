"""An offline run's history streamed from its transaction logs: metric chunks per key
(bounded), non-numeric values as extras (media pointing at their file), system metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.adapters.wandb.bridged import LOCATOR_KEY as BRIDGE_LAYOUT
from bridge.adapters.wandb.bridged import split_row
from bridge.adapters.wandb.history import flatten as _flatten
from bridge.adapters.wandb.history import is_number as _is_number
from bridge.adapters.wandb.history import summary_only_points
from bridge.adapters.wandb.offline_body import SummaryFold
from bridge.adapters.wandb.offline_records import (
    INTERNAL_KEYS,
    fast_value,
    history_value,
    json_value,
    set_path,
    ts_ms,
)
from bridge.adapters.wandb.txlog import TxlogReader
from bridge.paths import path_problem
from bridge.schema import (
    ExtraValue,
    FileRef,
    HistoryItem,
    MetricChunk,
    Run,
)

CHUNK_POINTS = 1000


def history_items(run: Run, restore_bridge: bool) -> Iterator[HistoryItem]:
    """The run's history from its logs, as the W&B API reader yields it for the same run."""
    parts = [p for p in run.header.locator.get("parts", []) if p.get("records")]
    buffers: dict[str, tuple[list[int], list[int], list[float]]] = {}
    seen: set[str] = set()
    last_step = 0
    last_ts = run.start_time_ms or 0
    stats_index: dict[str, int] = {}
    layout = run.header.locator.get(BRIDGE_LAYOUT) if restore_bridge else None
    step_key = layout["step_key"] if layout else None
    # The summary, when the body was read without it (offline_body.py): folded here.
    fold = SummaryFold() if run.results_pending else None
    for part in parts:
        shift = int(part.get("step_shift", 0))
        folders = [Path(part["folder"])] + [Path(p["folder"]) for p in parts]
        reader = TxlogReader(part["log"])
        for _, rec in reader.records():
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                flat: list[tuple[str, Any]] = []
                row: dict[str, Any] | None = None
                step: int | None = None
                for item in rec.history.item:
                    nk = item.nested_key
                    if len(nk) > 1:  # a nested dict or a media value split by the SDK
                        if row is None:
                            row = {}
                        set_path(row, list(nk), history_value(item))
                        continue
                    head = nk[0] if nk else item.key
                    v = fast_value(item)
                    if head in INTERNAL_KEYS:
                        if head == "_step" and _is_number(v):
                            step = int(v)
                        elif head == "_timestamp" and _is_number(v) and math.isfinite(v):
                            last_ts = round(v * 1000) if step_key else int(v * 1000)
                        continue
                    if isinstance(v, dict):
                        _flatten(head, v, flat)
                    else:
                        flat.append((head, v))
                if row is not None:
                    for k, v in row.items():
                        _flatten(k, v, flat)
                if step is None:
                    step = int(rec.history.step.num)
                step += shift
                if step_key is not None:  # bridge-written: the source step is a column
                    source_step, flat = split_row(flat, step_key)
                    if source_step is not None:
                        step = source_step
                if step > last_step:
                    last_step = step
                for key, v in flat:
                    if isinstance(v, (int, float)):
                        seen.add(key)
                        buf = buffers.get(key)
                        if buf is None:
                            buf = buffers[key] = ([], [], [])
                        buf[0].append(step)
                        buf[1].append(last_ts)
                        buf[2].append(float(v))
                        if len(buf[0]) >= CHUNK_POINTS:
                            yield MetricChunk(
                                key=key, steps=buf[0], timestamps=buf[1], values=buf[2]
                            )
                            buffers[key] = ([], [], [])
                    else:
                        yield extra_value(key, step, last_ts, v, folders)
            elif fold is not None and kind == "summary":
                fold.summary(rec.summary)
            elif fold is not None and kind == "run":
                fold.run(rec.run)
            elif kind == "stats":
                ts = ts_ms(rec.stats.timestamp) if rec.stats.HasField("timestamp") else last_ts
                for sitem in rec.stats.item:
                    v = json_value(sitem.value_json)
                    if not _is_number(v):
                        continue
                    key = f"system/{sitem.key}"
                    idx = stats_index.get(key, 0)
                    stats_index[key] = idx + 1
                    buf = buffers.get(key)
                    if buf is None:
                        buf = buffers[key] = ([], [], [])
                    buf[0].append(idx)
                    buf[1].append(ts)
                    buf[2].append(float(v))
                    if len(buf[0]) >= CHUNK_POINTS:
                        yield MetricChunk(key=key, steps=buf[0], timestamps=buf[1], values=buf[2])
                        buffers[key] = ([], [], [])
    for key, (steps, stamps, values) in buffers.items():
        if steps:
            yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)
    if fold is not None:
        run.results, run.results_pending = fold.result(), False
    yield from summary_only_points(run.results, seen, last_step, last_ts)


def extra_value(key: str, step: int, ts: int, value: Any, folders: list[Path]) -> ExtraValue:
    """A non-numeric history value; media values point at their file under ``files/``."""
    raw = json.dumps(value, allow_nan=True, separators=(",", ":"))
    file: FileRef | None = None
    if isinstance(value, dict):
        kind = str(value.get("_type", "object"))
        media = value.get("path")
        if isinstance(media, str) and media:
            # A media path that is absolute or climbs out (``..``) is kept as named: the
            # engine refuses ``files/<path>`` by name and nothing outside is ever opened.
            locator: dict[str, Any] = {}
            if path_problem(media) is None:
                locator["abs_path"] = str(
                    next(
                        (f / "files" / media for f in folders if (f / "files" / media).is_file()),
                        folders[0] / "files" / media,
                    )
                )
            size = value.get("size")
            sha = value.get("sha256")
            file = FileRef(
                path=f"files/{media}",
                size=size if isinstance(size, int) else None,
                sha256=sha if isinstance(sha, str) else None,
                locator=locator,
            )
    elif isinstance(value, str):
        kind = "string"
    else:
        kind = "object"
    return ExtraValue(key=key, step=step, timestamp=ts, value_json=raw, kind=kind, file=file)
