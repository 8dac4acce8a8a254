"""The W&B API reader's column-wise parquet path against the cell-by-cell reading it
replaced (kept here as the reference): the same items, in the same order, and the same
reader state after, on an export holding every kind of cell the backend writes (nulls,
NaN/±inf, integers past 2**53, booleans, float32, JSON objects, media, strings, steps and
timestamps missing), across record-batch and chunk boundaries, plain and bridge-written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridge.adapters.wandb.api_history import RunHistory
from bridge.adapters.wandb.bridged import source_metric_key
from bridge.adapters.wandb.history import flatten, is_number
from bridge.schema import HistoryItem

ROWS = 23_456  # three record batches of the reader's 10,000 rows, chunks cut mid-batch


def reference(h: RunHistory, files: list[Path]) -> Iterator[HistoryItem]:
    """The row-wise reading of an export as it was before the column-wise path."""
    for fpath in files:
        for batch in pq.ParquetFile(fpath).iter_batches(batch_size=10_000):
            cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
            steps = cols["_step"].to_pylist() if "_step" in cols else []
            stamps = cols["_timestamp"].to_pylist() if "_timestamp" in cols else []
            ts_ms: list[int] = []
            for i in range(batch.num_rows):
                t = stamps[i] if stamps else None
                if is_number(t) and math.isfinite(t):
                    h.last_ts = h._ms(t)
                ts_ms.append(h.last_ts)
            step_list = [int(s) if s is not None else h.last_step for s in steps]
            if step_list:
                h.max_exported = max(h.max_exported or 0, max(step_list))
            if h.step_key is not None and h.step_key in cols:
                source = cols.pop(h.step_key).to_pylist()
                step_list = [
                    int(v) if is_number(v) and math.isfinite(v) else step_list[i]
                    for i, v in enumerate(source)
                ]
            if step_list:
                h.last_step = max(h.last_step, max(step_list))
            for col_name, col in cols.items():
                if col_name in ("_step", "_timestamp", "_runtime"):
                    continue
                name = source_metric_key(col_name, h.step_key) if h.step_key else col_name
                numeric = (
                    pa.types.is_floating(col.type)
                    or pa.types.is_integer(col.type)
                    or pa.types.is_boolean(col.type)
                )
                for i, v in enumerate(col.to_pylist()):
                    if v is None:
                        continue
                    if numeric:
                        h.seen.add(name)
                        yield from h._point(name, step_list[i], ts_ms[i], float(v))
                        continue
                    if isinstance(v, str) and v[:1] in ("{", "["):
                        try:
                            v = json.loads(v)
                        except ValueError:
                            pass
                    if isinstance(v, dict) and "_type" not in v:
                        flat: list[tuple[str, Any]] = []
                        flatten(name, v, flat)
                        for key, fv in flat:
                            yield from h._value(key, step_list[i], ts_ms[i], fv)
                    else:
                        yield from h._value(name, step_list[i], ts_ms[i], v)


def history(step_key: str | None) -> RunHistory:
    h = RunHistory.__new__(RunHistory)
    h.buffers, h.seen, h.path = {}, set(), "acme/demo/alpha"
    h.last_step, h.last_ts, h.max_exported, h.step_key = 3, 1_000, None, step_key
    return h


def cell(i: int, every: int, value: Any) -> Any:
    return None if i % every == 0 else value


def export(path: Path, step_key: str | None) -> Path:
    n = range(ROWS)
    specials = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]
    cols: dict[str, pa.Array] = {
        "_step": pa.array([cell(i, 977, i * 2) for i in n], pa.int64()),
        "_timestamp": pa.array(
            [cell(i, 13, math.nan if i % 17 == 0 else 1.7e9 + i * 0.0015) for i in n],
            pa.float64(),
        ),
        "_runtime": pa.array([i * 0.5 for i in n], pa.float64()),
        "loss": pa.array([cell(i, 7, specials[i % 6] if i % 5 == 0 else i / 3) for i in n]),
        "big": pa.array([cell(i, 11, 2**53 + i) for i in n], pa.int64()),
        "flag": pa.array([cell(i, 3, i % 2 == 0) for i in n], pa.bool_()),
        "f32": pa.array([i * 0.1 for i in n], pa.float32()),
        "empty": pa.array([None] * ROWS, pa.float64()),
        "sparse": pa.array([None if i != 12_345 else 42.0 for i in n], pa.float64()),
        "text": pa.array(
            [
                cell(i, 2, json.dumps({"a": {"b": i}}) if i % 3 else f"s{i}")
                if i % 1000
                else json.dumps({"_type": "image-file", "path": f"media/{i}.png", "size": 3})
                for i in n
            ],
            pa.string(),
        ),
    }
    if step_key is not None:
        cols[step_key] = pa.array([cell(i, 19, math.nan if i % 23 == 0 else i) for i in n])
        cols[f"metric:{step_key}"] = pa.array([float(i) for i in n])
    path = path / "history.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=7_000)
    return path


@pytest.mark.parametrize("step_key", [None, "epoch"])
def test_column_wise_parquet_equals_row_wise(tmp_path: Path, step_key: str | None) -> None:
    files = [export(tmp_path, step_key)] * 2  # a second file continues the same state
    new, old = history(step_key), history(step_key)
    got = [repr(item) for item in new._parquet(files)]
    want = [repr(item) for item in reference(old, files)]
    assert len(want) > 100
    assert got == want
    for attr in ("seen", "last_step", "last_ts", "max_exported"):
        assert getattr(new, attr) == getattr(old, attr), attr
    assert repr(new.buffers) == repr(old.buffers)
    assert "empty" not in new.seen and "sparse" in new.seen
