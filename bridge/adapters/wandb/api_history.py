"""One W&B run's history from the server, in full (never sampled): the parquet export
streamed in batches, the live tail through ``scan_history``, then system metrics; the
same item stream the offline reader yields."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from itertools import compress
from pathlib import Path
from typing import Any

from bridge.adapters.wandb.api_base import ApiAccess
from bridge.adapters.wandb.bridged import LOCATOR_KEY as BRIDGE_LAYOUT
from bridge.adapters.wandb.bridged import source_metric_key, split_row
from bridge.adapters.wandb.history import flatten as _flatten
from bridge.adapters.wandb.history import is_number as _is_number
from bridge.adapters.wandb.history import summary_only_points
from bridge.errors import RunError
from bridge.schema import (
    ExtraValue,
    FileRef,
    HistoryItem,
    MetricChunk,
    Run,
)

CHUNK_POINTS = 1000
SYSTEM_SAMPLES = 1_000_000


class RunHistory:
    """One run's history, as the same item stream the offline reader yields."""

    def __init__(self, reader: ApiAccess, run: Run, path: str) -> None:
        self.reader, self.run, self.path = reader, run, path
        self.buffers: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self.seen: set[str] = set()
        self.last_step = 0
        self.last_ts = run.start_time_ms or 0
        self.max_exported: int | None = None
        layout = run.header.locator.get(BRIDGE_LAYOUT) if reader.restore_bridge else None
        #: Bridge-written run: the history column holding each row's source step.
        self.step_key: str | None = layout["step_key"] if layout else None

    def _ms(self, seconds: float) -> int:
        return round(seconds * 1000) if self.step_key else int(seconds * 1000)

    def _point(self, key: str, step: int, ts: int, value: float) -> Iterator[MetricChunk]:
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = ([], [], [])
        buf[0].append(step)
        buf[1].append(ts)
        buf[2].append(value)
        if len(buf[0]) >= CHUNK_POINTS:
            yield MetricChunk(key=key, steps=buf[0], timestamps=buf[1], values=buf[2])
            self.buffers[key] = ([], [], [])

    def _value(self, key: str, step: int, ts: int, v: Any) -> Iterator[HistoryItem]:
        if v is None:
            return
        if _is_number(v):
            self.seen.add(key)
            yield from self._point(key, step, ts, float(v))
        else:
            yield self._extra(key, step, ts, v)

    def _extra(self, key: str, step: int, ts: int, value: Any) -> ExtraValue:
        raw = json.dumps(value, allow_nan=True, separators=(",", ":"))
        file: FileRef | None = None
        if isinstance(value, dict):
            kind = str(value.get("_type", "object"))
            media = value.get("path")
            if isinstance(media, str) and media:
                # Kept as the server named it: the engine refuses an absolute or ``..``
                # path by name (``files/<path>``), so it is never fetched or written.
                size, sha = value.get("size"), value.get("sha256")
                file = FileRef(
                    path=f"files/{media}",
                    size=size if isinstance(size, int) else None,
                    sha256=sha if isinstance(sha, str) else None,
                    locator={"run_path": self.path, "name": media},
                )
        elif isinstance(value, str):
            kind = "string"
        else:
            kind = "object"
        return ExtraValue(key=key, step=step, timestamp=ts, value_json=raw, kind=kind, file=file)

    def _row(self, row: dict[str, Any]) -> Iterator[HistoryItem]:
        step = row.get("_step")
        step = int(step) if _is_number(step) else self.last_step
        ts = row.get("_timestamp")
        if _is_number(ts) and math.isfinite(ts):
            self.last_ts = self._ms(ts)
        flat: list[tuple[str, Any]] = []
        for k, v in row.items():
            if k not in ("_step", "_timestamp", "_runtime"):
                _flatten(k, v, flat)
        if self.step_key is not None:
            source_step, flat = split_row(flat, self.step_key)
            if source_step is not None:
                step = source_step
        self.last_step = max(self.last_step, step)
        for key, v in flat:
            yield from self._value(key, step, self.last_ts, v)

    def _points(
        self, key: str, steps: list[int], stamps: list[int], values: list[float]
    ) -> Iterator[MetricChunk]:
        """Many points of one key at once: the same chunks ``_point`` would cut, one by one."""
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = ([], [], [])
        i, n = 0, len(values)
        while i < n:
            j = i + CHUNK_POINTS - len(buf[0])
            buf[0].extend(steps[i:j])
            buf[1].extend(stamps[i:j])
            buf[2].extend(values[i:j])
            i = j
            if len(buf[0]) >= CHUNK_POINTS:
                yield MetricChunk(key=key, steps=buf[0], timestamps=buf[1], values=buf[2])
                buf = self.buffers[key] = ([], [], [])

    def _parquet(self, files: list[Path]) -> Iterator[HistoryItem]:
        import pyarrow.parquet as pq

        for fpath in files:
            pf = pq.ParquetFile(fpath)
            for batch in pf.iter_batches(batch_size=10_000):
                yield from self._batch(batch)

    def _batch(self, batch: Any) -> Iterator[HistoryItem]:
        """One record batch, column by column: a numeric column's values leave pyarrow as
        one list (nulls dropped), never as one Python object per cell through ``_point``
        (profiled: per-cell ``to_pylist`` and generators were most of the reader's time)."""
        cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
        steps = cols["_step"].to_pylist() if "_step" in cols else []
        stamps = cols["_timestamp"].to_pylist() if "_timestamp" in cols else []
        n = batch.num_rows
        ts_ms: list[int] = []
        for i in range(n):
            t = stamps[i] if stamps else None
            if _is_number(t) and math.isfinite(t):
                self.last_ts = self._ms(t)
            ts_ms.append(self.last_ts)
        step_list = [int(s) if s is not None else self.last_step for s in steps]
        if step_list:  # _step, for the live tail: scan_history continues after it
            self.max_exported = max(self.max_exported or 0, max(step_list))
        if self.step_key is not None and self.step_key in cols:
            source = cols.pop(self.step_key).to_pylist()
            step_list = [
                int(v) if _is_number(v) and math.isfinite(v) else step_list[i]
                for i, v in enumerate(source)
            ]
        if step_list:
            self.last_step = max(self.last_step, max(step_list))
        for col_name, col in cols.items():
            if col_name in ("_step", "_timestamp", "_runtime"):
                continue
            name = (
                source_metric_key(col_name, self.step_key)
                if self.step_key is not None
                else col_name
            )
            values = _float_list(col) if len(step_list) == n else None
            if values is not None:
                if col.null_count:
                    mask = col.is_valid().to_pylist()
                    if not any(mask):
                        continue
                    yield from self._points_of(
                        name,
                        list(compress(step_list, mask)),
                        list(compress(ts_ms, mask)),
                        values,
                    )
                elif n:
                    yield from self._points_of(name, step_list, ts_ms, values)
                continue
            yield from self._cells(name, col.to_pylist(), step_list, ts_ms)

    def _points_of(
        self, name: str, steps: list[int], stamps: list[int], values: list[float]
    ) -> Iterator[MetricChunk]:
        self.seen.add(name)
        yield from self._points(name, steps, stamps, values)

    def _cells(
        self, name: str, values: list[Any], step_list: list[int], ts_ms: list[int]
    ) -> Iterator[HistoryItem]:
        """A column cell by cell: strings (JSON objects, media), or a numeric column of a
        batch without ``_step`` (which fails on the first value, as it always has)."""
        for i, v in enumerate(values):
            if v is None:
                continue
            if _is_number(v):
                self.seen.add(name)
                yield from self._point(name, step_list[i], ts_ms[i], float(v))
                continue
            if isinstance(v, str) and v[:1] in ("{", "["):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            if isinstance(v, dict) and "_type" not in v:
                flat: list[tuple[str, Any]] = []
                _flatten(name, v, flat)
                for key, fv in flat:
                    yield from self._value(key, step_list[i], ts_ms[i], fv)
            else:
                yield from self._value(name, step_list[i], ts_ms[i], v)

    def items(self) -> Iterator[HistoryItem]:
        rd = self.reader
        api_run = rd._api_run(self.path)
        export_dir = Path(tempfile.mkdtemp(dir=rd._cache(), prefix="history-"))
        try:
            res = rd._retry(
                "history export",
                lambda: api_run.download_history_exports(
                    export_dir, require_complete_history=False
                ),
            )
            if res.errors:
                raise RunError(f"history export download failed: {res.errors}")
            paths = sorted(Path(p) for p in res.paths)
            yield from self._parquet(paths)
            if not paths or res.contains_live_data:
                start = 0 if self.max_exported is None else self.max_exported + 1
                yield from self._scan(api_run, start)
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)
        yield from self._system(api_run)
        for key, (steps, stamps, values) in self.buffers.items():
            if steps:
                yield MetricChunk(key=key, steps=steps, timestamps=stamps, values=values)
        self.buffers = {}
        yield from summary_only_points(self.run.results, self.seen, self.last_step, self.last_ts)

    def _scan(self, api_run: Any, min_step: int) -> Iterator[HistoryItem]:
        """The rows not in the export, page by page; a failed page is retried alone."""
        scan = self.reader._retry(
            "scan_history",
            lambda: api_run.scan_history(min_step=min_step, page_size=1000, use_cache=False),
        )
        iter(scan)  # resets the scan to min_step
        while True:
            try:
                row = self.reader._retry("history page", lambda: next_row(scan))
            except StopIteration:
                return
            yield from self._row(row)

    def _system(self, api_run: Any) -> Iterator[HistoryItem]:
        rows = self.reader._retry(
            "system metrics",
            lambda: api_run.history(stream="system", pandas=False, samples=SYSTEM_SAMPLES),
        )
        index: dict[str, int] = {}
        for row in rows or []:
            ts = row.get("_timestamp")
            ts_ms = int(ts * 1000) if _is_number(ts) and math.isfinite(ts) else self.last_ts
            for k, v in row.items():
                if not k.startswith("system.") or not _is_number(v):
                    continue
                key = "system/" + k[len("system.") :]
                idx = index.get(key, 0)
                index[key] = idx + 1
                yield from self._point(key, idx, ts_ms, float(v))


def next_row(scan: Any) -> dict[str, Any]:
    """Next row of a HistoryScan; on a failed page the scan's position is unchanged, so
    calling again re-fetches that same page."""
    while True:
        if scan.scan_offset < len(scan.rows):
            row = scan.rows[scan.scan_offset]
            scan.scan_offset += 1
            return row  # type: ignore[no-any-return]
        if scan.page_offset >= scan._stop_step:
            raise StopIteration
        scan._load_next()


def _float_list(col: Any) -> list[float] | None:
    """A numeric (float, integer, bool) column's non-null values as Python floats, equal to
    ``float(v)`` of each cell (pyarrow casts integers with C's round-to-nearest, as
    ``float(int)`` does); None for any other type, read cell by cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return None
    if col.null_count:
        col = pc.drop_null(col)
    if not pa.types.is_float64(t):
        col = pc.cast(col, pa.float64(), safe=False)
    return col.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
